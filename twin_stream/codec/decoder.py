"""The decoder: messages (one object, an array, bytes or text) into validated records and
dead letters, through the fastest tier that accepts each (the compiled scanner, simdjson,
then msgspec and pydantic for the reason); never stopped by what a message holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from twin_stream.codec.jsonscan import Scanner
    from twin_stream.codec.records import Records
    from twin_stream.config.settings import Settings

from twin_stream.codec.rules import (
    DEFAULT_MAX_DEAD_PER_MESSAGE,
    NO_MARKERS,
    DeadLetter,
    Markers,
    Row,
    dead_letter,
    lean_row,
    lean_row_json,
    reason,
    undecodable,
)


class Decoder:
    """Turns messages (one object, or an array of objects) into rows and dead letters.

    `field_map` renames a source's field names to the logical ones before validation.
    """

    def __init__(
        self,
        field_map: Mapping[str, str] | None = None,
        max_bytes: int = 1 << 20,
        max_dead_per_message: int = DEFAULT_MAX_DEAD_PER_MESSAGE,
        invalid_markers: Markers = NO_MARKERS,
    ):
        self.field_map = dict(field_map or {})
        self.max_bytes = max_bytes
        self.max_dead_per_message = max_dead_per_message
        self.markers: Markers = {k: tuple(v) for k, v in invalid_markers.items() if v}
        from twin_stream.codec.fastjson import FastDecoder

        self.fast = FastDecoder(max_bytes, self.markers)
        self._scanner: Scanner | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Decoder:
        e = settings.engine
        return cls(
            settings.input.field_map,
            e.max_message_bytes,
            e.max_dead_letters_per_message,
            {str(k): v for k, v in settings.input.invalid_markers.items()},
        )

    def _rename(self, obj: Any) -> Any:
        if self.field_map and type(obj) is dict:
            fm = self.field_map
            return {fm.get(k, k): v for k, v in obj.items()}
        return obj

    def decode_object(self, obj: Any, source: str, rows: list[Row], dead: list[DeadLetter]) -> None:
        if type(obj) is not list:
            self.decode_object_single(obj, source, rows, dead)
            return
        cap = self.max_dead_per_message
        n_dead = len(dead)
        over = 0  # refused items past the cap: summed up in one dead letter
        first_over = -1
        for i, item in enumerate(obj):
            if len(dead) - n_dead < cap:
                self.decode_object_single(item, f"{source}[{i}]", rows, dead)
                continue
            row = lean_row(self._rename(item), f"{source}[{i}]", self.markers)
            if row is not None:
                rows.append(row)
            else:
                over += 1
                if first_over < 0:
                    first_over = i
        if over:
            dead.append(
                dead_letter(
                    f"{over} more refused records in this message of {len(obj)} (from item "
                    f"{first_over} on; the first {cap} are dead letters of their own)",
                    obj[first_over],
                    f"{source}[{first_over}:]",
                    records=over,
                )
            )

    def decode_object_single(
        self, obj: Any, source: str, rows: list[Row], dead: list[DeadLetter], raw: Any = None
    ) -> None:
        """One record (a parsed object); `raw`, when given, is the message as received."""
        obj = self._rename(obj)
        row = lean_row(obj, source, self.markers)
        if row is None:
            dead.append(dead_letter(reason(obj), obj if raw is None else raw, source))
        else:
            rows.append(row)

    def decode_many(
        self,
        items: list[tuple[Any, str]],
        rows: list[Row],
        dead: list[DeadLetter],
        origin: list[int] | None = None,
        dead_origin: list[int] | None = None,
    ) -> None:
        """Decode a batch of (message bytes/text or object, source), keeping their order.

        Plain JSON messages take the simdjson fast path (`twin_stream.codec.fastjson`) as a batch;
        whatever it does not accept is decided one by one by `decode`/`decode_object`. When
        given, `origin`/`dead_origin` receive the item index of each row/dead letter."""
        fast: list[Row | None] | None = None
        if not self.field_map and items and all(type(p) is bytes for p, _ in items):
            fast = self.fast.decode_batch(items)
        for i, (payload, source) in enumerate(items):
            row = fast[i] if fast is not None else None
            n_rows, n_dead = len(rows), len(dead)
            if row is not None:
                rows.append(row)
            else:
                try:
                    if isinstance(payload, bytes | str):
                        self.decode(payload, source, rows, dead)
                    else:
                        self.decode_object(payload, source, rows, dead)
                except Exception as exc:  # never let one message stop the stream
                    del rows[n_rows:], dead[n_dead:]
                    dead.append(undecodable(exc, payload, source))
            if origin is not None:
                origin.extend([i] * (len(rows) - n_rows))
            if dead_origin is not None:
                dead_origin.extend([i] * (len(dead) - n_dead))

    @property
    def scanner(self) -> Scanner:
        """The compiled JSON scanner with this decoder's limits and markers (made once)."""
        if self._scanner is None:
            from twin_stream.codec.jsonscan import Scanner

            self._scanner = Scanner(self.max_bytes, self.markers)
        return self._scanner

    def decode_records(
        self, items: list[tuple[Any, str]], *, scan: bool = True
    ) -> tuple[Records, list[DeadLetter]]:
        """`decode_many` + `Records.from_rows`: the same records, dead letters and order.

        `scan` (default): bytes messages, when no `field_map` is set, through the compiled
        scanner (`twin_stream.codec.columnar.decode_records`), everything it does not accept one
        by one through `decode_many`. `scan=False`: `decode_many` + `from_rows` itself."""
        from twin_stream.codec.records import Records

        if scan:
            from twin_stream.codec.columnar import decode_records

            return decode_records(self, items)
        rows: list[Row] = []
        dead: list[DeadLetter] = []
        self.decode_many(items, rows, dead)
        return Records.from_rows(rows), dead

    def decode(
        self, data: bytes | str, source: str, rows: list[Row], dead: list[DeadLetter]
    ) -> None:
        """Decode one message (bytes or text) into `rows`/`dead`."""
        if len(data) > self.max_bytes:
            dead.append(
                dead_letter(
                    f"message of {len(data)} bytes exceeds max_message_bytes {self.max_bytes}",
                    data,
                    source,
                )
            )
            return
        if not self.field_map:
            try:
                row = lean_row_json(data, source, self.markers)
            except RecursionError:
                row = None  # deeply nested: orjson below says why
            if row is not None:
                rows.append(row)
                return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            dead.append(dead_letter(f"invalid JSON: {exc}", data, source))
            return
        if type(obj) is list and not obj:
            dead.append(dead_letter("empty array: no record", data, source))
            return
        if type(obj) is list:
            self.decode_object(obj, source, rows, dead)
        else:
            self.decode_object_single(obj, source, rows, dead, raw=data)
