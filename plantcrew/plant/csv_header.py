"""The start of a CSV export: whether its bytes are in the layout's encoding, and where its
header puts the columns the layout names.

:func:`check_encoding` reads the file's bytes through the encoding before any row is
replayed, so a Windows-1252 export read as UTF-8 is refused at once, naming the line and the
bytes, rather than stopping the replay midway with a decoding traceback; a UTF-8 or UTF-16 byte
order mark in a file declared otherwise names the encoding it shows.

:func:`column_index` matches names without surrounding whitespace or a byte order mark (an
export read as ``utf-8`` keeps its BOM in the first name). A name the layout uses that heads
two columns or more is refused (which one would be read?), naming both positions; one the
layout does not use is a warning. A name the layout uses that the header lacks is refused,
listing the header's names, a near one, and the separator when the header did not split.

Both raise :class:`LayoutMismatch`, which names the layout field at fault and the 1-based
file line; the replay turns it into a ``CsvReplayError`` naming the file.
"""

from __future__ import annotations

import codecs
import difflib
from collections.abc import Mapping
from pathlib import Path

BOM = "\ufeff"
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SEPARATORS = (",", ";", "\t", "|")


class LayoutMismatch(ValueError):
    """The file does not match the layout: ``reason``, the layout ``field`` at fault and the
    1-based file ``line``."""

    def __init__(self, reason: str, field: str, line: int) -> None:
        super().__init__(reason)
        self.reason, self.field, self.line = reason, field, line


def clean(name: str) -> str:
    """A header or layout name as matched: without surrounding whitespace or a BOM."""
    return name.strip().lstrip(BOM).strip()


def check_encoding(path: Path, encoding: str, chunk_bytes: int = 1 << 20) -> None:
    """Raise :class:`LayoutMismatch` (field ``encoding``) if the file at ``path`` starts with
    a byte order mark of another encoding than ``encoding``, or has bytes ``encoding`` cannot
    decode (naming the first such line and bytes). Reads the file once, ``chunk_bytes`` at a
    time. OSError propagates."""
    family = codecs.lookup(encoding).name
    with path.open("rb") as fh:
        start = fh.read(4)
        for bom, shows in _BOMS:
            if start.startswith(bom) and not family.startswith(shows.split("-sig")[0]):
                raise LayoutMismatch(
                    f"the file starts with a {shows.upper().removesuffix('-SIG')} byte order "
                    f"mark, but encoding is {encoding!r}: set encoding: {shows}",
                    "encoding",
                    1,
                )
        fh.seek(0)
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            while chunk := fh.read(chunk_bytes):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            pass
        else:
            return
        fh.seek(0)
        decoder = codecs.getincrementaldecoder(encoding)()
        line, bad = 0, "an incomplete character at the end of the file"
        for raw in fh:
            line += 1
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                bad = " ".join(f"0x{b:02x}" for b in exc.object[exc.start : exc.end])
                break
        raise LayoutMismatch(
            f"line {line} is not {encoding!r} ({bad} cannot be decoded): the file is in "
            "another encoding (a Windows export is often cp1252); set encoding:",
            "encoding",
            line,
        )


def column_index(
    header: list[str], wanted: Mapping[str, str], sep: str
) -> tuple[dict[str, int], list[str]]:
    """Where each ``wanted`` name is in ``header`` (the header row's fields as read).

    ``wanted`` maps each name the layout uses, as it spells it, to the layout field that
    names it (``columns`` or ``timestamp_column``). Returns the 0-based column of each wanted
    name and the warnings (a name the layout does not use heading two columns or more).
    Raises :class:`LayoutMismatch` (line 1) for a wanted name not in the header or heading
    two columns or more.
    """
    names = [clean(h) for h in header]
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(i)
    missing = [w for w in wanted if clean(w) not in positions]
    if missing:
        raise LayoutMismatch(_missing(missing, wanted, names, sep), wanted[missing[0]], 1)
    used = {clean(w): field for w, field in wanted.items()}
    warnings = []
    for name, at in positions.items():
        if len(at) < 2:
            continue
        said = f"{name!r} is the header of columns {_and([str(i + 1) for i in at])}"
        raws = [header[i] for i in at]
        if any(r != name for r in raws):
            said += f" ({_and([repr(r) for r in raws])})"
        if name not in used:
            warnings.append(f"{said} (not mapped: ignored)")
            continue
        raise LayoutMismatch(
            f"{said}: the layout reads that name, so which column is meant is unclear; "
            "rename all but one in the export",
            used[name],
            1,
        )
    return {w: positions[clean(w)][0] for w in wanted}, warnings


def _missing(missing: list[str], wanted: Mapping[str, str], names: list[str], sep: str) -> str:
    """Why ``missing`` names are not found: the header's names, near ones, the separator."""
    what = {"columns": "mapped column", "timestamp_column": "timestamp column"}
    first = missing[0]
    if len(missing) == 1:
        text = f"{what.get(wanted[first], wanted[first])} {first!r} is not in the header"
    else:
        text = f"mapped columns {_and([repr(m) for m in missing])} are not in the header"
    text += f"; the header's columns: {', '.join(repr(n) for n in names)}"
    near = [f"{n!r} for {m!r}" for m in missing if (n := _near(clean(m), names)) is not None]
    if near:
        text += f" (did you mean {_and(near)}?)"
    if len(names) == 1:
        for other in _SEPARATORS:
            if other != sep and other in names[0]:
                text += f"; the header has one column {names[0]!r}: is the separator {other!r}?"
                text += f" (sep: {other!r})"
                break
    return text


def _near(name: str, names: list[str]) -> str | None:
    """The header name that differs from ``name`` only in case, or else a close one."""
    for n in names:
        if n.casefold() == name.casefold():
            return n
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    return close[0] if close else None


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
