"""Start, find and stop the single-node KRaft Kafka broker used for dev, CI and tests.

:func:`up` writes a ``server.properties`` for KRaft combined mode (one JVM is
both controller and broker, node id 1) into a data directory, formats the
storage once, launches ``java -cp '<libs>/*' kafka.Kafka server.properties``
detached in its own session, records it in a state file and waits until the
broker answers a real Kafka Metadata request (through aiokafka, the client the
app uses).  :func:`down` stops it (SIGTERM, then SIGKILL after a grace period)
and :func:`status` reports it.  Everything binds to 127.0.0.1 only.

The state file lives in the *run dir*: ``$TWIN_BROKER_HOME`` or
``~/.cache/twin-stream/broker-run`` (every function also takes ``run_dir=``,
which is how tests get a broker that is independent of a developer's one).

Ports: the data dir keeps the last ports (``last-run.json``), and ``up`` takes
them again when they are free, so a broker restarted after a crash (``kill -9``)
answers on the address its clients already have and they reconnect by themselves.

Security: ``up(security=BrokerSecurity(...))`` adds SSL, SASL_PLAINTEXT and
SASL_SSL listeners (SCRAM-SHA-512 and PLAIN) on 127.0.0.1 next to PLAINTEXT,
which stays the bootstrap address and the inter-broker listener
(:attr:`BrokerInfo.listeners` maps each protocol to its address).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin_stream.config.logs import MuteThread
from twin_stream.devtools.broker.fetch import (
    DEFAULT_VERSION,
    BrokerError,
    cache_root,
    fetch,
    find_java,
    logging_backend,
)

__all__ = ["BrokerInfo", "BrokerSecurity", "default_run_dir", "down", "ping", "status", "up"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
NODE_ID = 1
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
PROPS_FILE = "server.properties"
KRAFT_LOG_DIR = "kraft-logs"
LAST_RUN_FILE = "last-run.json"
"""In the data dir: the ports (and security) of the last start, reused by the next ``up``."""
KEYSTORE_FILE = "tls-keystore.pem"
SECURE_PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")
SCRAM_MECHANISM = "SCRAM-SHA-512"
_SAFE_CREDENTIAL = re.compile(r"[A-Za-z0-9._@+~-]{1,128}")
HEAP = "-Xmx512m"
JVM_OPTS_ENV = "TWIN_BROKER_JVM_OPTS"
"""Extra JVM options (shell-split) appended to the broker's command line."""
STOP_GRACE_S = 30.0
PORT_SETTLE_S = 5.0
"""How long ``up`` waits for the busy ports of the last start before taking new ones."""
_LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class BrokerSecurity:
    """Extra listeners of a local broker, all on 127.0.0.1: SSL, SASL_PLAINTEXT, SASL_SSL.

    The SASL listeners accept SCRAM-SHA-512 (the users are created when the storage is
    formatted, i.e. on the first start of a data dir) and PLAIN (a JAAS config in
    server.properties).  No client certificates are asked for.  Names and passwords are
    limited to ``[A-Za-z0-9._@+~-]`` so they need no quoting anywhere.
    """

    cert: Path
    """Server certificate chain, PEM (for 127.0.0.1 / localhost)."""
    key: Path
    """Its private key, unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
    ca: Path
    """CA certificate(s), PEM: the broker's truststore."""
    users: Mapping[str, str] = field(default_factory=dict)
    """name -> password, for both SCRAM-SHA-512 and PLAIN."""
    protocols: tuple[str, ...] = SECURE_PROTOCOLS

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (paths as strings)."""
        return {
            "cert": str(self.cert),
            "key": str(self.key),
            "ca": str(self.ca),
            "users": dict(self.users),
            "protocols": list(self.protocols),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BrokerSecurity:
        """Inverse of :meth:`to_json`."""
        return cls(
            cert=Path(data["cert"]),
            key=Path(data["key"]),
            ca=Path(data["ca"]),
            users={str(k): str(v) for k, v in dict(data.get("users") or {}).items()},
            protocols=tuple(str(p) for p in data.get("protocols") or SECURE_PROTOCOLS),
        )

    def check(self) -> None:
        """Raise :class:`BrokerError` for unknown protocols, unsafe names, missing files."""
        bad = [p for p in self.protocols if p not in SECURE_PROTOCOLS]
        if bad or not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise BrokerError(
                f"security protocols {list(self.protocols)}: expected some of {SECURE_PROTOCOLS}"
            )
        for name, password in self.users.items():
            if not _SAFE_CREDENTIAL.fullmatch(name) or not _SAFE_CREDENTIAL.fullmatch(password):
                raise BrokerError(
                    f"broker user {name!r}: names and passwords may only use A-Z a-z 0-9 . _ @"
                    " + ~ - (1-128 characters)"
                )
        for what, path in (("cert", self.cert), ("key", self.key), ("ca", self.ca)):
            if not Path(path).is_file():
                raise BrokerError(f"broker TLS {what} file {path} not found")
        key_text = Path(self.key).read_text("utf-8", "replace")
        if "-----BEGIN PRIVATE KEY-----" not in key_text:
            raise BrokerError(
                f"broker TLS key {self.key}: Kafka's PEM keystore needs an unencrypted PKCS#8"
                " key (-----BEGIN PRIVATE KEY-----); convert it with"
                " `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY8`"
            )


@dataclass(frozen=True)
class BrokerInfo:
    """A running local broker, as recorded in the state file."""

    bootstrap: str
    """``"127.0.0.1:PORT"`` -- pass to ``bootstrap_servers`` / faust ``broker=kafka://...``."""
    pid: int
    port: int
    data_dir: Path
    log_path: Path
    controller_port: int = 0
    version: str = DEFAULT_VERSION
    listeners: dict[str, str] = field(default_factory=dict, hash=False)
    """Extra listeners, protocol -> ``"127.0.0.1:PORT"`` (empty for a PLAINTEXT-only broker)."""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (paths as strings)."""
        out = dataclasses.asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["log_path"] = str(self.log_path)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BrokerInfo:
        """Inverse of :meth:`to_json`."""
        return cls(
            bootstrap=str(data["bootstrap"]),
            pid=int(data["pid"]),
            port=int(data["port"]),
            data_dir=Path(data["data_dir"]),
            log_path=Path(data["log_path"]),
            controller_port=int(data.get("controller_port", 0)),
            version=str(data.get("version", DEFAULT_VERSION)),
            listeners={str(k): str(v) for k, v in dict(data.get("listeners") or {}).items()},
        )


# --------------------------------------------------------------------------- public API


def default_run_dir() -> Path:
    """Return ``$TWIN_BROKER_HOME`` or ``~/.cache/twin-stream/broker-run``."""
    env = os.environ.get("TWIN_BROKER_HOME")
    return Path(env).expanduser() if env else cache_root() / "broker-run"


def up(
    port: int | None = None,
    data_dir: Path | None = None,
    version: str = DEFAULT_VERSION,
    timeout_s: float = 90,
    *,
    run_dir: Path | None = None,
    security: BrokerSecurity | None = None,
) -> BrokerInfo:
    """Start the local broker (or return the one already running) once it answers.

    ``port`` defaults to the port of the data dir's last start when it is free
    (so clients keep their address across a crash and restart), else to a free
    port on 127.0.0.1; the controller port likewise.  ``data_dir`` defaults to
    the data dir of a broker that died without ``down`` (stale state file), else
    ``<run dir>/data`` (reused across runs: topics survive ``down``/``up``).
    ``security`` adds SSL/SASL listeners (:class:`BrokerSecurity`); without it
    a data dir last started with security gets the same listeners again, and
    one that never had any stays PLAINTEXT only.
    If the state file names a live broker, it is returned after it answers --
    unless it conflicts with an explicit ``port``/``data_dir``/``version`` or
    lacks a listener of ``security``, which raises :class:`BrokerError` (it is
    never stopped by ``up``).  A broker that this call started and that does not
    answer within ``timeout_s`` (or exits) is killed, and :class:`BrokerError`
    carries its log tail.
    """
    if security is not None:
        security.check()
    rdir = _resolve_run_dir(run_dir)
    with _locked(rdir):
        existing = _read_state(rdir)
        if existing is not None:
            if _is_running(existing):
                _check_compatible(existing, port, data_dir, version, security)
                try:
                    _wait_ready(existing, timeout_s, rdir)
                except BrokerError as exc:
                    raise BrokerError(
                        f"{exc}\n(this broker was already running before `up`; it was left"
                        " alone: `python -m twin_stream.devtools.broker down` stops it)"
                    ) from exc
                return existing
            (rdir / STATE_FILE).unlink(missing_ok=True)  # stale: the process is gone
            if data_dir is None:
                data_dir = existing.data_dir  # restart the broker that died, with its data
        return _start(port, data_dir, version, timeout_s, rdir, security)


def down(*, run_dir: Path | None = None, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the broker named in the state file; return False if none was running.

    Sends SIGTERM (Kafka's clean shutdown), waits up to ``grace_s`` seconds,
    then SIGKILLs.  The state file is removed in every case; the data dir is kept.
    """
    rdir = _resolve_run_dir(run_dir)
    with _locked(rdir):
        info = _read_state(rdir)
        if info is None:
            return False
        was_running = _is_running(info)
        if was_running:
            _stop_pid(info.pid, grace_s)
        (rdir / STATE_FILE).unlink(missing_ok=True)
        return was_running


