"""Benchmark: how fast the simulated plant runs plant time.

Run: ``/work/venv/bin/python bench/plant.py [--hours H] [--repeat R]``

Prints, for the default plant (pump1, two valves, tank1) with a cavitation fault and three
commands, the wall time of one hour of plant time at dt = 1 s: stepping with telemetry
batches (what a scenario run does), and rebuilding the same state by ``replay_to`` (what crash
recovery does). The best of ``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import sys
import time

from plantcrew.plant import FaultSpec, SimulatedPlant, default_plant

FAULTS = [FaultSpec(type="cavitation", device="pump1", at=600)]
COMMANDS = [
    (900.0, "pump1", "set_speed", {"speed_pct": 80}),
    (1800.0, "outlet_valve", "set_position", {"position_pct": 70}),
    (2700.0, "pump1", "stop", {}),
]


def _stepping(seconds: float) -> tuple[float, int]:
    plant = SimulatedPlant(default_plant(), FAULTS, seed=1)
    pending = list(COMMANDS)
    readings = 0
    t0 = time.perf_counter()
    while plant.t < seconds:
        while pending and pending[0][0] == plant.t:
            _, device, command, params = pending.pop(0)
            plant.apply(device, command, params)
        readings += sum(len(b.readings) for b in plant.step())
    return time.perf_counter() - t0, readings


def _replay(seconds: float) -> float:
    t0 = time.perf_counter()
    SimulatedPlant(default_plant(), FAULTS, seed=1).replay_to(seconds, COMMANDS)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    seconds = args.hours * 3600.0
    runs = [_stepping(seconds) for _ in range(args.repeat)]
    step_s = min(r[0] for r in runs)
    readings = runs[0][1]
    replay_s = min(_replay(seconds) for _ in range(args.repeat))
    print(f"command: {sys.executable} bench/plant.py --hours {args.hours:g} --repeat {args.repeat}")
    print(f"plant time: {seconds:.0f} s at dt=1 s, {readings} readings")
    print(
        f"step() with telemetry batches: {step_s:.3f} s wall "
        f"({seconds / step_s:.0f}x real time, {readings / step_s:.0f} readings/s)"
    )
    print(
        f"replay_to (no batches):        {replay_s:.3f} s wall "
        f"({seconds / replay_s:.0f}x real time)"
    )


if __name__ == "__main__":
    main()
