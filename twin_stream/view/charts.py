"""Small hand-written SVG charts for the fleet pages and the replay report.

No JavaScript library and nothing to fetch: every chart is one inline ``<svg class="chart">``
with a time axis (UTC), y-axis labels, lines, shaded bands (a min-max or +/- band) and alert
markers (``<circle class="alert-marker">`` at the alert times, coloured by severity). Series
are thinned to ``max_points`` and coordinates rounded to 0.1 px, so a chart of 240 points
weighs a few kilobytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

WIDTH = 640
HEIGHT = 180
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 52, 12, 22, 22

SEVERITY_COLOURS = {"info": "#2b7bb9", "warning": "#e0a100", "critical": "#d62728"}

_TIME_STEPS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800, 2592000, 31536000,
)  # fmt: skip


@dataclass
class Line:
    """A series drawn as a polyline."""

    ts: Sequence[int]  # epoch ms, ascending
    values: Sequence[float]
    label: str
    colour: str = "#1f77b4"
    dashed: bool = False


@dataclass
class Band:
    """A shaded band between `lo` and `hi` at the same times."""

    ts: Sequence[int]
    lo: Sequence[float]
    hi: Sequence[float]
    label: str
    colour: str = "#1f77b4"


@dataclass
class Marker:
    """An alert at a time."""

    ts: int
    severity: str
    label: str
    code: str = ""


@dataclass
class ChartSpec:
    """What one chart shows."""

    series: str  # data-series attribute: cells|soc|cycles|temperature|...
    title: str
    unit: str = ""
    lines: list[Line] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    y_range: tuple[float | None, float | None] = (None, None)  # fixed bounds, else from data


def num(v: float) -> str:
    """A coordinate rounded to 0.1, without a trailing .0."""
    s = f"{v:.1f}"
    if s.endswith(".0"):
        s = s[:-2]
    return "0" if s == "-0" else s


def thin(n: int, max_points: int) -> list[int]:
    """Indices of at most `max_points` of `n` points, evenly spread, first and last kept."""
    if n <= max_points:
        return list(range(n))
    if max_points < 2:
        return [n - 1]
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


def _nice_step(span: float, target: int = 4) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _fmt_y(v: float, step: float) -> str:
    d = 0
    while d < 6 and abs(step * 10**d - round(step * 10**d)) > 1e-9:
        d += 1
    return f"{v:.{d}f}"


def _time_label(ts_ms: int, step_s: int, with_date: bool) -> str:
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if step_s >= 86400:
        return f"{dt:%m-%d}"
    text = f"{dt:%H:%M:%S}" if step_s < 60 else f"{dt:%H:%M}"
    return f"{dt:%m-%d} {text}" if with_date else text


def _breaks(ts: Sequence[int]) -> set[int]:
    """Indices i where the line must not join point i-1 to i (a gap > 5x the median step)."""
    if len(ts) < 3:
        return set()
    steps = sorted(ts[i] - ts[i - 1] for i in range(1, len(ts)))
    limit = max(1, steps[len(steps) // 2]) * 5
    return {i for i in range(1, len(ts)) if ts[i] - ts[i - 1] > limit}


def render(
    spec: ChartSpec, *, width: int = WIDTH, height: int = HEIGHT, max_points: int = 240
) -> str:
    """The chart as an inline SVG element."""
    times: list[int] = []
    vals: list[float] = []
    for ln in spec.lines:
        times.extend((ln.ts[0], ln.ts[-1]) if ln.ts else ())
        vals.extend(v for v in ln.values if math.isfinite(v))
    for bd in spec.bands:
        times.extend((bd.ts[0], bd.ts[-1]) if bd.ts else ())
        vals.extend(v for v in (*bd.lo, *bd.hi) if math.isfinite(v))
    head = (
        f'<svg class="chart" data-series="{escape(spec.series)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(spec.title)}" '
        'font-family="sans-serif" font-size="10">'
        f"<title>{escape(spec.title)}</title>"
        f'<text x="{_PAD_L}" y="13" font-size="11" font-weight="bold">{escape(spec.title)}'
        f"{' (' + escape(spec.unit) + ')' if spec.unit else ''}</text>"
    )
    if not times:
        times = [m.ts for m in spec.markers]
    if not times:
        return (
            head + f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="#888">'
            "no data</text></svg>"
        )
    t0, t1 = min(times), max(times)
    if t1 == t0:
        t0, t1 = t0 - 30_000, t1 + 30_000
    lo_fixed, hi_fixed = spec.y_range
    y0 = lo_fixed if lo_fixed is not None else (min(vals) if vals else 0.0)
    y1 = hi_fixed if hi_fixed is not None else (max(vals) if vals else 1.0)
    if y1 - y0 < 1e-9:
        pad = abs(y0) * 0.01 or 0.5
        y0, y1 = y0 - pad, y1 + pad
    elif lo_fixed is None or hi_fixed is None:
        pad = (y1 - y0) * 0.05
        y0 = y0 - pad if lo_fixed is None else y0
        y1 = y1 + pad if hi_fixed is None else y1
    pw, ph = width - _PAD_L - _PAD_R, height - _PAD_T - _PAD_B

    def x(t: int) -> float:
        return _PAD_L + (t - t0) / (t1 - t0) * pw

    def y(v: float) -> float:
        return _PAD_T + (1 - (v - y0) / (y1 - y0)) * ph

    parts = [head]
    parts.append(
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>'
    )
    # y axis
    step = _nice_step(y1 - y0)
    v = math.ceil(y0 / step) * step
    while v <= y1 + 1e-12:
        yy = num(y(v))
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_PAD_L + pw}" y1="{yy}" y2="{yy}" stroke="#e5e5e5"/>'
            f'<text x="{_PAD_L - 4}" y="{yy}" dy="3" text-anchor="end">{_fmt_y(v, step)}</text>'
        )
        v += step
    # time axis
    span_s = (t1 - t0) / 1000
    tstep = next((s for s in _TIME_STEPS_S if span_s / s <= 6), _TIME_STEPS_S[-1])
    with_date = span_s >= 86400 or (
        datetime.fromtimestamp(t0 / 1000, tz=UTC).date()
        != datetime.fromtimestamp(t1 / 1000, tz=UTC).date()
    )
    tick = math.ceil(t0 / (tstep * 1000)) * tstep * 1000
    base_y = _PAD_T + ph
    while tick <= t1:
        xx = num(x(tick))
        parts.append(
            f'<line x1="{xx}" x2="{xx}" y1="{_PAD_T}" y2="{base_y}" stroke="#eee"/>'
            f'<text x="{xx}" y="{base_y + 13}" text-anchor="middle">'
            f"{_time_label(tick, tstep, with_date)}</text>"
        )
        tick += tstep * 1000
    # bands, then lines
    for bd in spec.bands:
        idx = thin(len(bd.ts), max_points)
        if not idx:
            continue
        top = [f"{num(x(bd.ts[i]))},{num(y(bd.hi[i]))}" for i in idx]
        bottom = [f"{num(x(bd.ts[i]))},{num(y(bd.lo[i]))}" for i in reversed(idx)]
        parts.append(
            f'<path class="band" d="M{"L".join(top + bottom)}Z" fill="{bd.colour}" '
            f'fill-opacity="0.2" stroke="none"><title>{escape(bd.label)}</title></path>'
        )
    for ln in spec.lines:
        idx = thin(len(ln.ts), max_points)
        if not idx:
            continue
        kept_ts = [ln.ts[i] for i in idx]
        cut = _breaks(kept_ts)
        d = []
        for k, i in enumerate(idx):
            d.append(
                ("M" if k == 0 or k in cut else "L") + f"{num(x(ln.ts[i]))},{num(y(ln.values[i]))}"
            )
        if len(idx) == 1:  # a lone point: draw a dot-sized segment
            d.append("h0.1")
        dash = ' stroke-dasharray="4 3"' if ln.dashed else ""
        parts.append(
            f'<path class="line" d="{"".join(d)}" fill="none" stroke="{ln.colour}" '
            f'stroke-width="1.5" stroke-linecap="round"{dash}>'
            f"<title>{escape(ln.label)}</title></path>"
        )
    # alert markers
    for m in spec.markers:
        if not t0 <= m.ts <= t1:
            continue
        xx = num(x(m.ts))
        colour = SEVERITY_COLOURS.get(m.severity, "#555")
        parts.append(
            f'<line class="alert-line" x1="{xx}" x2="{xx}" y1="{_PAD_T}" y2="{base_y}" '
            f'stroke="{colour}" stroke-opacity="0.5" stroke-dasharray="2 2"/>'
            f'<circle class="alert-marker" data-code="{escape(m.code)}" '
            f'data-severity="{escape(m.severity)}" cx="{xx}" cy="{_PAD_T + 5}" r="4" '
            f'fill="{colour}"><title>{escape(m.label)}</title></circle>'
        )
    # legend
    lx = width - _PAD_R
    items: list[Line | Band] = [*spec.lines, *spec.bands]
    for item in items[::-1]:
        label = escape(item.label)
        parts.append(f'<text x="{lx}" y="13" text-anchor="end" fill="{item.colour}">{label}</text>')
        lx -= 7 * len(item.label) + 12
    parts.append("</svg>")
    return "".join(parts)
