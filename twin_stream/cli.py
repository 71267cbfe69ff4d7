"""The `twin-stream` command line. Errors are one clear line on stderr and a non-zero exit,
never a traceback; long work shows progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from twin_stream.config.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from twin_stream.kafka_io import PublishStats

app = typer.Typer(
    name="twin-stream",
    help="Streaming digital twin for battery fleets: replay files, run the live worker, "
    "simulate fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
settings_app = typer.Typer(help="Inspect and check settings.", no_args_is_help=True)
broker_app = typer.Typer(
    help="A local single-node Kafka (KRaft) for development and tests.", no_args_is_help=True
)
state_app = typer.Typer(
    help="Inspect and repair one battery's stored state (live table or replay state file).",
    no_args_is_help=True,
)
app.add_typer(settings_app, name="settings")
app.add_typer(state_app, name="state")
app.add_typer(broker_app, name="broker")

out = Console()
err = Console(stderr=True)

SettingsOpt = Annotated[
    Path | None, typer.Option("--settings", "-s", help="settings JSON file (TWIN_ env overrides)")
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except SettingsError as exc:
        fail(str(exc))


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="recorded telemetry: .jsonl, .csv or .parquet")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    settings: SettingsOpt = None,
    state: Annotated[
        Path | None, typer.Option(help="battery state file: read if present, written at the end")
    ] = None,
    block: Annotated[int, typer.Option(min=1, help="records per processing block")] = 20_000,
    progress: Annotated[
        bool, typer.Option(help="progress bar (default: on a terminal)")
    ] = sys.stderr.isatty(),
    report: Annotated[
        bool,
        typer.Option("--report", help="also write DIR/report.html (self-contained, works offline)"),
    ] = False,
) -> None:
    """Replay a recorded file through the models, without a broker."""
    from twin_stream.codec.files import InputError
    from twin_stream.replay import replay as run

    cfg = _settings(settings)
    try:
        with _progress(f"replay {file.name}", progress) as update:
            summary = run(file, out_dir, cfg, block=block, state_file=state, progress=update)
    except (InputError, SettingsError) as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:
        fail(f"{file}: {exc}")
    table = Table(title=f"replay of {file.name} -> {out_dir}", show_header=False)
    for key, value in summary.as_dict().items():
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)
    if report:
        from twin_stream.view.report import write_report

        try:
            path = write_report(out_dir)
        except (OSError, ValueError) as exc:
            fail(f"report: {exc}")
        size = path.stat().st_size
        out.print(f"report: {path} ({size / 1e6:.2f} MB)", highlight=False, soft_wrap=True)


@app.command()
def simulate(
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="file to write (.jsonl, .csv, .parquet)")
    ],
    batteries: Annotated[int, typer.Option(min=1, help="number of batteries")] = 4,
    cells: Annotated[int, typer.Option(min=1, max=1024, help="cells in series")] = 96,
    chemistry: Annotated[str, typer.Option(help="NMC or LFP")] = "NMC",
    duration: Annotated[float, typer.Option(min=1, help="seconds of telemetry")] = 3600.0,
    hz: Annotated[float, typer.Option(min=0.01, max=100, help="samples per second")] = 1.0,
    capacity: Annotated[float, typer.Option(min=0.1, help="Ah per cell string")] = 100.0,
    temperatures: Annotated[int, typer.Option(min=0, max=1024, help="temperature sensors")] = 8,
    seed: int = 0,
    faults: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="KIND=N, repeatable: over_voltage, under_voltage, weak_cell, dropout, "
            "disorder, duplicates, bad_records",
        ),
    ] = None,
) -> None:
    """Write synthetic fleet telemetry, with the truth beside it (<out>.truth.json)."""
    from twin_stream.battery.chemistry import ChemistryError, get_chemistry
    from twin_stream.codec.files import InputError, file_format
    from twin_stream.devtools.simulate import FaultSpec, SimConfig, write_records
    from twin_stream.devtools.simulate import simulate as run

    try:
        file_format(out_file)
        get_chemistry(chemistry)
    except (InputError, ChemistryError) as exc:
        fail(str(exc))
    counts: dict[str, int] = {}
    known = set(FaultSpec.__dataclass_fields__)
    for spec in faults or []:
        kind, _, count = spec.partition("=")
        if kind not in known or not count.isdigit():
            fail(f"--fault {spec!r}: expected KIND=N with KIND one of {', '.join(sorted(known))}")
        counts[kind] = int(count)
    try:
        cfg = SimConfig(
            batteries=batteries,
            cells=cells,
            chemistry=chemistry.upper(),
            capacity_ah=capacity,
            duration_s=duration,
            hz=hz,
            temperatures=temperatures,
            seed=seed,
            faults=FaultSpec(**counts),
        )
    except ValueError as exc:
        fail(str(exc))
    with err.status(f"simulating {batteries} x {cells} cells x {duration:g} s"):
        result = run(cfg)
        n = write_records(result.records, out_file)
    truth_path = out_file.with_name(out_file.name + ".truth.json")
    truth_path.write_text(json.dumps(result.truth, indent=1, default=str))
    out.print(f"wrote {n:,} records to {out_file} and the truth to {truth_path}")


models_app = typer.Typer(
    help="The models: list them (no sub-command), or start a new one from the template."
)
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List the models and their manifests."""
    if ctx.invoked_subcommand is not None:
        return
    from twin_stream.sdk.registry import discover_models

    for name, cls in discover_models().items():
        m = cls.manifest
        table = Table(title=f"{name} {m.version}: {m.description}", title_justify="left")
        table.add_column("kind")
        table.add_column("name")
        table.add_column("unit")
        table.add_column("detail")
        for k, i in m.inputs.items():
            table.add_row("input", k, i.unit, "required" if i.required else "optional")
        for k, o in m.outputs.items():
            table.add_row(o.kind, k, o.unit, o.description)
        for k, p in m.parameters.items():
            rng = "" if p.minimum is None and p.maximum is None else f" [{p.minimum}, {p.maximum}]"
            table.add_row("parameter", k, p.unit, f"{p.type} = {p.default!r}{rng}")
        out.print(table)


