"""Streaming anomaly detection, root-cause ranking, incident memory and their metrics.

- :class:`DeviceMonitor` scores each reading of a device and groups anomalous readings into
  episodes (one :class:`~plantcrew.messages.AnomalyDetected` per episode).
- :func:`rank_root_causes` names candidate root causes from an anomaly's deviations, using the
  physics signatures of ``config/signatures.yaml`` and remembered :class:`Lesson` s.
- :mod:`plantcrew.detect.metrics` scores detections as SKAB's leaderboard does.
"""

from plantcrew.detect.calibration import Calibration, CalibrationError
from plantcrew.detect.config import MonitorConfig, load_monitor_config
from plantcrew.detect.diagnosis import (
    UNKNOWN,
    Candidate,
    Lesson,
    Signature,
    SignatureBook,
    default_signatures_path,
    load_signatures,
    rank_root_causes,
)
from plantcrew.detect.memory import LessonMemory, signature_of
from plantcrew.detect.metrics import (
    Confusion,
    confusion,
    detection_delay,
    pooled,
    raised_at,
    skab_rates,
)
from plantcrew.detect.monitor import DETECTOR_NAME, DeviceMonitor, MonitorState, ReadingVerdict
from plantcrew.detect.nab import check_detector_name, detect_nab, score_nab_file
from plantcrew.detect.units import UnitGuard, UnitMismatch

__all__ = [
    "DETECTOR_NAME",
    "UNKNOWN",
    "Calibration",
    "CalibrationError",
    "Candidate",
    "Confusion",
    "DeviceMonitor",
    "Lesson",
    "LessonMemory",
    "MonitorConfig",
    "MonitorState",
    "ReadingVerdict",
    "Signature",
    "SignatureBook",
    "UnitGuard",
    "UnitMismatch",
    "check_detector_name",
    "confusion",
    "default_signatures_path",
    "detect_nab",
    "detection_delay",
    "load_monitor_config",
    "load_signatures",
    "pooled",
    "raised_at",
    "rank_root_causes",
    "score_nab_file",
    "signature_of",
    "skab_rates",
]
