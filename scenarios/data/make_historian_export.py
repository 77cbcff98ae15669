"""Write ``historian-export.csv``: a synthetic historian export of a feed pump (not real data).

It is laid out as a German plant historian would export it, nothing like SKAB: ``;`` between
fields, decimal commas, Windows-1252 text, local wall-clock time (Europe/Berlin) in
``DD.MM.YYYY HH:MM:SS``, tag names with units as column headers, and a text status column.
One reading a second from 2026-10-25 02:53:00 CEST, across the night the clocks go back
(03:00 CEST -> 02:00 CET, so 02:00-02:59 appears twice), 780 rows. The Monitor calibrates on
the first 400. At row 540 (02:02:00 CET, 540 s in) the pump's discharge valve is throttled
over 5 s: the flow falls by a fifth, the discharge pressure rises, the motor current falls
(a radial pump draws less power at less flow). Row 700 has a quality text instead of the
flow (``Bad``), as historians write. ``scenarios/historian-export.yaml`` replays it.

Run: ``python scenarios/data/make_historian_export.py`` (deterministic: seed 7).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROWS, FAULT_ROW, RAMP_S, BAD_ROW = 780, 540, 5, 700
START_UTC = datetime(2026, 10, 25, 0, 53, tzinfo=UTC)  # 02:53:00 CEST
HEADER = [
    "Zeitstempel",
    "P-101 Durchfluss [m³/h]",
    "P-101 Förderdruck [bar]",
    "P-101 Motorstrom [A]",
    "P-101 Lagerschwingung [mm/s]",
    "P-101 Wicklungstemperatur [°C]",
    "Status",
]


def rows(seed: int = 7) -> list[list[str]]:
    """The export's data rows (as text, decimal commas)."""
    rng = random.Random(seed)
    berlin = ZoneInfo("Europe/Berlin")
    winding = 61.0
    out = []
    for i in range(ROWS):
        local = (START_UTC + timedelta(seconds=i)).astimezone(berlin)
        k = min(max(i - FAULT_ROW, 0) / RAMP_S, 1.0)  # 0 before the fault, 1 once throttled
        winding += rng.gauss(0, 0.01) - 0.002 * k
        values = [
            32.0 * (1 - 0.2 * k) + rng.gauss(0, 0.15),  # flow, m³/h
            4.20 + 0.55 * k + rng.gauss(0, 0.02),  # discharge pressure, bar
            11.8 * (1 - 0.08 * k) + rng.gauss(0, 0.05),  # motor current, A
            2.30 + rng.gauss(0, 0.03),  # bearing vibration, mm/s
            winding,  # winding temperature, °C
        ]
        text = [f"{v:.2f}".replace(".", ",") for v in values]
        if i == BAD_ROW:
            text[0] = "Bad"
        status = "Drossel" if k > 0 else "Betrieb"
        out.append([local.strftime("%d.%m.%Y %H:%M:%S"), *text, status])
    return out


def main() -> None:
    path = Path(__file__).with_name("historian-export.csv")
    lines = [";".join(HEADER), *(";".join(r) for r in rows())]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    print(f"wrote {path} ({len(lines) - 1} rows)")


if __name__ == "__main__":
    main()
