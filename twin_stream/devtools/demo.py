"""`twin-stream demo`: the live service end to end, in one command.

1. Kafka: the given bootstrap, or the project's local broker
   (`twin_stream.devtools.broker`), started if none is running and then stopped again at the
   end (a broker that was already running is reused and left alone).
2. Topics and the worker's consumer group are unique to the run (`twin-demo-<time>-<hex>`),
   so the outputs of earlier runs never mix in; they are deleted at the end unless kept.
3. A worker subprocess (`python -m twin_stream.cli worker`) with the user's settings plus
   `TWIN_` environment overrides (bootstrap, topics, app id, stale time); its log goes to
   `worker.log` in the run's temp folder, which is removed after a clean run and kept (and
   its tail printed) when the worker failed.
4. A simulated fleet (`twin_stream.devtools.simulate`) with injected faults (an over-voltage cell, a
   weak cell, a dropout plus a battery that falls silent at the end, bad records), its span
   ending at the current time, published keyed by battery_id at `speed` times real time (by a
   paced producer here: the records are in memory, and bad records may not be JSON at all).
5. The output topics are read (read_committed: only what the worker's transactions
   committed) and shown with rich: alerts as coloured lines, estimates as a live per-battery
   table on a terminal or as lines otherwise; at the end a summary from the worker's metrics
   endpoint.
6. Unless `dashboard=False` (`--no-dashboard`), the live web dashboard
   (`twin_stream.dashboard`) runs in the demo's own event loop on a free port of 127.0.0.1,
   its URL printed at the start; it stops with the demo.

It stops on Ctrl-C (SIGINT) or SIGTERM, after `duration_s` seconds of streaming, or (without
a duration) once the whole simulated fleet was sent and the outputs have drained. Every step
has a time limit, the worker is terminated (SIGTERM, then SIGKILL) and, on Linux, also dies
with the demo process if that is killed, so no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from twin_stream.config.settings import REVEAL_SECRETS, Settings, SettingsError

if TYPE_CHECKING:
    from twin_stream.dashboard import Dashboard

FAULTS = {"over_voltage": 1, "weak_cell": 1, "dropout": 1, "bad_records": 3}
"""Injected into the simulated fleet (see `twin_stream.devtools.simulate.FaultSpec`)."""
DEFAULT_SIM_S = 3600.0
"""Simulated seconds of telemetry when no duration is given."""
MAX_SIM_S = 86_400.0
WORKER_READY_S = 90.0
"""Longest wait for the worker to join its group and recover its tables."""
WORKER_STOP_S = 20.0
"""Grace after SIGTERM before the worker is killed."""
DRAIN_IDLE_S = 1.0
DRAIN_MAX_S = 8.0
READY_MARK = "[^Worker]: Ready"
"""Faust's log line once the worker has its partitions and its tables are recovered."""

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
TABLE_COLUMNS = (  # estimate name -> column heading in the live table
    ("equivalent_cycles", "cycles"),
    ("soc_ocv", "SOC (OCV) %"),
    ("available_energy", "energy kWh"),
    ("voltage_spread", "spread V"),
    ("min_cell_voltage", "min cell V"),
    ("max_cell_voltage", "max cell V"),
)


class DemoError(RuntimeError):
    """A step of the demo that cannot go on; the message is one line for the user."""


@dataclass
class DemoRun:
    """What one run created, so that cleanup knows what to undo."""

    run_id: str
    workdir: Path
    settings: Settings
    env: dict[str, str]
    web_port: int
    worker: subprocess.Popen[bytes] | None = None
    worker_failed: bool = False

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"


