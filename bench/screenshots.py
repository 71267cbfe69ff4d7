"""Screenshots of the dashboard and the replay report, for a person to look at.

    .venv/bin/python bench/screenshots.py                     # starts/reuses the local broker
    .venv/bin/python bench/screenshots.py --bootstrap 127.0.0.1:9092 --out out/screenshots

Starts what it needs: the project's local Kafka broker (``twin_stream.devtools.broker``; one already
running is reused and left alone, one it started is stopped), a worker and a
``twin-stream dashboard`` (subprocesses, topics unique to the run and deleted afterwards),
then publishes a simulated fleet with faults (an over-voltage cell, an under-voltage cell, a
weak cell, a dropout and a battery that falls silent at the end) at ``--speed`` times real
time with ``twin-stream publish``. When the dashboard has read everything, Debian's headless
chromium (Selenium) saves PNGs of

* ``fleet.png``    the fleet page,
* ``battery.png``  the page of the battery with the over-voltage cell,
* ``alerts.png``   the alert feed,
* ``report.png``   the replay report of the same file (``twin-stream replay --report``),

into ``--out`` (default ``out/screenshots/``, git-ignored). Needs ``chromium`` and
``chromium-driver`` (scripts/setup installs them as root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TAIL_S = 150
"""Simulated seconds at the end of the fleet published slowly, while the pages are shot."""
TAIL_SPEED = 8.0


def publish_cmd(path: Path, speed: float) -> list[str]:
    return [sys.executable, "-m", "twin_stream.cli", "publish", str(path), "--speed", str(speed)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.3)


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"null")
    except (OSError, ValueError):
        return None


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "twin_stream.cli", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(25)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def browser(width: int = 1400, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument(f"--window-size={width},{height}")
    opts.add_argument("--hide-scrollbars")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def shoot(driver: Any, url: str, path: Path, max_height: int = 3000) -> None:
    """The page at `url` to `path`, as tall as its content (up to `max_height` px)."""
    driver.set_window_size(1400, 1000)
    driver.get(url)
    time.sleep(1.0)  # live pages: the event stream connects, charts draw
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);"
    )
    driver.set_window_size(1400, max(700, min(int(height) + 40, max_height)))
    time.sleep(0.3)
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


async def delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        await admin.start()
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception:  # best effort
        pass
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "screenshots")
    ap.add_argument("--bootstrap", help="a running broker (default: the local one)")
    ap.add_argument("--batteries", type=int, default=8)
    ap.add_argument("--cells", type=int, default=96)
    ap.add_argument("--sim-seconds", type=float, default=1800.0)
    ap.add_argument("--speed", type=float, default=60.0)
    a = ap.parse_args()

    from twin_stream.devtools.simulate import FaultSpec, SimConfig, simulate, write_records

    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="twin-shots-"))
    started_broker = False
    bootstrap = a.bootstrap
    if bootstrap is None:
        from twin_stream.devtools.broker import ping, status, up

        before = status()
        info = up()
        bootstrap = info.bootstrap
        started_broker = not (before is not None and before.pid == info.pid and ping(bootstrap))
    prefix = f"shots-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env.update(
        {
            "TWIN_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TWIN_WORKER__APP_ID": prefix,
            "TWIN_TOPICS__INPUT": f"{prefix}.telemetry",
            "TWIN_TOPICS__ALERTS": f"{prefix}.alerts",
            "TWIN_TOPICS__ESTIMATES": f"{prefix}.estimates",
            "TWIN_TOPICS__DEADLETTER": f"{prefix}.deadletter",
            # the silent battery (silent for 300 simulated s at the end) goes stale
            "TWIN_WORKER__STALE_AFTER_S": str(max(1.5, 100.0 / a.speed)),
            "PYTHONUNBUFFERED": "1",
        }
    )
    worker = dash = slow = None
    try:
        fleet = work / "fleet.jsonl"
        sim = simulate(
            SimConfig(
                batteries=a.batteries,
                cells=a.cells,
                duration_s=a.sim_seconds,
                start_ms=(int(time.time()) - int(a.sim_seconds)) * 1000,
                seed=3,
                faults=FaultSpec(over_voltage=1, under_voltage=1, weak_cell=1, dropout=1),
            )
        )
        write_records(sim.records, fleet)
        over = next(f["battery"] for f in sim.truth["faults"] if f["kind"] == "over_voltage")
        print(f"fleet: {len(sim.records):,} records; faults:", sim.truth["faults"])

        web_port, dash_port = free_port(), free_port()
        worker = spawn(
            ["worker", "--web-port", str(web_port), "--data-dir", str(work / "data")],
            env,
            work / "worker.log",
        )
        dash = spawn(["dashboard", "--port", str(dash_port)], env, work / "dashboard.log")
        wait_for(
            lambda: ready(f"http://127.0.0.1:{web_port}/twin/health/ready/"),
            120,
            f"the worker to be ready (log {work / 'worker.log'})",
        )
        url = f"http://127.0.0.1:{dash_port}"
        wait_for(lambda: (get_json(url + "/healthz") or {}).get("status") == "ok", 60, "dashboard")
        # the fleet up to its last TAIL_S simulated seconds at --speed, then the tail slowly
        # (TAIL_SPEED) while the pages are shot: the fleet is live in the pictures, and the
        # battery that fell silent before the tail is stale
        cut = max(r["ts"] for r in sim.records if isinstance(r, dict)) - TAIL_S * 1000
        head, tail = work / "head.jsonl", work / "tail.jsonl"
        write_records([r for r in sim.records if not isinstance(r, dict) or r["ts"] < cut], head)
        write_records([r for r in sim.records if isinstance(r, dict) and r["ts"] >= cut], tail)
        print(f"dashboard {url}/ ; publishing at {a.speed:g}x")
        subprocess.run(publish_cmd(head, a.speed), cwd=REPO, env=env, check=True)
        slow = subprocess.Popen(publish_cmd(tail, TAIL_SPEED), cwd=REPO, env=env)
        time.sleep(3 * max(1.5, 100.0 / a.speed))  # the silent battery goes stale meanwhile
        health = get_json(url + "/healthz")
        print("dashboard /healthz:", json.dumps(health))

        replay_dir = work / "replay"
        replay_cmd = ["replay", str(fleet), "--out", str(replay_dir), "--report", "--no-progress"]
        rep = subprocess.Popen(
            [sys.executable, "-m", "twin_stream.cli", *replay_cmd],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        driver = browser()
        try:
            shoot(driver, f"{url}/", a.out / "fleet.png")
            shoot(driver, f"{url}/battery/{over}", a.out / "battery.png", max_height=4000)
            shoot(driver, f"{url}/alerts", a.out / "alerts.png")
            if slow.poll() is not None:
                print("note: the fleet's tail was published before the pages were shot")
            slow.wait(TAIL_S / TAIL_SPEED + 60)
            _, err = rep.communicate(timeout=300)
            report = replay_dir / "report.html"
            if rep.returncode == 0 and report.exists():
                size = report.stat().st_size
                print(f"report {report}: {size / 1e6:.2f} MB")
                shoot(driver, report.as_uri(), a.out / "report.png", max_height=6000)
            else:
                print(f"no replay report (exit {rep.returncode}): {err.strip()[-500:]}")
        finally:
            driver.quit()
    finally:
        stop(slow)
        stop(dash)
        stop(worker)
        asyncio.run(delete_topics(bootstrap, prefix))
        if started_broker:
            from twin_stream.devtools.broker import down

            down()
    print(f"logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
