"""Incident memory for the Diagnostic: confirmed incidents and corrections as Lessons.

A :class:`LessonMemory` keeps :class:`~plantcrew.detect.diagnosis.Lesson` s in order and
saves them as JSON lines (one lesson per line), so a run's confirmed incidents can seed the
memory of another (``plantcrew eval skab --memory-from``). The crew's durable memory lives
in the store; this is the in-process form the detector functions use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from plantcrew.detect.signatures import Lesson
from plantcrew.errors import ConfigError
from plantcrew.messages import Deviation


def signature_of(deviations: Iterable[Deviation | Mapping[str, Any]]) -> dict[str, float]:
    """The sensor -> z signature of an anomaly: what a lesson stores and what recall compares.

    ``deviations``: :class:`Deviation` s, or their JSON form as an incident keeps them (each
    is validated; a malformed one raises pydantic's ValidationError). Each sensor's last
    deviation counts, and it is left out when it is ``flat``: a stuck sensor repeats one
    value, and its z says where it froze, not what the process did (the physics rules give
    it no direction either). Empty when every sensor is stuck.
    """
    last: dict[str, Deviation] = {}
    for d in deviations:
        dev = d if isinstance(d, Deviation) else Deviation.model_validate(d)
        last[dev.sensor] = dev
    return {s: d.z for s, d in last.items() if d.direction != "flat"}


class LessonMemory:
    """An ordered collection of Lessons with ``confirm``/``correct`` and JSON-lines I/O."""

    def __init__(self, lessons: Iterable[Lesson] = ()) -> None:
        self._lessons = list(lessons)

    def __iter__(self) -> Iterator[Lesson]:
        return iter(self._lessons)

    def __len__(self) -> int:
        return len(self._lessons)

    @property
    def lessons(self) -> list[Lesson]:
        """A copy of the lessons, oldest first."""
        return list(self._lessons)

    def confirm(self, root_cause: str, deviations: Iterable[Deviation]) -> Lesson:
        """Remember a confirmed incident (weight 1)."""
        lesson = Lesson(root_cause=root_cause, signature=signature_of(deviations))
        self._lessons.append(lesson)
        return lesson

    def correct(
        self, root_cause: str, deviations: Iterable[Deviation], *, weight: float = 2.0
    ) -> Lesson:
        """Remember a person's or the Reviewer's correction (``feedback``, weight 2)."""
        lesson = Lesson(
            root_cause=root_cause,
            signature=signature_of(deviations),
            weight=weight,
            source="feedback",
        )
        self._lessons.append(lesson)
        return lesson

    def save(self, path: Path | str) -> None:
        """Write the lessons as JSON lines to ``path``."""
        text = "".join(lesson.model_dump_json() + "\n" for lesson in self._lessons)
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: Path | str) -> LessonMemory:
        """Read lessons written by :meth:`save`; raises ConfigError naming a bad line."""
        lessons = []
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                lessons.append(Lesson.model_validate(json.loads(line)))
            except (ValueError, ValidationError) as exc:
                raise ConfigError(f"not a lesson: {exc}", source=str(path), line=no) from None
        return cls(lessons)