@dataclass
class View:
    """What the demo saw on the output topics, and how it shows it."""

    console: Console
    live_table: bool
    alerts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    estimates: int = 0
    dead_letters: int = 0
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    active: dict[str, set[str]] = field(default_factory=dict)
    pending: dict[str, tuple[Any, list[dict[str, Any]]]] = field(default_factory=dict)
    last_message: float = 0.0

    def on_alert(self, rec: dict[str, Any]) -> None:
        bid = str(rec.get("battery_id"))
        code = str(rec.get("code"))
        severity = str(rec.get("severity"))
        status = str(rec.get("status"))
        self.alerts[(code, severity, status)] += 1
        key = f"{code}/{severity}"
        if status == "raised":
            self.active.setdefault(bid, set()).add(key)
        else:
            self.active.setdefault(bid, set()).discard(key)
        style = SEVERITY_STYLE.get(severity, "white")
        line = Text.assemble(
            ("ALERT ", "bold"),
            (f"{bid:<12} ", "bold"),
            (f"{rec.get('ts')}  ", "dim"),
            (f"{severity.upper():<8} ", style),
            (f"{status:<7} ", "green" if status == "cleared" else style),
            (f"{code:<22} ", style),
            (_cell(rec.get("cell")), ""),
            (f"{_num(rec.get('value'))} {rec.get('unit') or ''}", "bold"),
            (f" (limit {_num(rec.get('threshold'))})", "dim"),
        )
        self.console.print(line, soft_wrap=True, highlight=False)

    def on_estimate(self, rec: dict[str, Any]) -> None:
        self.estimates += 1
        bid = str(rec.get("battery_id"))
        row = self.latest.setdefault(bid, {})
        row["ts"] = rec.get("ts")
        row[str(rec.get("name"))] = rec.get("value")
        if not self.live_table:
            pending = self.pending.get(bid)
            if pending is not None and pending[0] != rec.get("ts"):
                self._print_estimates(bid)
            self.pending.setdefault(bid, (rec.get("ts"), []))[1].append(rec)

    def flush(self) -> None:
        """Print the estimates held back (one line per battery and timestamp)."""
        for bid in list(self.pending):
            self._print_estimates(bid)

    def _print_estimates(self, bid: str) -> None:
        ts, recs = self.pending.pop(bid)
        parts: list[tuple[str, str] | str] = [("est   ", "dim"), f"{bid:<12} ", (f"{ts}  ", "dim")]
        for r in recs:
            unit = r.get("unit") or ""
            unit = "" if unit in ("cycles",) else unit
            conf = r.get("confidence")
            parts.append(f"{r.get('name')}={_num(r.get('value'))}{unit and ' ' + unit}")
            if conf is not None:
                parts.append((f" (conf {_num(conf)})", "dim"))
            parts.append("  ")
        self.console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)

    def on_dead_letter(self, rec: dict[str, Any]) -> None:
        self.dead_letters += 1
        self.console.print(
            Text.assemble(
                ("DEAD  ", "magenta"),
                (f"{rec.get('source')}: ", "dim"),
                (str(rec.get("error")), "magenta"),
            ),
            soft_wrap=True,
            highlight=False,
        )

    def table(self) -> Table:
        table = Table(title="latest estimates per battery", title_justify="left", expand=False)
        table.add_column("battery")
        table.add_column("ts")
        for _, heading in TABLE_COLUMNS:
            table.add_column(heading, justify="right")
        table.add_column("active alerts")
        for bid in sorted(set(self.latest) | set(self.active)):
            row = self.latest.get(bid, {})
            alerts = sorted(self.active.get(bid, ()))
            table.add_row(
                bid,
                str(row.get("ts", "")),
                *(_num(row.get(name)) for name, _ in TABLE_COLUMNS),
                Text(", ".join(alerts), style="bold red" if alerts else ""),
            )
        return table


def _num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:,.1f}"


def _cell(cell: Any) -> str:
    return f"cell {cell:<4} " if isinstance(cell, int) else " " * 10


# --------------------------------------------------------------------------- entry point


