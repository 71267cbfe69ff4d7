"""The worker against secured listeners of a real broker: SSL, SASL_PLAINTEXT (PLAIN) and
SASL_SSL (SCRAM-SHA-512 over TLS), each giving exactly the outputs of a broker-less replay;
and a wrong password stopping `twin-stream worker` at once with one clear line.

One secured broker (its own run dir, PLAINTEXT plus the three listeners, a CA and a server
certificate for 127.0.0.1 made here with the `openssl` CLI, a SCRAM user created when its
storage is formatted) serves the whole module. The worker and `publish` go through the secured
listener under test; the test's own broker-side checks (committed offsets, draining the
outputs) use the broker's PLAINTEXT listener.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_helpers import (
    REPO,
    LiveRun,
    assert_same_outputs,
    replay_outputs,
    simulate_file,
    wait_for,
)

from twin_stream.devtools.broker import BrokerInfo, down, up
from twin_stream.devtools.broker.node import BrokerSecurity

USER = "alice"
PASSWORD = "alice-Pw-3141"
WRONG_PASSWORD = "Wrong-Pw-2718-do-not-print"

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_certs(folder: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1/localhost (unencrypted PKCS#8 keys)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to make the test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    cnf = folder / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    rsa = ("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
    run("genpkey", *rsa, "-out", "ca.key")
    conf = ("-config", str(cnf))
    run(
        *("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", *conf),
        *("-subj", "/CN=twin-stream-test-ca", "-extensions", "ca"),
    )
    run("genpkey", *rsa, "-out", "server.key")
    run("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", *conf)
    run(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-set_serial", "2", "-days", "2", "-out", "server.pem"),
        *("-extfile", str(cnf), "-extensions", "server"),
    )
    return Tls(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[BrokerInfo]:
    base = tmp_path_factory.mktemp("secured-kafka")
    run_dir = base / "run"
    security = BrokerSecurity(cert=tls.cert, key=tls.key, ca=tls.ca, users={USER: PASSWORD})
    info = up(data_dir=base / "data", run_dir=run_dir, security=security)
    try:
        assert set(info.listeners) == {"SSL", "SASL_PLAINTEXT", "SASL_SSL"}, info
        yield info
    finally:
        down(run_dir=run_dir)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fleet")
    return simulate_file(
        folder / "fleet.jsonl",
        batteries=3,
        cells=12,
        duration_s=90,
        over_voltage=1,
        bad_records=3,
        duplicates=5,
    )


def security_env(
    info: BrokerInfo, tls: Tls, protocol: str, mechanism: str | None, password: str = PASSWORD
) -> dict[str, str]:
    """TWIN_KAFKA__ overrides that point a worker/publish at the `protocol` listener."""
    env = {
        "TWIN_KAFKA__BOOTSTRAP_SERVERS": info.listeners[protocol],
        "TWIN_KAFKA__SECURITY_PROTOCOL": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        env["TWIN_KAFKA__SSL_CAFILE"] = str(tls.ca)
    if mechanism is not None:
        env["TWIN_KAFKA__SASL_MECHANISM"] = mechanism
        env["TWIN_KAFKA__SASL_USERNAME"] = USER
        env["TWIN_KAFKA__SASL_PASSWORD"] = password
    return env


LISTENERS = {
    "SSL": None,
    "SASL_PLAINTEXT": "PLAIN",
    "SASL_SSL": "SCRAM-SHA-512",
}


@pytest.mark.parametrize("protocol", list(LISTENERS))
def test_worker_on_secured_listener_gives_the_replay_outputs(
    protocol: str,
    secured_broker: BrokerInfo,
    tls: Tls,
    fleet: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    overrides = security_env(secured_broker, tls, protocol, LISTENERS[protocol])
    # broker-side checks of LiveRun go to the PLAINTEXT listener of the same broker
    with LiveRun(secured_broker.bootstrap, tmp_path / "live", request.node.name, overrides) as live:
        assert live.settings.kafka.security_protocol == protocol
        want = replay_outputs(fleet, live.settings, tmp_path / "replay")
        assert want["alerts"] and want["estimates"] and want["deadletter"]

        n = live.publish(fleet)  # through the secured listener
        worker = live.start_worker("w1")
        worker.wait_metrics(timeout=60)

        def done() -> dict | None:
            assert worker.alive(), worker.tail()
            m = worker.metrics()
            if m and m["processed"] + m["dead_letters"] + m["duplicates"] >= n:
                return m
            return None

        m = wait_for(done, 90, f"the worker to account for {n} records", on_timeout=worker.tail)
        assert m["processed"] + m["dead_letters"] + m["duplicates"] == n, m
        assert m["errors"] == 0, m
        live.wait_input_committed(timeout=30)
        live.wait_outputs_stable()
        got = live.outputs()
        assert m["alerts"] == len(want["alerts"]), m
        assert m["estimates"] == len(want["estimates"]), m
        assert_same_outputs(got, want)
        assert worker.alive()
        assert PASSWORD not in worker.log_text()


@pytest.mark.parametrize(
    ("protocol", "mechanism"), [("SASL_SSL", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "PLAIN")]
)
def test_wrong_password_fails_fast_with_one_line(
    protocol: str, mechanism: str, secured_broker: BrokerInfo, tls: Tls, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env.update(security_env(secured_broker, tls, protocol, mechanism, WRONG_PASSWORD))
    env["TWIN_WORKER__APP_ID"] = f"wrong-password-{protocol.lower()}"
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "twin_stream.cli", "worker", "--data-dir", str(tmp_path / "d")]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert elapsed < 15, f"took {elapsed:.1f} s: {output}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    address = secured_broker.listeners[protocol]
    assert lines == [
        f"error: kafka: authentication failed for user '{USER}' ({mechanism}) at {address}:"
        " check kafka.sasl_username/sasl_password (and kafka.sasl_mechanism)"
    ], output
    assert WRONG_PASSWORD not in output
    assert "Traceback" not in output