def status(*, run_dir: Path | None = None) -> BrokerInfo | None:
    """Return the running broker from the state file, or None (stale state is removed).

    This checks that the process is alive; use :func:`ping` to check that it answers.
    """
    rdir = _resolve_run_dir(run_dir)
    info = _read_state(rdir)
    if info is None:
        return None
    if _is_running(info):
        return info
    with _locked(rdir):
        again = _read_state(rdir)
        if again is not None and again.pid == info.pid:
            (rdir / STATE_FILE).unlink(missing_ok=True)
    return None


def ping(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Return True if a Kafka broker at ``bootstrap`` answers a Metadata request.

    Uses aiokafka's admin client on a private event loop in a worker thread,
    so it is safe to call from synchronous code and from inside a running loop.
    """
    return _probe_cluster_id(bootstrap, timeout_s) is not None


def _probe_cluster_id(bootstrap: str, timeout_s: float) -> str | None:
    """Cluster id reported by the broker at ``bootstrap``, or None if it does not answer."""
    host, _, port_s = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port_s)), timeout=min(1.0, timeout_s)):
            pass
    except (OSError, ValueError):
        return None
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="twin-broker-ping") as ex:
        fut = ex.submit(asyncio.run, _metadata_probe(bootstrap, timeout_s))
        try:
            return fut.result(timeout=timeout_s + 5)
        except Exception:  # pragma: no cover - the probe already swallows its errors
            return None


# --------------------------------------------------------------------------- start


def _start(
    port: int | None,
    data_dir: Path | None,
    version: str,
    timeout_s: float,
    rdir: Path,
    security: BrokerSecurity | None = None,
) -> BrokerInfo:
    libs = fetch(version)
    java = find_java()
    ddir = (data_dir or rdir / "data").expanduser().resolve()
    ddir.mkdir(parents=True, exist_ok=True)
    last = _read_last_run(ddir)
    # a broker of this data dir killed a moment ago may still be tearing down (its
    # threads exit one by one): wait until it has let go of its sockets
    _wait_released(last.get("pid"), last.get("pid_start"), ddir)
    if security is None and last.get("security"):
        security = BrokerSecurity.from_json(last["security"])
        security.check()
    taken: set[int] = set()
    settle = time.monotonic() + PORT_SETTLE_S
    if port is None:
        port = _reuse_or_free(last.get("port"), taken, settle)
    else:
        _wait_port_free(port, settle)
        taken.add(port)
    cport = _reuse_or_free(last.get("controller_port"), taken, settle)
    last_listeners = dict(last.get("listeners") or {})
    extra_ports = {
        proto: _reuse_or_free(last_listeners.get(proto), taken, settle)
        for proto in (security.protocols if security is not None else ())
    }
    keystore = _write_keystore(ddir, security) if security is not None else None
    _write_last_run(ddir, port, cport, extra_ports, security)
    props = ddir / PROPS_FILE
    props.touch(mode=0o600)
    props.chmod(0o600)  # it holds the PLAIN passwords of a secured broker
    props.write_text(
        _server_properties(
            port, cport, ddir / KRAFT_LOG_DIR, version, extra_ports, security, keystore
        ),
        "utf-8",
    )
    log_cfg = _write_log_config(ddir, version)
    extra = shlex.split(os.environ.get(JVM_OPTS_ENV, ""))
    jvm = [java, HEAP, *_jvm_flags(log_cfg), *extra, "-cp", f"{libs}/*"]
    _format_storage(jvm, props, ddir, security.users if security is not None else {})

    log_path = ddir / LOG_FILE
    if log_path.exists():
        log_path.replace(ddir / f"{LOG_FILE}.1")
    cmd = [*jvm, "kafka.Kafka", str(props)]
    pid = _spawn_detached(cmd, ddir, log_path)
    _write_last_run(ddir, port, cport, extra_ports, security, pid)
    info = BrokerInfo(
        bootstrap=f"{HOST}:{port}",
        pid=pid,
        port=port,
        data_dir=ddir,
        log_path=log_path,
        controller_port=cport,
        version=version,
        listeners={proto: f"{HOST}:{p}" for proto, p in extra_ports.items()},
    )
    _write_state(rdir, info)
    try:
        _wait_ready(info, timeout_s, rdir)
    except BaseException:
        with contextlib.suppress(Exception):
            _stop_pid(info.pid, 5.0)
        (rdir / STATE_FILE).unlink(missing_ok=True)
        raise
    return info


def _spawn_detached(cmd: list[str], cwd: Path, log_path: Path) -> int:
    """Start ``cmd`` fully detached and return its pid.

    A throw-away ``sh`` (in a new session) backgrounds the JVM and exits, so the
    broker is re-parented to init: it outlives this interpreter, never becomes
    our zombie, and no ``Popen`` object is left behind to warn at exit.
    stdin is /dev/null, stdout+stderr append to ``log_path``.
    """
    log_path.write_text(f"# twin_stream.devtools.broker: {shlex.join(cmd)}\n", "utf-8")
    script = f"{shlex.join(cmd)} </dev/null >>{shlex.quote(str(log_path))} 2>&1 & echo $!"
    try:
        out = subprocess.run(
            ["/bin/sh", "-c", script],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not launch the kafka broker: {exc}") from exc
    pid_text = out.stdout.strip().splitlines()[-1:] if out.stdout.strip() else []
    if out.returncode != 0 or not pid_text or not pid_text[0].isdigit():
        raise BrokerError(
            f"could not launch the kafka broker (sh exit {out.returncode}): "
            + (out.stderr.strip() or out.stdout.strip() or "no output")
        )
    return int(pid_text[0])


def _server_properties(
    port: int,
    cport: int,
    kraft_dir: Path,
    version: str,
    extra_ports: Mapping[str, int] | None = None,
    security: BrokerSecurity | None = None,
    keystore: Path | None = None,
) -> str:
    extra_ports = extra_ports or {}
    extra_listeners = "".join(f",{proto}://{HOST}:{p}" for proto, p in extra_ports.items())
    extra_map = "".join(f",{proto}:{proto}" for proto in extra_ports)
    lines = [
        "# Generated by twin_stream.devtools.broker on every `up`; edits are overwritten.",
        "# KRaft combined mode: this one JVM is both the controller quorum and the broker.",
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        f"controller.quorum.voters={NODE_ID}@{HOST}:{cport}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        # Bind to loopback only, advertise exactly what we bind.
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}{extra_listeners}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}{extra_listeners}",
        f"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{extra_map}",
        f"log.dirs={kraft_dir}",
        "",
        "# One node: every replication factor is 1 and every min ISR 1.  Kafka's defaults",
        "# (3 / 2) make the first transaction, consumer-group commit or acks=all produce",
        "# fail or hang, because the internal topics can never reach their size.",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "# Fewer partitions for the internal topics: they are created lazily by the first",
        "# consumer group / transactional producer, and 50 partitions each take seconds",
        "# on a small CI box (aiokafka retries meanwhile) for no benefit on one node.",
        "offsets.topic.num.partitions=5",
        "transaction.state.log.num.partitions=5",
        "",
        "# Tests and faust start/stop consumer groups constantly: no 3 s join delay.",
        "group.initial.rebalance.delay.ms=0",
        "",
        "# auto.create.topics.enable stays true (Kafka's default) on purpose: a test or tool",
        "# that produces to a topic nobody created yet then just works, instead of blocking",
        "# on metadata until request_timeout_ms (40 s in aiokafka) and failing obscurely.",
        "# Auto-created topics get num.partitions=4, the app's TopicSettings.partitions",
        "# default, so they match the 4-partition changelogs faust declares (a 1-partition",
        "# source topic would make faust raise PartitionsMismatch).  Still create source",
        "# topics BEFORE starting a faust worker: faust declares only its internal topics,",
        "# and a topic auto-created after the group assignment is not consumed until the",
        "# next metadata refresh (metadata_max_age_ms, 5 min).",
        "auto.create.topics.enable=true",
        "num.partitions=4",
        "delete.topic.enable=true",
        "",
        "# Small-machine sizing (2 cores, -Xmx512m).  The log cleaner (needed for",
        "# compacted changelog topics) would otherwise reserve 128 MiB of heap.",
        "num.network.threads=2",
        "num.io.threads=4",
        "background.threads=4",
        "log.cleaner.threads=1",
        "log.cleaner.dedupe.buffer.size=33554432",
        "log.retention.hours=168",
        "log.retention.check.interval.ms=300000",
    ]
    if int(version.split(".")[0]) >= 4:
        lines += [
            "",
            "# Kafka 4.x share groups (KIP-932): same single-node sizing.",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
        ]
    if security is not None and extra_ports:
        lines += _security_properties(security, extra_ports, keystore)
    return "\n".join(lines) + "\n"


def _security_properties(
    security: BrokerSecurity, extra_ports: Mapping[str, int], keystore: Path | None
) -> list[str]:
    """Per-listener TLS (PEM files) and SASL (SCRAM-SHA-512 + PLAIN) settings."""
    plain_users = " ".join(f'user_{n}="{pw}"' for n, pw in security.users.items())
    lines = [
        "",
        "# Extra listeners (BrokerSecurity); inter-broker traffic stays on PLAINTEXT.",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM},PLAIN",
        "ssl.client.auth=none",
    ]
    for proto in extra_ports:
        name = proto.lower()
        if proto in ("SSL", "SASL_SSL"):
            lines += [
                f"listener.name.{name}.ssl.keystore.type=PEM",
                f"listener.name.{name}.ssl.keystore.location={keystore}",
                f"listener.name.{name}.ssl.truststore.type=PEM",
                f"listener.name.{name}.ssl.truststore.location={security.ca}",
            ]
        if proto.startswith("SASL"):
            lines += [
                f"listener.name.{name}.sasl.enabled.mechanisms={SCRAM_MECHANISM},PLAIN",
                f"listener.name.{name}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"listener.name.{name}.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            ]
    return lines


def _write_keystore(ddir: Path, security: BrokerSecurity) -> Path:
    """Key + certificate chain in one PEM file (Kafka's file-based PEM keystore), mode 0600."""
    path = ddir / KEYSTORE_FILE
    text = Path(security.key).read_text("utf-8").strip() + "\n"
    text += Path(security.cert).read_text("utf-8").strip() + "\n"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text, "utf-8")
    return path


def _read_last_run(ddir: Path) -> dict[str, Any]:
    try:
        data = json.loads((ddir / LAST_RUN_FILE).read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", ddir / LAST_RUN_FILE)
        return {}
    return data if isinstance(data, dict) else {}


def _write_last_run(
    ddir: Path,
    port: int,
    cport: int,
    extra_ports: Mapping[str, int],
    security: BrokerSecurity | None,
    pid: int | None = None,
) -> None:
    data: dict[str, Any] = {
        "port": port,
        "controller_port": cport,
        "listeners": dict(extra_ports),
    }
    if pid is not None:
        data.update(pid=pid, pid_start=_start_time(pid))
    if security is not None:
        data["security"] = security.to_json()
    tmp = ddir / f"{LAST_RUN_FILE}.tmp"
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)  # the users' passwords, like server.properties
    tmp.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    tmp.replace(ddir / LAST_RUN_FILE)


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, from procfs), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _wait_released(pid: Any, pid_start: Any, ddir: Path, timeout_s: float = 15.0) -> None:
    """Wait while the process ``pid`` (started at ``pid_start``: not a reused pid) still
    holds open files; a JVM killed with SIGKILL keeps its listening sockets until its
    last thread is gone, a little after it stopped counting as running."""
    if not isinstance(pid, int) or not isinstance(pid_start, int):
        return
    deadline = time.monotonic() + timeout_s
    while _start_time(pid) == pid_start:
        try:
            if not any(True for _ in os.scandir(f"/proc/{pid}/fd")):
                return  # a zombie: everything released
        except OSError:
            return
        if _is_running(BrokerInfo("", pid, 0, ddir, ddir / LOG_FILE)):
            return  # alive and well (not ours to wait for; the caller checked the state)
        if time.monotonic() >= deadline:
            log.warning("kafka broker pid %d is still exiting after %.0fs", pid, timeout_s)
            return
        time.sleep(0.05)


