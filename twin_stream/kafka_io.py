"""Kafka clients outside the Faust worker: connection options from settings, topic creation,
`publish` (a recorded file into the input topic, keyed by battery_id) and `record` (a topic to
JSON Lines). The worker itself lives in `agents/`."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from twin_stream.codec.files import RecordReader
from twin_stream.config.logs import MuteThread
from twin_stream.config.settings import KafkaSettings, Settings


class KafkaAccessError(Exception):
    """The broker cannot be used with the configured connection settings (unreachable, TLS
    handshake or SASL authentication failed). The message is one line, names the broker and
    the settings to check, and never contains the password."""


def secret(value: object) -> str | None:
    """The plain text of a setting that may be a pydantic `SecretStr` (or a plain str/None)."""
    if value is None:
        return None
    get = getattr(value, "get_secret_value", None)
    return str(get()) if callable(get) else str(value)


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """The client TLS context for SSL and SASL_SSL (None for the plaintext protocols): the
    system CAs, or `kafka.ssl_cafile` when set; the broker's host name is checked."""
    if k.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        return create_ssl_context(cafile=k.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise KafkaAccessError(
            f"kafka: cannot load the CA file kafka.ssl_cafile={k.ssl_cafile!r}: {reason}"
        ) from None


def client_options(k: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection keyword arguments for the configured security."""
    opts: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "security_protocol": k.security_protocol,
    }
    ctx = ssl_context(k)
    if ctx is not None:
        opts["ssl_context"] = ctx
    if k.security_protocol.startswith("SASL"):
        opts.update(
            sasl_mechanism=k.sasl_mechanism or "PLAIN",
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=secret(k.sasl_password),
        )
    return opts


_AUTH_ERRNOS = {33, 34, 58}  # UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTH_FAILED


async def check_access(k: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Connect (TLS, SASL) to the bootstrap servers until one accepts, or raise
    :class:`KafkaAccessError` at once on an authentication or TLS failure and after
    `timeout_s` when none can be reached. aiokafka itself only logs these causes and
    raises "Unable to bootstrap", and faust retries that without end."""
    opts = client_options(k)
    opts.pop("bootstrap_servers")
    # aiokafka warns on stderr for every PLAIN connection without TLS; the worker's own
    # clients say it again in its log, this probe keeps a failing start to one line
    quiet = MuteThread()
    conn_log = logging.getLogger("aiokafka.conn")
    conn_log.addFilter(quiet)
    try:
        await _probe_bootstrap(k, opts, timeout_s)
    finally:
        conn_log.removeFilter(quiet)


async def _probe_bootstrap(k: KafkaSettings, opts: dict[str, Any], timeout_s: float) -> None:
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    hosts = [h.strip() for h in k.bootstrap_servers.split(",") if h.strip()]
    mech = opts.get("sasl_mechanism")
    deadline = time.monotonic() + timeout_s
    last = "no bootstrap server configured"
    while True:
        for hostport in hosts:
            host, _, port_s = hostport.rpartition(":")
            host = host.strip("[]") or hostport
            where = f"{host}:{port_s}"
            left = max(1.0, min(10.0, deadline - time.monotonic()))
            try:
                async with asyncio.timeout(left + 1):
                    conn = await create_conn(
                        host, int(port_s), request_timeout_ms=int(left * 1000), **opts
                    )
            except ssl.SSLError as exc:
                raise KafkaAccessError(
                    f"kafka: TLS handshake with {where} failed ({exc.reason or exc}):"
                    " check kafka.security_protocol and kafka.ssl_cafile"
                ) from None
            except KafkaError as exc:
                if getattr(exc, "errno", None) in _AUTH_ERRNOS:
                    raise KafkaAccessError(
                        f"kafka: authentication failed for user {k.sasl_username!r} ({mech})"
                        f" at {where}: check kafka.sasl_username/sasl_password"
                        " (and kafka.sasl_mechanism)"
                    ) from None
                last = f"{where}: {type(exc).__name__}"
            except ValueError:
                raise KafkaAccessError(
                    f"kafka: bad bootstrap server {hostport!r} in kafka.bootstrap_servers"
                    " (expected host:port)"
                ) from None
            except (OSError, TimeoutError) as exc:
                last = f"{where}: {getattr(exc, 'strerror', None) or type(exc).__name__}"
            else:
                conn.close()
                return
        if time.monotonic() >= deadline:
            raise KafkaAccessError(
                f"kafka: cannot reach the broker at {k.bootstrap_servers} within"
                f" {timeout_s:g} s (last: {last}): check kafka.bootstrap_servers and"
                f" kafka.security_protocol={k.security_protocol}"
            )
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the input and output topics with the configured partitions if missing.

    Checks first that the broker can be reached and accepts the credentials
    (:func:`check_access`, raising :class:`KafkaAccessError`)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    await check_access(settings.kafka, timeout_s)
    t = settings.topics
    admin = AIOKafkaAdminClient(
        **client_options(settings.kafka), request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, t.partitions, t.replication_factor)
            for name in (t.input, t.alerts, t.estimates, t.deadletter)
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


def _object_of(payload: Any) -> Any:
    """The record of a payload (text parsed as JSON; None if it is not JSON)."""
    if isinstance(payload, bytes | str):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
    return payload


def _key_of(obj: Any) -> bytes | None:
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    bid = obj.get("battery_id") if isinstance(obj, dict) else None
    return bid.encode() if isinstance(bid, str) else None


def _ts_of(obj: Any) -> int | None:
    from twin_stream.codec import lean_row

    row = lean_row(obj) if isinstance(obj, dict) else None
    return row.ts if row is not None else None


@dataclass
class PublishStats:
    """What :func:`publish` got the broker to acknowledge. Updated as it goes, so after a
    failure (or Ctrl-C) it still says how far the file got and where to resume."""

    skipped: int = 0
    """records at the start of the file not sent (`skip`)"""
    sent: int = 0
    """records handed to the producer"""
    acked: int = 0
    """records the broker acknowledged (acks=all)"""
    unkeyed: int = 0
    """acknowledged records without a key (not JSON, or no battery_id)"""
    bytes: int = 0
    """acknowledged value bytes"""
    resume_at: int = 0
    """records from the start of the file that are all acknowledged (or skipped): the `skip`
    that resumes without a gap; acknowledgements past it (futures resolve out of order across
    partitions) are in `acked` and are sent again on resume"""
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """acknowledged records per second"""
        return self.acked / self.seconds if self.seconds > 0 else 0.0


async def publish(
    path: Path,
    settings: Settings,
    *,
    speed: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    topic: str | None = None,
    skip: int = 0,
    timeout_s: float = 30.0,
    stats: PublishStats | None = None,
) -> int:
    """Send every record of `path` to the input topic keyed by battery_id, in file order, and
    return how many were sent and acknowledged (acks=all, idempotent: order kept per partition).

    `skip` leaves out the first records of the file (a resume); `speed` None sends as fast as
    possible, X replays at X times real time (event time) from the first record sent.
    Records that are not valid JSON are sent too (unkeyed): the worker dead-letters them.
    `timeout_s` bounds connecting and each request. Pass `stats` to read the counts, also
    after an exception: `stats.resume_at` is where a new run continues (`skip`)."""
    from aiokafka import AIOKafkaProducer

    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    st = stats if stats is not None else PublishStats()
    st.skipped = st.resume_at = skip
    reader = RecordReader(path)
    t_start = time.monotonic()
    producer = AIOKafkaProducer(
        **client_options(settings.kafka),
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    name = topic or settings.topics.input
    inflight: list[tuple[asyncio.Future[Any], bool, int]] = []  # (ack, unkeyed, bytes)
    try:
        await producer.start()
        t0_wall = 0.0
        t0_event: int | None = None
        to_skip = skip
        for block in reader.blocks(5000):
            if to_skip:
                if to_skip >= len(block):
                    to_skip -= len(block)
                    if progress is not None:
                        progress(reader.done, reader.total)
                    continue
                block = block[to_skip:]
                to_skip = 0
            for payload, _ in block:
                obj = _object_of(payload)  # parsed once, for the key and the pacing
                if speed is not None:
                    ts = _ts_of(obj)
                    if ts is not None:
                        if t0_event is None:
                            t0_event, t0_wall = ts, time.monotonic()
                        wait = (ts - t0_event) / 1000 / speed - (time.monotonic() - t0_wall)
                        if wait > 0:
                            await asyncio.sleep(wait)
                value = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                key = _key_of(obj)
                ack = await producer.send(name, value=value, key=key)
                inflight.append((ack, key is None, len(value)))
                st.sent += 1
            await _acknowledged(inflight)
            _settle(inflight, st)
            if progress is not None:
                progress(reader.done, reader.total)
    finally:
        try:
            await producer.stop()  # flushes: what is still in flight resolves or fails
        finally:
            _settle(inflight, st)
            st.seconds = time.monotonic() - t_start
    return st.acked


async def _acknowledged(inflight: list[tuple[asyncio.Future[Any], bool, int]]) -> None:
    """Wait until every send in flight is acknowledged; raise the first failure. Unlike
    gather, a cancellation (Ctrl-C) leaves the sends alone, so the flush in `stop` can
    still complete them and they count."""
    acks = [a for a, _, _ in inflight]
    if not acks:
        return
    await asyncio.wait(acks, return_when=asyncio.FIRST_EXCEPTION)
    for a in acks:
        exc = a.exception() if a.done() and not a.cancelled() else None
        if exc is not None:
            raise exc


def _settle(inflight: list[tuple[asyncio.Future[Any], bool, int]], st: PublishStats) -> None:
    """Count the acknowledged sends of the block in flight into `st` and clear it; the resume
    point moves over its acknowledged prefix (all of it when the block went through)."""
    prefix = True
    for ack, unkeyed, size in inflight:
        ok = ack.done() and not ack.cancelled() and ack.exception() is None
        if ok:
            st.acked += 1
            st.unkeyed += unkeyed
            st.bytes += size
        prefix = prefix and ok
        st.resume_at += prefix
    inflight.clear()


def count_records(path: Path) -> int | None:
    """How many records `path` holds (as :func:`publish` counts them), None if unreadable."""
    try:
        reader = RecordReader(path)
        if reader.format == "parquet":
            return int(reader.total)
        return sum(len(block) for block in reader.blocks(50_000))
    except Exception:  # only for a message: a file that cannot be read has no count
        return None


async def record(
    topic: str,
    out: Path,
    settings: Settings,
    *,
    idle_s: float = 5.0,
    max_records: int | None = None,
    on_record: Callable[[int], None] | None = None,
) -> int:
    """Copy a topic from the beginning to JSON Lines (read_committed), until it has been idle
    for `idle_s` seconds or `max_records` were written. Values that are JSON objects are
    written as they are; others as {"raw": text}."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    n = 0
    try:
        with out.open("wb") as f:
            while max_records is None or n < max_records:
                batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=5000)
                if not batches:
                    break
                for msgs in batches.values():
                    for m in msgs:
                        v = m.value or b""
                        try:
                            orjson.loads(v)
                            f.write(v.rstrip(b"\n") + b"\n")
                        except orjson.JSONDecodeError:
                            f.write(orjson.dumps({"raw": v.decode("utf-8", "replace")}) + b"\n")
                        n += 1
                if on_record is not None:
                    on_record(n)
    finally:
        await consumer.stop()
    return n
