"""How a CSV export writes its numbers: a decimal mark and, optionally, a thousands mark.

:class:`NumberFormat` reads a field's text as a float, strictly: ASCII digits, an optional
sign, the layout's decimal mark, an optional exponent, and, when the layout names one, a
thousands mark between groups of exactly three digits before the decimal mark (``1,234.5``,
``1.234.567,8``, ``1 234,5``; ungrouped ``1234.5`` is read too). Anything else is refused
with :class:`NotANumber`, never guessed: Python's ``float`` would read ``1_234`` or
Arabic-Indic digits, and dropping a thousands mark wherever it stands would read a decimal
comma's ``1,5`` as fifteen.

A refused value that looks grouped by a mark the layout does not name (``1,234.5`` with no
thousands mark) says which mark and which field to set, and carries it in
:attr:`NotANumber.grouped_by` so the reader can refuse the layout when the file's first rows
show it. ``nan`` and ``inf`` are returned as such (callers refuse them as not finite).
"""

from __future__ import annotations

import re

GROUP_MARKS = (",", ".", " ", "\u00a0", "\u202f", "'", "_")
"""Characters that exports put between groups of thousands (comma, dot, space, no-break
spaces, apostrophe, underscore): a value grouped by one of them is recognised as such."""

_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


class NotANumber(ValueError):
    """A field that is not a number in the layout: ``reason`` says why (it names the text);
    ``grouped_by`` is the mark that seems to group its thousands when the layout's
    ``thousands`` is another (or none), else None."""

    def __init__(self, reason: str, grouped_by: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.grouped_by = reason, grouped_by


def _grouped(mark: str, decimal: str) -> re.Pattern[str]:
    """A number whose whole part is grouped by ``mark`` (at least one mark)."""
    m, d = re.escape(mark), re.escape(decimal)
    return re.compile(rf"[+-]?[0-9]{{1,3}}(?:{m}[0-9]{{3}})+(?:{d}[0-9]*)?(?:[eE][+-]?[0-9]+)?")


def _plain(decimal: str, thousands: str | None) -> re.Pattern[str]:
    """A number with ``decimal`` as its decimal mark, grouped by ``thousands`` or not."""
    d = re.escape(decimal)
    whole = "[0-9]+"
    if thousands is not None:
        whole = rf"[0-9]{{1,3}}(?:{re.escape(thousands)}[0-9]{{3}})+|[0-9]+"
    return re.compile(rf"[+-]?(?:(?:{whole})(?:{d}[0-9]*)?|{d}[0-9]+)(?:[eE][+-]?[0-9]+)?")


class NumberFormat:
    """Reads numbers written with ``decimal`` (``"."`` or ``","``) as the decimal mark and
    ``thousands`` (one character, or None) between groups of three digits; see module doc.
    ``sep``, the file's separator, may be the thousands mark (the file then quotes its grouped
    values, and the CSV reader hands them over unquoted); it is used only for the reasons: a
    value grouped by it when it is not the thousands mark says to set it, not to read it as a
    decimal mark (a separator cannot be one)."""

    def __init__(self, decimal: str, thousands: str | None = None, sep: str | None = None) -> None:
        self.decimal, self.thousands, self.sep = decimal, thousands, sep
        self._number = _plain(decimal, thousands)
        other = "." if decimal == "," else ","
        self._other_decimal = _plain(other, None)  # the other decimal mark, ungrouped
        self._grouped = {
            mark: _grouped(mark, decimal)
            for mark in GROUP_MARKS
            if mark not in (decimal, thousands)
        }

    def parse(self, raw: str) -> float:
        """``raw`` (stripped) as a float; raises :class:`NotANumber` saying why it is not."""
        if self._number.fullmatch(raw):
            if self.thousands is not None:
                raw = raw.replace(self.thousands, "")
            return float(raw.replace(self.decimal, ".") if self.decimal != "." else raw)
        if _NON_FINITE.fullmatch(raw):
            return float(raw)
        raise self._why(raw)

    def _why(self, raw: str) -> NotANumber:
        what = f"not a number: {raw!r}"
        for mark, pattern in self._grouped.items():
            if not pattern.fullmatch(raw):
                continue
            hint = f"{mark!r} seems to group its thousands: set thousands: {mark!r}"
            if self.thousands is not None:
                hint = f"grouped by {mark!r}, not the layout's thousands {self.thousands!r}: " + (
                    f"set thousands: {mark!r}"
                )
            if mark == self.sep:  # the value reached us whole: the file quotes it
                hint += " (the separator too: every grouped value must be quoted, as this one is)"
            elif mark in ".," and raw.count(mark) == 1 and self.decimal not in raw:
                hint += f"; or, if {mark!r} is its decimal mark, decimal: {mark!r}"
            return NotANumber(f"{what} ({hint})", grouped_by=mark)
        if self.thousands is not None and self.thousands in raw:
            return NotANumber(
                f"{what} (the thousands mark {self.thousands!r} must stand between groups of "
                "three digits before the decimal mark)"
            )
        other = "." if self.decimal == "," else ","
        if other in raw and self._other_decimal.fullmatch(raw):
            return NotANumber(
                f"{what} ({other!r} is not the decimal mark {self.decimal!r}; "
                f"if it is the file's, set decimal: {other!r})"
            )
        return NotANumber(what)