def run_demo(
    settings: Settings,
    *,
    bootstrap: str | None,
    duration_s: float | None,
    batteries: int,
    cells: int,
    speed: float,
    console: Console,
    stale_after_s: float | None = None,
    seed: int = 0,
    keep_topics: bool = False,
    broker_run_dir: Path | None = None,
    err: Console | None = None,
    dashboard: bool = True,
) -> int:
    """Run the demo; returns the exit code (0 after a clean run, Ctrl-C included).

    `bootstrap` None starts (or reuses) the local broker of `broker_run_dir` (default: the
    developer's, see `twin_stream.devtools.broker.default_run_dir`). `duration_s` is the time spent
    streaming once the worker is ready; None streams the whole simulated fleet
    (`DEFAULT_SIM_S` simulated seconds) and stops when its outputs have drained.
    `stale_after_s` None scales the worker's silence limit to the compressed time so the
    silent battery of the simulation really goes stale during the run. Errors are one line
    on `err` (default: `console`). `dashboard` serves the live web dashboard meanwhile.
    """
    err = err or console
    if batteries < 1 or not 1 <= cells <= 1024:
        err.print("[bold red]error:[/] demo: batteries must be >= 1 and cells 1..1024")
        return 2
    if not speed > 0 or (duration_s is not None and not duration_s > 0):
        err.print("[bold red]error:[/] demo: speed and duration must be > 0")
        return 2
    from twin_stream.engine import Engine

    try:
        Engine(settings)  # model parameters too, as `settings check`: fail before starting
    except SettingsError as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        return 2
    started_broker: Path | None = None  # run dir of the broker this demo started
    local = bootstrap is None
    run: DemoRun | None = None
    code = 0
    try:
        if bootstrap is None:
            bootstrap, started_broker = _local_broker(console, broker_run_dir)
        elif settings.kafka.security_protocol == "PLAINTEXT":
            from twin_stream.devtools.broker import ping

            if not ping(bootstrap):
                raise DemoError(f"no Kafka broker answers at {bootstrap}")
        # with a duration, a little more fleet than time, so the stream does not run dry
        wall = DEFAULT_SIM_S / speed if duration_s is None else duration_s + 2.0
        sim_s = min(MAX_SIM_S, max(30.0, wall * speed))
        run = _prepare(
            settings, bootstrap, sim_s=sim_s, speed=speed, stale_after_s=stale_after_s, local=local
        )
        cells = _cells(settings, cells, console)
        records = _simulate(run.settings, batteries, cells, sim_s, seed, console)
        code = asyncio.run(
            _live(
                run,
                records,
                duration_s=duration_s,
                speed=speed,
                console=console,
                keep_topics=keep_topics,
                dashboard=dashboard,
            )
        )
    except KeyboardInterrupt:
        console.print("stopped on request")
    except DemoError as exc:
        err.print(f"[bold red]error:[/] demo: {exc}", soft_wrap=True, highlight=False)
        code = 1
    except Exception as exc:  # e.g. a Kafka error: one line, after the clean-up below
        if os.environ.get("TWIN_DEBUG"):
            raise
        err.print(
            f"[bold red]error:[/] demo: {type(exc).__name__}: {exc}",
            soft_wrap=True,
            highlight=False,
        )
        code = 1
    finally:
        with _sigint_ignored():
            if run is not None:
                _stop_worker(run, console)
                _report_worker_failure(run, err)
                if not run.worker_failed:
                    shutil.rmtree(run.workdir, ignore_errors=True)
            if started_broker is not None:
                from twin_stream.devtools.broker import down

                with console.status("stopping the local Kafka broker it started"):
                    down(run_dir=started_broker)
                console.print("stopped the local Kafka broker the demo had started")
    if run is not None and run.worker_failed:
        code = code or 1
    return code


# --------------------------------------------------------------------------- set-up steps


