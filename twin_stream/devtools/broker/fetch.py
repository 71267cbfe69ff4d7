"""Resolve the Apache Kafka broker jars with Maven into a per-version cache.

Nothing is downloaded from anywhere but Maven Central (through the user's
ordinary ``mvn``): the bundled ``pom.xml`` names ``org.apache.kafka:kafka_2.13``
and an SLF4J logging backend, and ``mvn dependency:copy-dependencies`` copies
them with all their runtime dependencies into
``<cache>/kafka-<version>/libs``, which is then the broker's whole classpath.

The cache root is ``$XDG_CACHE_HOME/twin-stream`` (``~/.cache/twin-stream``
when unset).  A marker file is written only after a successful copy, so a
half-finished fetch is never mistaken for a complete one; while the marker
and every jar it lists are present, :func:`fetch` does not run Maven at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_VERSION",
    "BrokerError",
    "cache_root",
    "fetch",
    "find_java",
    "find_mvn",
    "libs_dir",
]

DEFAULT_VERSION = "3.9.1"
"""Kafka version used when none is given (verified with aiokafka 0.14 + faust 0.15.3)."""

MARKER_NAME = ".twin-stream-complete.json"
"""Written next to ``libs/`` after a successful Maven copy."""

_MAVEN_TIMEOUT_S = 900.0
_TAIL_LINES = 15


class BrokerError(Exception):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


def cache_root() -> Path:
    """Return ``$XDG_CACHE_HOME/twin-stream`` (default ``~/.cache/twin-stream``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "twin-stream"


def version_dir(version: str = DEFAULT_VERSION) -> Path:
    """Return the cache directory of one Kafka version (``<cache>/kafka-<version>``)."""
    _check_version(version)
    return cache_root() / f"kafka-{version}"


def libs_dir(version: str = DEFAULT_VERSION) -> Path:
    """Return where the jars of ``version`` live once fetched (may not exist yet)."""
    return version_dir(version) / "libs"


def find_java() -> str:
    """Return the ``java`` executable (``$JAVA_HOME/bin/java`` first, then ``PATH``)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "java not found: install a JDK/JRE 17+ (e.g. apt-get install openjdk-17-jre-headless)"
            " or set JAVA_HOME"
        )
    return found


def find_mvn() -> str:
    """Return the ``mvn`` executable from ``PATH``."""
    found = shutil.which("mvn")
    if found is None:
        raise BrokerError(
            "mvn not found: install Apache Maven 3.6+ (e.g. apt-get install maven); it is only"
            " used once per Kafka version to resolve the broker jars"
        )
    return found


def logging_backend(version: str) -> str:
    """Return the pom profile of the SLF4J backend for ``version``.

    Both lines log through slf4j-api 1.7; Kafka 3.x uses log4j 1 (here reload4j),
    Kafka 4.x moved to log4j2 (``log4j-slf4j-impl`` + ``log4j-core``).
    """
    return "log4j2" if _major(version) >= 4 else "reload4j"


def fetch(version: str = DEFAULT_VERSION, *, quiet: bool = True) -> Path:
    """Make sure the broker jars of ``version`` are cached and return the libs dir.

    Runs ``mvn dependency:copy-dependencies`` only when the cache is missing or
    incomplete; concurrent callers are serialised with a file lock.  Raises
    :class:`BrokerError` when ``java``/``mvn`` are missing or Maven fails
    (with the last lines of Maven's output).
    """
    find_java()
    vdir = version_dir(version)
    libs = vdir / "libs"
    pom_text = _pom_text()
    if _is_complete(vdir, pom_text):
        return libs
    mvn = find_mvn()
    vdir.mkdir(parents=True, exist_ok=True)
    with _locked(vdir / ".lock"):
        if _is_complete(vdir, pom_text):  # another process finished while we waited
            return libs
        _run_maven(mvn, vdir, version, pom_text, quiet=quiet)
    return libs


# --------------------------------------------------------------------------- helpers


def _check_version(version: str) -> None:
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise BrokerError(f"invalid Kafka version {version!r}: expected e.g. {DEFAULT_VERSION}")


def _major(version: str) -> int:
    _check_version(version)
    return int(version.split(".")[0])


def _pom_text() -> str:
    return (
        resources.files("twin_stream.devtools.broker")
        .joinpath("pom.xml")
        .read_text(encoding="utf-8")
    )


def _pom_digest(pom_text: str) -> str:
    return hashlib.sha256(pom_text.encode("utf-8")).hexdigest()[:16]


def _is_complete(vdir: Path, pom_text: str) -> bool:
    """True when the marker exists, matches this pom, and every jar it lists is present."""
    marker = vdir / MARKER_NAME
    libs = vdir / "libs"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    jars = data.get("jars")
    if data.get("pom_sha256") != _pom_digest(pom_text) or not isinstance(jars, list) or not jars:
        return False
    return all((libs / str(jar)).is_file() for jar in jars)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAVEN_BOILERPLATE = (
    "To see the full stack trace",
    "Re-run Maven using",
    "For more information about the errors",
    "[Help 1] http",
)


def _tail(text: str, n: int = _TAIL_LINES) -> str:
    """Last ``n`` meaningful lines of Maven output (no colour codes, no boilerplate)."""
    lines = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        body = line.removeprefix("[ERROR]").strip()
        if body and not body.startswith(_MAVEN_BOILERPLATE):
            lines.append(line)
    return "\n".join(lines[-n:])


def _run_maven(mvn: str, vdir: Path, version: str, pom_text: str, *, quiet: bool) -> None:
    """Copy the jars into a scratch dir, then swap it in as ``libs`` and write the marker."""
    pom = vdir / "pom.xml"
    pom.write_text(pom_text, encoding="utf-8")
    scratch = vdir / f"libs.partial-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q" if quiet else "-ntp",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        f"-Dkafka.logging={logging_backend(version)}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={scratch}",
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=vdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        shutil.rmtree(scratch, ignore_errors=True)
        raise BrokerError(
            f"maven timed out after {_MAVEN_TIMEOUT_S:.0f}s resolving"
            f" org.apache.kafka:kafka_2.13:{version}\n{_tail(out)}"
        ) from exc
    jars = sorted(p.name for p in scratch.glob("*.jar")) if scratch.is_dir() else []
    if proc.returncode != 0 or not any(j.startswith(f"kafka_2.13-{version}") for j in jars):
        shutil.rmtree(scratch, ignore_errors=True)
        why = f"exit code {proc.returncode}" if proc.returncode else "kafka_2.13 jar missing"
        raise BrokerError(
            f"maven failed ({why}) resolving org.apache.kafka:kafka_2.13:{version}"
            f" (pom: {pom}); last maven output:\n{_tail(proc.stdout or '')}"
        )
    libs = vdir / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    scratch.rename(libs)
    marker = {
        "version": version,
        "logging": logging_backend(version),
        "pom_sha256": _pom_digest(pom_text),
        "jars": jars,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "maven_seconds": round(time.monotonic() - t0, 2),
    }
    tmp = vdir / f"{MARKER_NAME}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    tmp.replace(vdir / MARKER_NAME)
