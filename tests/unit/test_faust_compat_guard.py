"""The version guard of the faust workarounds (`agents.faust_compat._guard.require`)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

import pytest

from agents.faust_compat import UnverifiedVersion, require
from agents.faust_compat import _guard as guard


def _fake_versions(monkeypatch: pytest.MonkeyPatch, **versions: str) -> None:
    real = importlib.metadata.version

    def version(dist: str) -> str:
        key = dist.replace("-", "_")
        if key in versions:
            if versions[key] == "missing":
                raise importlib.metadata.PackageNotFoundError(dist)
            return versions[key]
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_a_version_out_of_range_names_the_workaround_and_the_range(monkeypatch) -> None:
    _fake_versions(monkeypatch, faust_streaming="0.16.0")
    with pytest.raises(UnverifiedVersion) as err:
        require("faust-streaming", ">=0.15.3,<0.16", workaround="my_fix (Thing)", leans_on="x._y")
    msg = str(err.value)
    assert "my_fix (Thing)" in msg and "faust-streaming>=0.15.3,<0.16" in msg
    assert "0.16.0 is installed" in msg and "x._y" in msg


def test_in_range_returns_the_version_missing_fails(monkeypatch) -> None:
    _fake_versions(monkeypatch, faust_streaming="0.15.9", aiokafka="missing")
    assert require("faust-streaming", ">=0.15.3,<0.16", workaround="w", leans_on="-") == "0.15.9"
    with pytest.raises(
        UnverifiedVersion,
        match=r"w was verified with aiokafka>=0\.12,<0\.15.*"
        r"aiokafka is not installed",
    ):
        require("aiokafka", ">=0.12,<0.15", workaround="w", leans_on="-")


WORKAROUNDS = {  # module -> (what its error names, does it also guard aiokafka?)
    "context": ("(current_event, partition_event)", False),
    "transactions": ("(ChunkTransactions)", False),
    "recovery": ("(patch_recovery_highwaters)", True),
    "changelog_offsets": ("(persist_changelog_offsets_on_commit)", False),
    "local_state": ("(reset_local_state_on_assign)", False),
    "gaps": ("(InputGapFiller)", False),
    "feed": ("(ChunkFeed)", True),
}


def _exec_fresh(name: str) -> None:
    """Run a workaround module's code as a fresh module (not put in sys.modules)."""
    real = importlib.import_module(f"agents.faust_compat.{name}")
    spec = importlib.util.spec_from_file_location(f"_probe_{name}", real.__file__)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("name", sorted(WORKAROUNDS))
def test_importing_a_workaround_under_an_unverified_version_fails(monkeypatch, name) -> None:
    """The guards run at import: a workaround module does not load on another faust (or,
    for those that lean on its internals, aiokafka)."""
    names, guards_aiokafka = WORKAROUNDS[name]
    _exec_fresh(name)  # the installed versions: fine
    _fake_versions(monkeypatch, faust_streaming="0.16.1")
    with pytest.raises(UnverifiedVersion) as err:
        _exec_fresh(name)
    msg = str(err.value)
    assert f"agents.faust_compat.{name} {names}" in msg
    assert "faust-streaming>=0.15.3,<0.16" in msg and "0.16.1 is installed" in msg
    monkeypatch.undo()
    _fake_versions(monkeypatch, aiokafka="0.11.0")
    if guards_aiokafka:
        with pytest.raises(UnverifiedVersion, match=r"aiokafka>=0\.12,<0\.15.*0\.11\.0 is inst"):
            _exec_fresh(name)
    else:
        _exec_fresh(name)


@pytest.mark.parametrize(
    ("version", "inside"),
    [
        ("0.15.3", True),
        ("0.15.10", True),
        ("0.15.4.dev0", True),
        ("0.15", False),
        ("0.15.2", False),
        ("0.16", False),
        ("0.16.0", False),
        ("0.16.0rc1", False),
        ("1.0", False),
        ("nonsense", False),
    ],
)
def test_packaging_and_the_tiny_parser_agree(version: str, inside: bool) -> None:
    spec = ">=0.15.3,<0.16"
    assert guard.satisfies(version, spec) is inside
    assert guard.tiny_satisfies(version, spec) is inside


def test_tiny_parser_operators() -> None:
    assert guard.tiny_satisfies("0.12", ">=0.12,<0.15")
    assert guard.tiny_satisfies("0.14.0", ">=0.12,<0.15")
    assert not guard.tiny_satisfies("0.15.0", ">=0.12,<0.15")
    assert guard.tiny_satisfies("2.1", "==2.1.0, !=2.2")
    assert not guard.tiny_satisfies("2.2", "> 2.1 , != 2.2")
    assert guard.tiny_satisfies("2.2", "<=2.2")
    with pytest.raises(ValueError, match="unsupported"):
        guard.tiny_satisfies("1.0", "~=1.0")


def test_without_packaging_the_tiny_parser_decides(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "packaging.specifiers", None)  # import fails
    _fake_versions(monkeypatch, faust_streaming="0.16.0rc1")
    with pytest.raises(UnverifiedVersion, match=r"0\.16\.0rc1 is installed"):
        require("faust-streaming", ">=0.15.3,<0.16", workaround="w", leans_on="-")
    assert guard.satisfies("0.15.3", ">=0.15.3,<0.16")
