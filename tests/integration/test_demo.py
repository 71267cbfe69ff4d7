"""`run_demo` end to end on the real broker: a worker subprocess, a simulated fleet with
faults published at 20x real time, live alerts read back (read_committed), a summary, and a
clean stop after the duration or on SIGINT, with no worker process or demo topic left."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

RUN = """
import sys
from rich.console import Console
from twin_stream.devtools.demo import run_demo
from twin_stream.config.settings import load_settings

sys.exit(run_demo(
    load_settings(None),
    bootstrap={bootstrap!r},
    duration_s={duration!r},
    batteries=3,
    cells=16,
    speed=20.0,
    console=Console(width=160),
))
"""


def _start(bootstrap: str, duration: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", RUN.format(bootstrap=bootstrap, duration=duration)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )


class _Reader(threading.Thread):
    """Collects a process's output as it comes, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[str] = []

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text)
            if m:
                return m
            if self.proc.poll() is not None and not self.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the demo output:\n{self.text}")


def _alive_with(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[-1].split()[0]
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _topics_with(bootstrap: str, prefix: str) -> list[str]:
    async def go() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return [t for t in await admin.list_topics() if t.startswith(prefix)]
        finally:
            await admin.close()

    return asyncio.run(go())


def _check_nothing_left(out: str, bootstrap: str) -> None:
    m = re.search(r"demo run (\S+): worker pid (\d+)", out)
    assert m, out
    run_id, pid = m.group(1), int(m.group(2))
    assert not _alive_with(run_id), f"a process of {run_id} is still running"
    assert pid not in _alive_with("twin_stream.cli"), f"the worker (pid {pid}) is still running"
    # the run's topics (its own and faust's changelog/assignor topics) are deleted
    deadline = time.monotonic() + 20
    while _topics_with(bootstrap, run_id):
        assert time.monotonic() < deadline, f"topics of {run_id} were not deleted"
        time.sleep(0.5)


def test_demo_runs_for_its_duration(kafka_bootstrap: str) -> None:
    t0 = time.monotonic()
    proc = _start(kafka_bootstrap, 25.0)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, out
    alerts = [line for line in out.splitlines() if line.startswith("ALERT ")]
    assert alerts, out
    # the injected over-voltage cell is raised (and cleared) live, with its severity
    assert any("cell_over_voltage" in a and "raised" in a for a in alerts), out
    assert any("CRITICAL" in a for a in alerts), out
    assert re.search(r"^est\s+bat-\d+\s+\S+\s+equivalent_cycles=", out, re.M), out
    assert re.search(r"^DEAD\s", out, re.M), "the bad records come back as dead letters"
    assert "demo summary" in out and "worker processed" in out, out
    assert elapsed < 120, f"the demo took {elapsed:.0f} s for a 25 s run"
    _check_nothing_left(out, kafka_bootstrap)


def test_demo_stops_cleanly_on_sigint(kafka_bootstrap: str) -> None:
    proc = _start(kafka_bootstrap, 300.0)
    reader = _Reader(proc)
    reader.start()
    try:
        reader.wait_for(r"streaming [\d,]+ records", timeout=120)
        reader.wait_for(r"(?m)^est\s", timeout=30)  # outputs flow
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    out = reader.text
    assert proc.returncode == 0, out
    assert "stopped on request" in out and "demo summary" in out, out
    assert stop_s < 40, f"stopping took {stop_s:.1f} s"
    _check_nothing_left(out, kafka_bootstrap)