@models_app.command("new")
def models_new(
    name: Annotated[str, typer.Argument(help="the model's name (lower case, digits, _)")],
    models_dir: Annotated[
        Path, typer.Option("--dir", help="the models package to write into")
    ] = Path("models"),
) -> None:
    """Write a working model skeleton (manifest and compiled loop) from the template."""
    from twin_stream.sdk.contract import ContractError
    from twin_stream.sdk.scaffold import new_model

    try:
        target = new_model(name, models_dir)
    except ContractError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    out.print(
        f"wrote {target}/ (model.json, model.py, __init__.py). Enable it with "
        f"TWIN_MODELS__ENABLED='[..., \"{name}\"]' or models.enabled in the settings file; "
        f"check it with twin_stream.sdk.testing.check_model."
    )


@app.command()
def schema(
    out_dir: Annotated[Path | None, typer.Option("--out", help="write one file per record")] = None,
) -> None:
    """Export the JSON Schema of the telemetry and output records."""
    from schemas import AlertRecord, DeadLetterRecord, EstimateRecord, Telemetry

    schemas: dict[str, Any] = {
        "telemetry": Telemetry.model_json_schema(),
        "alert": AlertRecord.model_json_schema(),
        "estimate": EstimateRecord.model_json_schema(),
        "deadletter": DeadLetterRecord.model_json_schema(),
    }
    if out_dir is None:
        out.print_json(json.dumps(schemas))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, s in schemas.items():
        (out_dir / f"{name}.schema.json").write_text(json.dumps(s, indent=2) + "\n")
    out.print(f"wrote {len(schemas)} schemas to {out_dir}")


