"""The memory a diagnose task carries: bounded, identical lessons merged, same diagnosis."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantcrew.crews import recall as recall_module
from plantcrew.crews.recall import LessonRecall
from plantcrew.detect import default_signatures_path, load_signatures
from plantcrew.detect.diagnosis import rank_root_causes, similarity
from plantcrew.detect.memory import signature_of
from plantcrew.detect.signatures import Lesson as MemoryLesson
from plantcrew.store import Lesson, Store
from tests.detect.test_diagnosis import devs, pct


def store_with(tmp_path: Path, lessons: list[Lesson]) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.tx() as s:
        for lesson in lessons:
            s.add(lesson)
    return store


def test_identical_lessons_merge_into_one_with_their_count_and_summed_weight(
    tmp_path: Path,
) -> None:
    a, b = {"flow_rate": -2.0, "pressure": 1.0}, {"vibration_1": 3.0}
    store = store_with(
        tmp_path,
        [
            *[Lesson(root_cause="inlet_valve_closure", signature=a) for _ in range(300)],
            Lesson(root_cause="rotor_imbalance", signature=b),
            Lesson(root_cause="inlet_valve_closure", signature=a, source="feedback", weight=2.0),
            Lesson(root_cause="inlet_valve_closure", signature=a, source="feedback", weight=2.0),
        ],
    )
    with store.tx() as s:
        out = LessonRecall().lessons(s, 1000)
    assert out == [
        {
            "root_cause": "inlet_valve_closure",
            "signature": a,
            "weight": 300.0,
            "source": "confirmed",
            "count": 300,
        },
        {
            "root_cause": "rotor_imbalance",
            "signature": b,
            "weight": 1.0,
            "source": "confirmed",
            "count": 1,
        },
        {
            "root_cause": "inlet_valve_closure",
            "signature": a,
            "weight": 4.0,
            "source": "feedback",
            "count": 2,
        },
    ]


def test_the_newest_lessons_are_kept_and_corrections_are_not_crowded_out(
    tmp_path: Path,
) -> None:
    confirmed = [
        Lesson(root_cause="cavitation", signature={"flow_rate": -float(i + 1)}) for i in range(50)
    ]
    correction = Lesson(
        root_cause="outlet_valve_closure",
        signature={"pressure": 4.0},
        source="feedback",
        weight=2.0,
    )
    store = store_with(tmp_path, [correction, *confirmed])
    with store.tx() as s:
        out = LessonRecall().lessons(s, 10)
    kept = [x["signature"]["flow_rate"] for x in out if x["source"] == "confirmed"]
    assert kept == [-float(i + 1) for i in range(40, 50)]  # the ten newest, oldest first
    assert [x["root_cause"] for x in out if x["source"] == "feedback"] == ["outlet_valve_closure"]


def test_a_merged_lesson_ranks_as_its_copies_do() -> None:
    book = load_signatures(default_signatures_path())
    seen = devs(flow_rate=pct("flow_rate", -3), motor_temperature=-1.0)
    sig = signature_of(seen)
    copies = [MemoryLesson(root_cause="outlet_valve_closure", signature=sig) for _ in range(5)]
    merged = [MemoryLesson(root_cause="outlet_valve_closure", signature=sig, weight=5.0, count=5)]
    by_copies = rank_root_causes(seen, book, copies)
    by_merged = rank_root_causes(seen, book, merged)
    assert [(c.root_cause, c.score) for c in by_copies] == [
        (c.root_cause, c.score) for c in by_merged
    ]
    assert by_copies[0].evidence == by_merged[0].evidence
    assert any("recalls 5 confirmed" in e for c in by_merged for e in c.evidence)


def test_a_task_carries_only_the_lessons_recall_can_use_and_ranks_the_same(
    tmp_path: Path,
) -> None:
    # a plant that has learnt many distinct lessons: the diagnose task carries those the
    # Diagnostic's recall would use (similar enough), and the diagnosis is the same as with all
    book = load_signatures(default_signatures_path())
    seen = devs(flow_rate=pct("flow_rate", -3), motor_temperature=-1.0)
    near = signature_of(devs(flow_rate=pct("flow_rate", -3.1), motor_temperature=-1.0))
    far = [
        signature_of(devs(**{sensor: pct(sensor, 5 + i) if sensor != "fluid_temperature" else 1.0}))
        for i, sensor in enumerate(["vibration_1", "vibration_2", "current", "fluid_temperature"])
        for _ in range(200)
    ]
    store = store_with(tmp_path, [
        *[Lesson(root_cause="cavitation", signature=sig) for sig in far],
        Lesson(root_cause="outlet_valve_closure", signature=near),
        Lesson(root_cause="rotor_imbalance", signature=far[0], source="feedback"),
    ])  # fmt: skip
    recall = LessonRecall(book)
    with store.tx() as s:
        every = LessonRecall().lessons(s, 1000)
        kept = recall.lessons(s, 1000, seen)
        again = recall.lessons(s, 1000, seen)  # rows now come from its cache
    assert len(every) == 6 and again == kept
    assert [(x["root_cause"], x["signature"]) for x in kept] == [("outlet_valve_closure", near)]
    ranked = rank_root_causes(seen, book, [MemoryLesson.model_validate(x) for x in every])
    assert rank_root_causes(seen, book, [MemoryLesson.model_validate(x) for x in kept]) == ranked
    assert any("recalls 1 confirmed" in e for e in ranked[0].evidence)


def test_lessons_learnt_after_a_call_are_read_by_the_next(tmp_path: Path) -> None:
    a = {"flow_rate": -2.0, "pressure": 1.0}
    store = store_with(tmp_path, [Lesson(root_cause="inlet_valve_closure", signature=a)])
    recall = LessonRecall()
    with store.tx() as s:
        assert [x["count"] for x in recall.lessons(s, 2)] == [1]
    with store.tx() as s:
        s.add(Lesson(root_cause="inlet_valve_closure", signature=a, weight=2.0))
        s.add(Lesson(root_cause="cavitation", signature={"flow_rate": -9.0}))
    with store.tx() as s:
        out = recall.lessons(s, 2)  # the two newest: the first lesson has dropped out
    assert [(x["root_cause"], x["weight"], x["count"]) for x in out] == [
        ("inlet_valve_closure", 2.0, 1),
        ("cavitation", 1.0, 1),
    ]


def test_a_signature_is_compared_once_however_many_lessons_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lessons of a recurring fault share their signature: one comparison decides for all of
    # them (it was most of the Coordinator's CPU for a new incident with many lessons)
    book = load_signatures(default_signatures_path())
    seen = devs(flow_rate=pct("flow_rate", -3), motor_temperature=-1.0)
    near = signature_of(devs(flow_rate=pct("flow_rate", -3.1), motor_temperature=-1.0))
    far = signature_of(devs(vibration_1=pct("vibration_1", 5)))
    store = store_with(tmp_path, [
        *[Lesson(root_cause=cause, signature=sig, source=source)
          for cause in ("outlet_valve_closure", "cavitation")
          for source in ("confirmed", "feedback")
          for sig in (near, far)
          for _ in range(100)],
    ])  # fmt: skip
    compared: list[dict[str, float]] = []

    def counted(a: dict[str, float], b: dict[str, float]) -> float:
        compared.append(b)
        return similarity(a, b)

    monkeypatch.setattr(recall_module, "similarity", counted)
    with store.tx() as s:
        kept = LessonRecall(book).lessons(s, 1000, seen)
    assert len(compared) == 2  # near and far, once each
    assert sorted((x["root_cause"], x["source"], x["count"]) for x in kept) == [
        ("cavitation", "confirmed", 100), ("cavitation", "feedback", 100),
        ("outlet_valve_closure", "confirmed", 100), ("outlet_valve_closure", "feedback", 100),
    ]  # fmt: skip
    assert all(x["signature"] == near for x in kept)