def _wait_port_free(port: int, settle_until: float) -> None:
    """:func:`_check_port_free`, tried again until the monotonic time ``settle_until``."""
    while True:
        try:
            _check_port_free(port)
            return
        except BrokerError:
            if time.monotonic() >= settle_until:
                raise
            time.sleep(0.05)


def _reuse_or_free(previous: Any, taken: set[int], settle_until: float = 0.0) -> int:
    """``previous`` (a port of the last start) when it is free, else a free port; either
    way not one of ``taken``, which it is added to.  A busy ``previous`` is tried again
    until the monotonic time ``settle_until``: the sockets of a killed broker linger in
    the kernel for some 10-100 ms after its process is gone."""
    if isinstance(previous, int) and 0 < previous < 65536 and previous not in taken:
        try:
            _wait_port_free(previous, settle_until)
        except BrokerError as exc:
            log.warning("%s: the broker moves to another port", exc)
        else:
            taken.add(previous)
            return previous
    (port,) = _free_ports(1, avoid=taken)
    taken.add(port)
    return port


def _write_log_config(ddir: Path, version: str) -> Path:
    """Write a console-only log config (stdout is redirected to broker.log)."""
    if logging_backend(version) == "log4j2":
        path = ddir / "log4j2.properties"
        path.write_text(
            "status = warn\n"
            "appender.console.type = Console\n"
            "appender.console.name = STDOUT\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.stdout.ref = STDOUT\n"
            "logger.request.name = kafka.request.logger\n"
            "logger.request.level = warn\n",
            "utf-8",
        )
    else:
        path = ddir / "log4j.properties"
        path.write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\n",
            "utf-8",
        )
    return path