@settings_app.command("check")
def settings_check(settings: SettingsOpt = None) -> None:
    """Validate settings (file + TWIN_ environment) and the model parameters."""
    from twin_stream.engine import Engine

    cfg = _settings(settings)
    try:
        Engine(cfg)
    except SettingsError as exc:
        fail(str(exc))
    k = cfg.kafka
    security: str = k.security_protocol
    if security.startswith("SASL"):  # whether a password is set, never the password
        security += f", user {k.sasl_username!r}, password {'set' if k.sasl_password else 'unset'}"
    out.print(
        f"settings OK: models {', '.join(cfg.models.enabled)}; "
        f"{len(cfg.fleet.batteries)} battery overrides; kafka {k.bootstrap_servers} ({security})"
    )


@settings_app.command("show")
def settings_show(settings: SettingsOpt = None) -> None:
    """Print the effective settings as JSON; secrets (kafka.sasl_password) show as "***"."""
    out.print_json(_settings(settings).model_dump_json())  # Secret fields dump as "***"


@app.command()
def worker(
    settings: SettingsOpt = None,
    loglevel: Annotated[
        str, typer.Option("--loglevel", "-l", help="debug, info, warning")
    ] = "info",
    web_port: Annotated[
        int | None, typer.Option(help="HTTP port (metrics at /twin/metrics/)")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="table store folder")] = None,
    per_event: Annotated[
        bool, typer.Option(hidden=True, help="bench/live.py baseline: one event at a time")
    ] = False,
) -> None:
    """Run the live service: consume telemetry, emit alerts and estimates."""
    import importlib

    from twin_stream.kafka_io import KafkaAccessError

    # the Faust shell sits above the platform: loaded by name, never imported by twin_stream
    run_worker = importlib.import_module("agents.app").run_worker

    cfg = _settings(settings)
    try:
        run_worker(
            cfg, loglevel=loglevel, web_port=web_port, data_dir=data_dir, per_event=per_event
        )
    except (SettingsError, KafkaAccessError) as exc:  # one line, never the password
        fail(str(exc))
    except Exception as exc:  # a worker that cannot start says why in one line
        fail(f"worker: {type(exc).__name__}: {exc}")


StateFileOpt = Annotated[
    Path | None,
    typer.Option("--file", help="a replay state file (replay --state) instead of the live table"),
]


@state_app.command("show")
def state_show(
    battery_id: Annotated[str, typer.Argument(help="the battery")],
    settings: SettingsOpt = None,
    file: StateFileOpt = None,
) -> None:
    """Print the battery's stored state as JSON (live: the last changelog record)."""
    from twin_stream.replay import state_tool as st

    cfg = _settings(settings)
    try:
        value = (
            st.file_show(file, battery_id)
            if file is not None
            else st.run(st.topic_show(cfg, battery_id))
        )
    except st.StateToolError as exc:
        fail(str(exc))
    if value is None:
        fail(f"no stored state for {battery_id!r}", code=1)
    out.print_json(json.dumps(value))


@state_app.command("reset")
def state_reset(
    battery_id: Annotated[str, typer.Argument(help="the battery")],
    frontier: Annotated[
        bool,
        typer.Option("--frontier", help="forget the event-time frontier (keep the models' state)"),
    ] = False,
    everything: Annotated[
        bool, typer.Option("--all", help="delete the battery's whole state")
    ] = False,
    force: Annotated[bool, typer.Option(help="write even while workers of the group run")] = False,
    settings: SettingsOpt = None,
    file: StateFileOpt = None,
) -> None:
    """Repair a battery's state, e.g. after a far-future timestamp made its frontier useless.
    Live: stop the workers first; the next worker to take the battery loads the repair."""
    from twin_stream.replay import state_tool as st

    if frontier == everything:
        fail("say what to reset: --frontier or --all")
    cfg = _settings(settings)
    try:
        if file is not None:
            st.file_reset(file, battery_id, everything)
        else:
            st.run(st.topic_reset(cfg, battery_id, everything, force=force))
    except st.StateToolError as exc:
        fail(str(exc))
    what = "deleted" if everything else "frontier cleared"
    err.print(f"{battery_id}: {what} ({file or st.changelog_topic(cfg)})", highlight=False)


