"""Battery states as compact bytes, for the agents' changelog-backed table.

A state is mostly counters at rest (debounce channels of every cell, stuck-run lengths):
tens of kB of arrays that are nearly all zero. Written once per battery per chunk, as JSON
it cost more than the whole engine (faust's json loads was 39 % of a fleet-shape worker).
Here the engine's small part (frontier, counts, counters, the reorder buffer) is a JSON
header, and every stage's slot rows are gathered for all batteries of a chunk at once, cut
into 8-byte words and packed by one compiled pass: a bitmap of the non-zero words, then those
words. A battery whose channels are idle writes a few hundred bytes, and reading a blob's
header (its version, to skip reloading a resident battery) does not touch the body.

    MAGIC | version, seen, stale, two lengths (fixed size) | engine part (JSON)
          | stages (JSON: each stage's name, state version, widths and field layout) | body

The fixed head is all that deciding whether to reload a resident battery needs, so that
costs no JSON. The stages part names each stage, its state version, the widths (cells,
sensors) and the field layout its rows were written with, so a blob reads back into an engine
serving other widths, or of a newer model version (through its `migrate`).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from twin_stream.sdk.jit import kernel

MAGIC = b"TWS\x02"
U8 = npt.NDArray[np.uint8]


class BlobError(ValueError):
    """Bytes that are not a state blob of this format."""


@kernel
def pack_rows(words, out, offsets):  # type: ignore[no-untyped-def]
    """Rows of uint64 `words` (k, m) packed into `out`: per row a bitmap of its non-zero words
    (ceil(m / 8) bytes) then those words, little endian; row r at out[offsets[r]:offsets[r+1]]."""
    k, m = words.shape
    nb = (m + 7) // 8
    pos = 0
    for r in range(k):
        offsets[r] = pos
        bm = pos
        for b in range(nb):
            out[bm + b] = 0
        pos += nb
        for j in range(m):
            w = words[r, j]
            if w != 0:
                out[bm + (j >> 3)] |= np.uint8(1 << (j & 7))
                for b in range(8):
                    out[pos + b] = np.uint8((w >> np.uint64(8 * b)) & np.uint64(0xFF))
                pos += 8
    offsets[k] = pos


@kernel
def unpack_row(buf, m, words):  # type: ignore[no-untyped-def]
    """The inverse of `pack_rows` for one row of m words (words zeroed by the caller)."""
    nb = (m + 7) // 8
    pos = nb
    for j in range(m):
        if buf[j >> 3] & (1 << (j & 7)):
            w = np.uint64(0)
            for b in range(8):
                w |= np.uint64(buf[pos + b]) << np.uint64(8 * b)
            words[j] = w
            pos += 8
    return pos


def pack(body: U8) -> list[bytes]:
    """Each row of `body` (k, n bytes; n a multiple of 8, see `padded`) packed."""
    k, n = body.shape
    if n % 8:
        raise BlobError(f"rows of {n} bytes: pad them to a multiple of 8 (blob.padded)")
    words = np.ascontiguousarray(body).view(np.uint64)
    m = words.shape[1]
    out = np.empty(k * ((m + 7) // 8 + 8 * m), dtype=np.uint8)
    offsets = np.empty(k + 1, dtype=np.int64)
    pack_rows(words, out, offsets)
    mv = out.data
    return [bytes(mv[offsets[r] : offsets[r + 1]]) for r in range(k)]


def padded(n: int) -> int:
    """n rounded up to whole 8-byte words."""
    return (n + 7) // 8 * 8


def unpack(packed: bytes | memoryview, n: int) -> U8:
    """One packed row back as n bytes."""
    m = (n + 7) // 8
    words = np.zeros(m, dtype=np.uint64)
    end = unpack_row(np.frombuffer(packed, dtype=np.uint8), m, words)
    if end != len(packed):
        raise BlobError(f"packed state body of {len(packed)} bytes, expected {end}")
    return words.view(np.uint8)[:n]


_FIXED = struct.Struct("<qdbII")  # version, seen (NaN: none), stale (-1: none), 2 lengths
_STAGES = ("stages", "body")  # what every blob of one engine call shares


def encode(header: dict[str, Any], packed_body: bytes, stages_json: bytes | None = None) -> bytes:
    """A blob: `header` (the engine's part, `stages`/`body`, `version`, `seen`, `stale`) and
    the packed body. `stages_json`: the `stages`/`body` part already serialised (it is the
    same for every battery of one call)."""
    h = dict(header)
    version = int(h.pop("version", 0))
    seen = h.pop("seen", None)
    stale = h.pop("stale", None)
    if stages_json is None:
        stages_json = orjson.dumps({k: h[k] for k in _STAGES if k in h})
    for k in _STAGES:
        h.pop(k, None)
    engine = orjson.dumps(h)
    head = _head(version, seen, stale, len(engine), len(stages_json))
    return head + engine + stages_json + packed_body


def _head(version: int, seen: float | None, stale: bool | None, n_eng: int, n_stg: int) -> bytes:
    """MAGIC and the fixed-size head."""
    return MAGIC + _FIXED.pack(
        version,
        float("nan") if seen is None else float(seen),
        -1 if stale is None else int(bool(stale)),
        n_eng,
        n_stg,
    )


def header(blob: bytes) -> dict[str, Any]:
    """`version`, `seen` and `stale` of a blob, from its fixed-size head alone (no JSON): what
    deciding whether to reload a resident battery, and the stale timer, need."""
    if blob[:4] != MAGIC:
        raise BlobError("not a twin-stream state blob (magic)")
    version, seen, stale, _, _ = _FIXED.unpack_from(blob, 4)
    out: dict[str, Any] = {"version": version}
    if seen == seen:
        out["seen"] = seen
    if stale >= 0:
        out["stale"] = bool(stale)
    return out


def split(blob: bytes) -> tuple[dict[str, Any], memoryview]:
    """(the whole header, packed body) of a blob."""
    h = header(blob)
    _, _, _, n_engine, n_stages = _FIXED.unpack_from(blob, 4)
    mv = memoryview(blob)
    pos = 4 + _FIXED.size
    h.update(orjson.loads(mv[pos : pos + n_engine]))
    pos += n_engine
    h.update(orjson.loads(mv[pos : pos + n_stages]))
    return h, mv[pos + n_stages :]


def with_header(blob: bytes, **updates: Any) -> bytes:
    """The blob with header fields replaced (`seen`, `stale`, `version`: the fixed head only;
    anything else: the whole header written again; the body reused as is)."""
    if set(updates) <= {"version", "seen", "stale"}:
        h = {**header(blob), **updates}
        _, _, _, n_engine, n_stages = _FIXED.unpack_from(blob, 4)
        head = _head(int(h["version"]), h.get("seen"), h.get("stale"), n_engine, n_stages)
        return head + blob[4 + _FIXED.size :]
    full, body = split(blob)
    return encode({**full, **updates}, bytes(body))
