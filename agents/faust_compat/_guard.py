"""The version guard of the faust workarounds: each module of `agents.faust_compat` leans on
internals of faust-streaming (and some on aiokafka's) and says, at import, which versions
it was verified with: `require(dist, spec, workaround=..., leans_on=...)` fails with
`UnverifiedVersion` naming the workaround, the range and the installed version when the
installed distribution is outside that range (or not installed).

The installed version is `importlib.metadata.version(dist)`; the range is a PEP 440
specifier set (`">=0.15.3,<0.16"`), checked with `packaging` when it is installed (pre-releases
of the installed version count, e.g. 0.15.4.dev0 is in the range above), else with a tiny
parser: the leading release numbers of the version (`0.16.0rc1` -> 0.16.0), compared
component-wise, zero-padded, with the operators `>=`, `>`, `<=`, `<`, `==`, `!=`.
"""

from __future__ import annotations

import importlib.metadata
import operator
import re
from collections.abc import Callable

__all__ = ["UnverifiedVersion", "installed_version", "require", "satisfies"]


class UnverifiedVersion(RuntimeError):
    """The installed faust/aiokafka is not the version a workaround was verified with."""


def installed_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def require(dist: str, spec: str, *, workaround: str, leans_on: str) -> str:
    """Fail (`UnverifiedVersion`) unless the installed `dist` is in `spec`, the range the
    workaround was verified with; returns the installed version.

    `workaround`: its name (module and what it patches); `leans_on`: the internals it needs
    (said in the error, as where to look when moving the range)."""
    version = installed_version(dist)
    if version is not None and satisfies(version, spec):
        return version
    found = "is not installed" if version is None else f"{version} is installed"
    raise UnverifiedVersion(
        f"faust workaround {workaround} was verified with {dist}{spec}, but {dist} {found}. "
        f"It leans on {leans_on}: check it against this version (tests/integration, "
        f"-k 'crash or rebalance or equivalence') before moving its range and the pin in "
        f"pyproject.toml."
    )


def satisfies(version: str, spec: str) -> bool:
    """Is `version` in the specifier set `spec` (pre-releases of `version` included)?"""
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return tiny_satisfies(version, spec)
    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


_OPS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*")
_RELEASE = re.compile(r"\s*v?(\d+(?:\.\d+)*)")


def _release(text: str) -> tuple[int, ...] | None:
    m = _RELEASE.match(text)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def tiny_satisfies(version: str, spec: str) -> bool:
    """`satisfies` without `packaging`: release numbers only (see the module doc)."""
    have = _release(version)
    if have is None:
        return False
    for clause in spec.split(","):
        m = _CLAUSE.fullmatch(clause)
        if m is None:
            raise ValueError(f"unsupported version specifier {clause!r} in {spec!r}")
        want = tuple(int(x) for x in m.group(2).split("."))
        n = max(len(have), len(want))
        if not _OPS[m.group(1)](have + (0,) * (n - len(have)), want + (0,) * (n - len(want))):
            return False
    return True