def _jvm_flags(log_cfg: Path) -> list[str]:
    return [
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log_cfg}",
        f"-Dlog4j2.configurationFile={log_cfg}",
    ]


def _format_storage(
    jvm: list[str], props: Path, ddir: Path, scram_users: Mapping[str, str] | None = None
) -> None:
    """Run ``StorageTool format`` once per data dir (skipped when meta.properties exists),
    creating ``scram_users`` (SCRAM-SHA-512) in the bootstrap metadata."""
    scram_users = scram_users or {}
    users_file = ddir / "scram-users.json"
    if (ddir / KRAFT_LOG_DIR / "meta.properties").is_file():
        try:
            formatted = set(json.loads(users_file.read_text("utf-8")))
        except (OSError, ValueError, TypeError):
            formatted = set()
        missing = sorted(set(scram_users) - formatted)
        if missing:
            raise BrokerError(
                f"the data dir {ddir} was formatted without the SCRAM user(s) {missing}"
                " (they are created only when a data dir is first formatted): use a new data dir"
            )
        return
    cmd = [*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)]
    for name, password in scram_users.items():
        cmd += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    try:
        proc = subprocess.run(
            cmd,
            cwd=ddir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"kafka StorageTool format timed out in {ddir}") from exc
    if proc.returncode != 0:
        output = _tail_text(proc.stdout)
        for password in scram_users.values():
            output = output.replace(password, "***")
        raise BrokerError(
            f"kafka StorageTool format failed (exit {proc.returncode}) for {props}:\n" + output
        )
    users_file.write_text(json.dumps(sorted(scram_users)) + "\n", "utf-8")


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url, no padding (22 chars).

    Like ``org.apache.kafka.common.Uuid.randomUuid`` we re-draw ids starting with
    ``-`` so they can never be mistaken for a command-line flag.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like the JVM's server sockets, so TIME_WAIT leftovers of our own
        # previous broker on this port do not count as "in use"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(f"port {HOST}:{port} is not available: {exc.strerror}") from exc