def _local_broker(console: Console, run_dir: Path | None) -> tuple[str, Path | None]:
    """Bootstrap of the local broker and, if this call started it, its run dir."""
    from twin_stream.devtools.broker import BrokerError, default_run_dir, ping, status, up

    rdir = run_dir or default_run_dir()
    before = status(run_dir=rdir)
    try:
        with console.status("starting the local Kafka broker (first run fetches it)"):
            info = up(run_dir=rdir)
    except BrokerError as exc:
        raise DemoError(f"local broker: {str(exc).splitlines()[0]}") from None
    if before is not None and before.pid == info.pid and ping(info.bootstrap):
        console.print(f"using the running local Kafka broker at {info.bootstrap}")
        return info.bootstrap, None
    console.print(f"started a local Kafka broker at {info.bootstrap}")
    return info.bootstrap, rdir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(
    settings: Settings,
    bootstrap: str,
    *,
    sim_s: float,
    speed: float,
    stale_after_s: float | None,
    local: bool,
) -> DemoRun:
    """Unique names for this run, its settings file, and the worker's environment."""
    run_id = f"twin-demo-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{run_id}-"))
    if stale_after_s is None:
        # the simulated dropout / silent end last min(300 s, sim/6) of simulated time
        silent_wall = min(300.0, sim_s / 6.0) / speed
        stale_after_s = max(1.5, min(settings.worker.stale_after_s, silent_wall / 2.0))
    web_port = _free_port()
    overrides: dict[str, dict[str, Any]] = {
        # the local broker speaks PLAINTEXT whatever the settings say about security
        "kafka": {"bootstrap_servers": bootstrap}
        | ({"security_protocol": "PLAINTEXT"} if local else {}),
        "topics": {
            "input": f"{run_id}.telemetry",
            "alerts": f"{run_id}.alerts",
            "estimates": f"{run_id}.estimates",
            "deadletter": f"{run_id}.deadletter",
        },
        "worker": {
            "app_id": run_id,
            "data_dir": str(workdir / "data"),
            "web_port": web_port,
            "stale_after_s": round(stale_after_s, 3),
        },
    }
    data = settings.model_dump(mode="json", context=REVEAL_SECRETS)
    env = dict(os.environ)
    for section, values in overrides.items():
        data[section].update(values)
        for key, value in values.items():
            env[f"TWIN_{section.upper()}__{key.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        demo_settings = Settings.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        shutil.rmtree(workdir, ignore_errors=True)
        raise DemoError(f"settings: {exc}") from None
    # The worker reads the user's settings from this file; the environment overrides above
    # win over it (and over any TWIN_ variable of the caller for the same keys).
    secret_file = workdir / "settings.json"  # holds the password in clear: owner only
    secret_file.touch(mode=0o600)
    secret_file.write_text(settings.model_dump_json(indent=1, context=REVEAL_SECRETS), "utf-8")
    return DemoRun(run_id, workdir, demo_settings, env, web_port)


def _cells(settings: Settings, cells: int, console: Console) -> int:
    configured = settings.fleet.defaults.cells_in_series
    if configured is not None and configured != cells:
        console.print(f"the settings say {configured} cells in series: simulating {configured}")
        return configured
    return cells


def _simulate(
    settings: Settings, batteries: int, cells: int, sim_s: float, seed: int, console: Console
) -> list[dict[str, Any] | str]:
    from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate

    d = settings.fleet.defaults
    faults = {k: (min(v, batteries) if k != "bad_records" else v) for k, v in FAULTS.items()}
    try:
        cfg = SimConfig(
            batteries=batteries,
            cells=cells,
            chemistry=(d.chemistry or "NMC").upper(),
            capacity_ah=d.capacity_ah or 100.0,
            duration_s=sim_s,
            hz=1.0,
            # the simulated span ends now: paced at `speed` x real time, event time never
            # runs ahead of the clock (records beyond engine.max_clock_skew_s are refused)
            start_ms=(int(time.time()) - int(sim_s)) * 1000,
            seed=seed,
            faults=FaultSpec(**faults),
        )
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    with console.status(f"simulating {batteries} batteries x {cells} cells x {sim_s:g} s"):
        result = simulate(cfg)
    faults_text = ", ".join(
        f"{f['kind']} {f['battery']}" + (f" cell {f['cell']}" if f.get("cell") is not None else "")
        for f in result.truth["faults"]
    )
    console.print(
        f"simulated {len(result.records):,} records ({sim_s:g} s of a {cfg.chemistry} fleet) "
        f"with faults: {faults_text}; {result.truth['bad_records']} bad records",
        soft_wrap=True,
        highlight=False,
    )
    return result.records


# --------------------------------------------------------------------------- the live part


async def _live(
    run: DemoRun,
    records: list[dict[str, Any] | str],
    *,
    duration_s: float | None,
    speed: float,
    console: Console,
    keep_topics: bool,
    dashboard: bool = True,
) -> int:
    from twin_stream.kafka_io import ensure_topics

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    s = run.settings
    view = View(console, live_table=console.is_terminal)
    consumer_task: asyncio.Task[None] | None = None
    publisher: asyncio.Task[int] | None = None
    dash: Dashboard | None = None
    metrics: dict[str, Any] | None = None
    published = [0]
    t_stream = t_end = t_worker = time.monotonic()
    try:
        try:
            await asyncio.wait_for(ensure_topics(s), 60)
        except Exception as exc:
            raise DemoError(f"creating topics on {s.kafka.bootstrap_servers}: {exc!r}") from None
        if dashboard:
            dash = await _start_dashboard(s, console)
        t_worker = time.monotonic()
        _start_worker(run)
        assert run.worker is not None
        console.print(
            f"demo run {run.run_id}: worker pid {run.worker.pid}, log {run.log_path}, "
            f"metrics http://127.0.0.1:{run.web_port}/twin/metrics/, "
            f"stale after {s.worker.stale_after_s:g} s",
            soft_wrap=True,
            highlight=False,
        )
        if not await _wait_ready(run, stop, console):
            console.print("stopped on request")
            return 0
        console.print(f"worker ready after {time.monotonic() - t_worker:.1f} s", highlight=False)
        consumer_ready = asyncio.Event()
        consumer_task = asyncio.create_task(_consume(s, view, consumer_ready, stop))
        ready_wait = asyncio.create_task(consumer_ready.wait())
        await asyncio.wait(
            {ready_wait, consumer_task}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        ready_wait.cancel()
        if not consumer_ready.is_set():
            why = consumer_task.exception() if consumer_task.done() else "timed out"
            raise DemoError(f"reading the output topics: {why!r}")
        console.print(
            f"streaming {len(records):,} records at {speed:g}x real time"
            + (f" for {duration_s:g} s" if duration_s else "")
            + " (Ctrl-C stops)",
            highlight=False,
        )
        t_stream = time.monotonic()
        publisher = asyncio.create_task(_publish(s, records, speed, published, stop))
        with _maybe_live(view):
            await _wait_end(run, stop, publisher, consumer_task, duration_s)
            if publisher.done() and publisher.exception() is not None:
                raise DemoError(f"publishing: {publisher.exception()!r}")
            if not publisher.done():  # the duration is over: no more telemetry
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
            if not stop.is_set():
                await _drain(view, stop)
        t_end = time.monotonic()
        metrics = await asyncio.to_thread(_fetch_metrics, run.web_port)
    finally:
        for task in (publisher, consumer_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if dash is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dash.close(), 10)
        if run.worker is not None:
            await asyncio.to_thread(_stop_worker, run, console)
            if not keep_topics:
                await _delete_topics(s, run.run_id)
        for sig in installed:
            loop.remove_signal_handler(sig)
    _summary(console, view, metrics, published[0], max(0.0, t_end - t_stream), run)
    if stop.is_set():
        console.print("stopped on request")
    return 0


async def _start_dashboard(s: Settings, console: Console) -> Dashboard:
    """The web dashboard on a free port of 127.0.0.1, in this event loop."""
    from twin_stream.dashboard import Dashboard

    dash = Dashboard(s, bind="127.0.0.1", port=0)  # port 0: the system picks a free one
    try:
        await dash.start()
    except OSError as exc:
        raise DemoError(f"starting the dashboard: {exc}") from None
    console.print(f"dashboard: {dash.url}", highlight=False, soft_wrap=True)
    return dash


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM if the demo process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _start_worker(run: DemoRun) -> None:
    cmd = [
        sys.executable,
        "-m",
        "twin_stream.cli",
        "worker",
        "--settings",
        str(run.workdir / "settings.json"),
        "--web-port",
        str(run.web_port),
        "--data-dir",
        str(run.workdir / "data"),
        "--loglevel",
        "info",
    ]
    with run.log_path.open("wb") as log:
        # Own session: a terminal's Ctrl-C reaches only the demo, which then stops the
        # worker in order (metrics first). The child keeps its copy of the log handle.
        run.worker = subprocess.Popen(
            cmd,
            cwd=run.workdir,
            env=run.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


async def _wait_ready(run: DemoRun, stop: asyncio.Event, console: Console) -> bool:
    """True once the worker logged that it is ready; False if stopped meanwhile."""
    assert run.worker is not None
    deadline = time.monotonic() + WORKER_READY_S
    with console.status("waiting for the worker to join its group"):
        while True:
            if stop.is_set():
                return False
            if run.worker.poll() is not None:
                run.worker_failed = True
                raise DemoError(f"the worker exited with code {run.worker.returncode}")
            with contextlib.suppress(OSError):
                if READY_MARK in run.log_path.read_text("utf-8", errors="replace"):
                    return True
            if time.monotonic() > deadline:
                run.worker_failed = True
                raise DemoError(f"the worker was not ready within {WORKER_READY_S:g} s")
            await asyncio.sleep(0.2)


async def _consume(s: Settings, view: View, ready: asyncio.Event, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    from twin_stream.kafka_io import client_options

    t = s.topics
    consumer = AIOKafkaConsumer(
        t.alerts,
        t.estimates,
        t.deadletter,
        **client_options(s.kafka),
        group_id=None,
        auto_offset_reset="earliest",  # the topics are this run's: everything is new
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    ready.set()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, msgs in batches.items():
                for m in msgs:
                    view.last_message = time.monotonic()
                    try:
                        rec = orjson.loads(m.value or b"{}")
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(rec, dict):
                        continue
                    if tp.topic == t.alerts:
                        view.on_alert(rec)
                    elif tp.topic == t.estimates:
                        view.on_estimate(rec)
                    else:
                        view.on_dead_letter(rec)
            view.flush()
    finally:
        await consumer.stop()


def _key(rec: dict[str, Any] | str) -> bytes | None:
    if isinstance(rec, dict):
        bid = rec.get("battery_id")
        return bid.encode() if isinstance(bid, str) else None
    return None  # not JSON at all: unkeyed (the worker dead-letters it)


async def _publish(
    s: Settings,
    records: list[dict[str, Any] | str],
    speed: float,
    published: list[int],
    stop: asyncio.Event,
) -> int:
    """Send the records in order, keyed by battery_id, paced by event time x `speed`."""
    from aiokafka import AIOKafkaProducer

    from twin_stream.kafka_io import client_options

    producer = AIOKafkaProducer(
        **client_options(s.kafka), linger_ms=5, acks="all", enable_idempotence=True
    )
    await producer.start()
    topic = s.topics.input
    t0_wall = time.monotonic()
    t0_ts: int | None = None
    pending: list[asyncio.Future[Any]] = []
    try:
        for rec in records:
            if stop.is_set():
                break
            ts = rec.get("ts") if isinstance(rec, dict) else None
            if isinstance(ts, int):
                if t0_ts is None:
                    t0_ts = ts
                wait = (ts - t0_ts) / 1000.0 / speed - (time.monotonic() - t0_wall)
                if wait > 0:
                    if pending:
                        await asyncio.gather(*pending)
                        pending.clear()
                    await asyncio.sleep(wait)
            value = rec.encode() if isinstance(rec, str) else orjson.dumps(rec)
            pending.append(await producer.send(topic, value=value, key=_key(rec)))
            published[0] += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return published[0]


async def _wait_end(
    run: DemoRun,
    stop: asyncio.Event,
    publisher: asyncio.Task[int],
    consumer: asyncio.Task[None],
    duration_s: float | None,
) -> None:
    """Until Ctrl-C, the duration, or (no duration) the end of the fleet; fails if the
    worker or the consumer died."""
    assert run.worker is not None
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not stop.is_set():
        if run.worker.poll() is not None:
            run.worker_failed = True
            raise DemoError(f"the worker exited with code {run.worker.returncode}")
        if consumer.done():
            exc = consumer.exception()
            raise DemoError(f"reading the outputs: {exc!r}")
        if publisher.done() and publisher.exception() is not None:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        if deadline is None and publisher.done():
            return
        await asyncio.sleep(0.1)


async def _drain(view: View, stop: asyncio.Event) -> None:
    """Let the last committed outputs arrive: until quiet for a moment (bounded)."""
    end = time.monotonic() + DRAIN_MAX_S
    start = time.monotonic()
    while time.monotonic() < end and not stop.is_set():
        quiet_since = max(view.last_message, start)
        if time.monotonic() - quiet_since >= DRAIN_IDLE_S:
            return
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def _maybe_live(view: View) -> Iterator[None]:
    if not view.live_table:
        yield
        return
    with Live(
        console=view.console,
        get_renderable=lambda: Group(view.table()),
        refresh_per_second=4,
        transient=False,
    ):
        yield


def _fetch_metrics(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/metrics/", timeout=3) as r:
            data = orjson.loads(r.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- clean-up


def _stop_worker(run: DemoRun, console: Console) -> None:
    """SIGTERM (faust's clean shutdown), then SIGKILL after `WORKER_STOP_S`; idempotent."""
    proc = run.worker
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        console.print(f"the worker did not stop within {WORKER_STOP_S:g} s: killing it")
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def _report_worker_failure(run: DemoRun, console: Console) -> None:
    if not run.worker_failed:
        return
    try:
        lines = run.log_path.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    tail = "\n".join(lines[-25:])
    console.print(f"worker log ({run.log_path}), last lines:", highlight=False, soft_wrap=True)
    console.print(Text(tail or "(empty)", style="dim"), soft_wrap=True)


async def _delete_topics(s: Settings, prefix: str) -> None:
    """Delete this run's topics (its own names, faust's changelog and assignor topics)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from twin_stream.kafka_io import client_options

    admin = AIOKafkaAdminClient(**client_options(s.kafka), request_timeout_ms=15_000)
    try:
        await asyncio.wait_for(admin.start(), 15)
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        if names:
            await asyncio.wait_for(admin.delete_topics(names), 20)
    except Exception:  # best effort: a leftover demo topic is harmless
        pass
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Clean-up is bounded: a second Ctrl-C must not leave the worker or broker behind."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(
    console: Console,
    view: View,
    metrics: dict[str, Any] | None,
    published: int,
    seconds: float,
    run: DemoRun,
) -> None:
    table = Table(title=f"demo summary ({run.run_id})", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records published", f"{published:,}")
    table.add_row("seconds streamed", f"{seconds:.1f}")
    if metrics is None:
        table.add_row("worker metrics", "unavailable")
    else:
        for key, value in metrics.items():
            shown = f"{value:,}" if isinstance(value, int) else str(value)
            table.add_row(f"worker {key.replace('_', ' ')}", shown)
    table.add_row("alerts seen", f"{sum(view.alerts.values()):,}")
    for (code, severity, status), n in sorted(view.alerts.items()):
        table.add_row(f"  {code} {severity} {status}", f"{n:,}")
    table.add_row("estimates seen", f"{view.estimates:,}")
    table.add_row("dead letters seen", f"{view.dead_letters:,}")
    console.print(table)


__all__ = ["DemoError", "run_demo"]