@app.command()
def publish(
    file: Annotated[Path, typer.Argument(help="recorded telemetry: .jsonl, .csv or .parquet")],
    settings: SettingsOpt = None,
    speed: Annotated[
        float | None,
        typer.Option(min=0.001, help="X times real time (default: as fast as possible)"),
    ] = None,
    topic: Annotated[str | None, typer.Option(help="default: the input topic")] = None,
    skip: Annotated[
        int,
        typer.Option(
            min=0, help="leave out the first N records of the file (resume an interrupted run)"
        ),
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option(min=0.1, help="seconds to reach the broker and for each request"),
    ] = 30.0,
    progress: Annotated[bool, typer.Option()] = sys.stderr.isatty(),
) -> None:
    """Publish a recorded file into the input topic, keyed by battery_id; on failure, say how
    many records the broker acknowledged and how to resume (--skip)."""
    import asyncio

    from twin_stream.codec.files import InputError
    from twin_stream.kafka_io import KafkaAccessError, PublishStats, ensure_topics
    from twin_stream.kafka_io import publish as run

    cfg = _settings(settings)
    stats = PublishStats(skipped=skip, resume_at=skip)

    def resume() -> str:
        return _publish_resume(file, stats, settings=settings, topic=topic, speed=speed)

    try:
        asyncio.run(ensure_topics(cfg, timeout))
        with _progress(f"publish {file.name}", progress) as update:
            asyncio.run(
                run(
                    file,
                    cfg,
                    speed=speed,
                    progress=update,
                    topic=topic,
                    skip=skip,
                    timeout_s=timeout,
                    stats=stats,
                )
            )
    except InputError as exc:
        fail(f"{exc}; {resume()}" if stats.sent else str(exc))
    except KafkaAccessError as exc:
        fail(f"{exc}; {resume()}")
    except KeyboardInterrupt:
        fail(f"publish interrupted; {resume()}")
    except Exception as exc:
        fail(f"publish to {cfg.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}; {resume()}")
    skipped = f", the first {skip:,} skipped" if skip else ""
    out.print(
        f"published {stats.acked:,} records ({stats.unkeyed:,} unkeyed, "
        f"{stats.bytes / 1e6:,.1f} MB{skipped}) to {topic or cfg.topics.input} "
        f"in {stats.seconds:,.1f} s: {stats.rate:,.0f} records/s",
        highlight=False,
        soft_wrap=True,
    )


def _publish_resume(
    file: Path,
    stats: PublishStats,
    *,
    settings: Path | None,
    topic: str | None,
    speed: float | None,
) -> str:
    """'N of M records acknowledged; resume with: twin-stream publish FILE --skip N ...'."""
    import shlex

    from twin_stream.kafka_io import count_records

    total = count_records(file)
    done = f"{stats.resume_at:,} of {total:,}" if total is not None else f"{stats.resume_at:,}"
    notes = []
    if stats.skipped:
        notes.append(f"the first {stats.skipped:,} skipped")
    extra = stats.acked - (stats.resume_at - stats.skipped)
    if extra > 0:
        notes.append(f"{extra:,} more past that point, sent again on resume")
    cmd = ["twin-stream", "publish", str(file), "--skip", str(stats.resume_at)]
    if settings is not None:
        cmd += ["--settings", str(settings)]
    if topic is not None:
        cmd += ["--topic", topic]
    if speed is not None:
        cmd += ["--speed", f"{speed:g}"]
    note = f" ({'; '.join(notes)})" if notes else ""
    return f"{done} records acknowledged{note}; resume with: {shlex.join(cmd)}"