def _cluster_id_of(ddir: Path) -> str | None:
    """``cluster.id`` from the formatted storage's meta.properties (None if unreadable)."""
    try:
        text = (ddir / KRAFT_LOG_DIR / "meta.properties").read_text("utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip()
    return None


def _free_ports(n: int, avoid: set[int] | None = None) -> list[int]:
    """Pick ``n`` distinct free TCP ports on 127.0.0.1 (holding all until all are chosen)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
            p = int(s.getsockname()[1])
            if avoid is None or p not in avoid:
                ports.append(p)
    finally:
        for s in socks:
            s.close()
    return ports


# --------------------------------------------------------------------------- readiness


def _wait_ready(info: BrokerInfo, timeout_s: float, rdir: Path) -> None:
    """Poll until the broker answers; on timeout/death raise BrokerError (caller cleans up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not _is_running(info):
            raise BrokerError(
                f"kafka broker (pid {info.pid}) exited during startup; log {info.log_path}:\n"
                + _log_tail(info.log_path)
            )
        remaining = deadline - time.monotonic()
        found = _probe_cluster_id(info.bootstrap, timeout_s=max(1.0, min(5.0, remaining)))
        if found is not None:
            expected = _cluster_id_of(info.data_dir)
            if (expected is None or found == expected) and all(
                _accepts(addr) for addr in info.listeners.values()
            ):
                return
            if expected is not None and found != expected:
                raise BrokerError(
                    f"{info.bootstrap} is answered by another Kafka cluster ({found}), not the"
                    f" broker in {info.data_dir} ({expected}); pick another port"
                )
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"kafka broker (pid {info.pid}) did not answer on {info.bootstrap} within"
                f" {timeout_s:.0f}s (state {rdir / STATE_FILE}); log {info.log_path}:\n"
                + _log_tail(info.log_path)
            )
        time.sleep(0.25)


def _accepts(address: str) -> bool:
    host, _, port_s = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port_s)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