@app.command()
def record(
    topic: Annotated[str, typer.Argument(help="topic to copy")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="JSON Lines file")],
    settings: SettingsOpt = None,
    idle: Annotated[float, typer.Option(min=0.1, help="stop after this many idle seconds")] = 5.0,
    max_records: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Copy a topic (committed records, from the beginning) to JSON Lines."""
    import asyncio

    from twin_stream.kafka_io import record as run

    cfg = _settings(settings)
    try:
        n = asyncio.run(run(topic, out_file, cfg, idle_s=idle, max_records=max_records))
    except Exception as exc:
        fail(f"record {topic} from {cfg.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}")
    out.print(f"recorded {n:,} records of {topic} to {out_file}")


@app.command()
def demo(
    settings: SettingsOpt = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers (default: start or reuse the local broker)"),
    ] = None,
    duration: Annotated[
        float,
        typer.Option(
            min=0, help="seconds of live streaming; 0 = the whole simulated hour, then stop"
        ),
    ] = 60.0,
    batteries: Annotated[int, typer.Option(min=1, help="simulated batteries")] = 4,
    cells: Annotated[int, typer.Option(min=1, max=1024, help="cells in series")] = 96,
    speed: Annotated[float, typer.Option(min=0.1, help="X times real time")] = 10.0,
    stale_after: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            help="telemetry_stale after this many silent seconds (default: scaled to --speed)",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 0,
    keep_topics: Annotated[
        bool, typer.Option(help="keep the run's topics on the broker afterwards")
    ] = False,
    dashboard: Annotated[
        bool, typer.Option(help="serve the live web dashboard meanwhile (URL printed)")
    ] = True,
) -> None:
    """All of it at once: a broker, topics, a worker, a simulated fleet with faults, and live
    alerts and estimates; stops on Ctrl-C or after --duration."""
    from twin_stream.devtools.demo import run_demo

    cfg = _settings(settings)
    code = run_demo(
        cfg,
        bootstrap=bootstrap,
        duration_s=duration or None,
        batteries=batteries,
        cells=cells,
        speed=speed,
        console=out,
        err=err,
        stale_after_s=stale_after,
        seed=seed,
        keep_topics=keep_topics,
        dashboard=dashboard,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def dashboard(
    settings: SettingsOpt = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="HTTP port (default: dashboard.port; 0 = a free one)"),
    ] = None,
    bind: Annotated[
        str | None,
        typer.Option(help="address to listen on (default: dashboard.bind, 127.0.0.1)"),
    ] = None,
) -> None:
    """The live fleet dashboard: reads the alerts and estimates topics (from the beginning,
    committed records) and serves the fleet, battery and alerts pages with live updates."""
    from twin_stream.dashboard import run_dashboard

    cfg = _settings(settings)

    def ready(dash: Any) -> None:
        out.print(
            f"dashboard at {dash.url} (topics {cfg.topics.alerts}, {cfg.topics.estimates} "
            f"on {cfg.kafka.bootstrap_servers}); Ctrl-C stops",
            highlight=False,
            soft_wrap=True,
        )

    try:
        run_dashboard(cfg, bind=bind, port=port, on_ready=ready)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        where = f"{bind or cfg.dashboard.bind}:{cfg.dashboard.port if port is None else port}"
        fail(f"dashboard: cannot listen on {where}: {exc.strerror or exc}")


@broker_app.command("up")
def broker_up(
    port: Annotated[int | None, typer.Option(help="default: a free port")] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Fetch (cached) and start a local Kafka on 127.0.0.1; prints its bootstrap address."""
    from twin_stream.devtools.broker import BrokerError, up

    try:
        with err.status("starting the local Kafka broker"):
            info = up(port=port, data_dir=data_dir)
    except BrokerError as exc:
        fail(str(exc))
    out.print(info.bootstrap)


@broker_app.command("down")
def broker_down() -> None:
    """Stop the local Kafka broker."""
    from twin_stream.devtools.broker import down

    out.print("stopped" if down() else "no broker was running")


@broker_app.command("status")
def broker_status() -> None:
    """Is the local broker running and answering?"""
    from twin_stream.devtools.broker import ping, status

    info = status()
    if info is None or not ping(info.bootstrap):
        fail("no local broker is running", code=1)
    out.print(f"running at {info.bootstrap} (pid {info.pid}, data {info.data_dir})")


def main() -> None:
    import os

    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("TWIN_DEBUG"):
            raise
        err.print(
            f"[bold red]error:[/] internal error {type(exc).__name__}: {exc} "
            "(set TWIN_DEBUG=1 for the traceback, and please report it)",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