async def _metadata_probe(bootstrap: str, timeout_s: float) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    timeout_ms = max(500, int(timeout_s * 1000))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="twin-stream-broker-probe",
        request_timeout_ms=timeout_ms,
    )
    # aiokafka logs every failed bootstrap attempt at ERROR; during startup polling
    # those are expected, so mute them for the duration of this probe only.
    quiet = MuteThread()
    loggers = [
        lg
        for name, lg in logging.root.manager.loggerDict.items()
        if name.startswith("aiokafka") and isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster = await admin.describe_cluster()
        port = int(bootstrap.rpartition(":")[2])
        if not any(int(b.get("port", -1)) == port for b in cluster.get("brokers") or []):
            return None
        return str(cluster.get("cluster_id") or "")
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        for lg in loggers:
            lg.removeFilter(quiet)


# --------------------------------------------------------------------------- processes


def _is_running(info: BrokerInfo) -> bool:
    """True if ``info.pid`` is alive, not a zombie, and is *our* kafka.Kafka process."""
    pid = info.pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process reusing the pid
    proc_dir = Path(f"/proc/{pid}")
    if not proc_dir.is_dir():
        return True  # no procfs (e.g. macOS): trust the pid
    try:
        stat = (proc_dir / "stat").read_text()
        cmdline = (proc_dir / "cmdline").read_bytes()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False  # exited, waiting for init (or a non-reaping PID 1) to collect it
    props = str(info.data_dir / PROPS_FILE).encode()
    return b"kafka.Kafka" in cmdline and props in cmdline


def _pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (or is only a zombie).

    The broker is never our child (see :func:`_spawn_detached`), so there is
    nothing to ``waitpid`` for here.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return False  # no procfs (e.g. macOS): kill(0) succeeded, so it is alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # kill(0) succeeded but the procfs entry vanished: it just exited
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _stop_pid(pid: int, grace_s: float) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL (and wait a little more)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if _pid_gone(pid):
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            log.warning(
                "kafka broker pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, grace_s
            )
    if not _pid_gone(pid):
        raise BrokerError(f"could not stop kafka broker pid {pid}")


# --------------------------------------------------------------------------- state / misc


def _resolve_run_dir(run_dir: Path | None) -> Path:
    rdir = (run_dir or default_run_dir()).expanduser().resolve()
    rdir.mkdir(parents=True, exist_ok=True)
    return rdir


@contextlib.contextmanager
def _locked(rdir: Path) -> Iterator[None]:
    with open(rdir / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_state(rdir: Path) -> BrokerInfo | None:
    try:
        data = json.loads((rdir / STATE_FILE).read_text("utf-8"))
        return BrokerInfo.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable broker state file %s", rdir / STATE_FILE)
        return None


def _write_state(rdir: Path, info: BrokerInfo) -> None:
    tmp = rdir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n", "utf-8")
    tmp.replace(rdir / STATE_FILE)


def _check_compatible(
    info: BrokerInfo,
    port: int | None,
    data_dir: Path | None,
    version: str,
    security: BrokerSecurity | None = None,
) -> None:
    problems = []
    if security is not None:
        lacking = [p for p in security.protocols if p not in info.listeners]
        if lacking:
            problems.append(f"no {'/'.join(lacking)} listener (asked)")
    if port is not None and port != info.port:
        problems.append(f"port {info.port} (asked {port})")
    if data_dir is not None and data_dir.expanduser().resolve() != info.data_dir:
        problems.append(f"data dir {info.data_dir} (asked {data_dir})")
    if version != info.version:
        problems.append(f"version {info.version} (asked {version})")
    if problems:
        raise BrokerError(
            f"a broker is already running (pid {info.pid}) with "
            + ", ".join(problems)
            + "; run `python -m twin_stream.devtools.broker down` first"
        )


def _tail_text(text: str, n: int = _LOG_TAIL_LINES) -> str:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _log_tail(path: Path, n: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return _tail_text(text, n)
