"""plantcrew: a crew of role agents for automated anomaly response in industrial and IoT plants.

Importing plantcrew sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (as ``plantcrew.settings`` does)
so litellm never downloads its cost map at import.

The names below are imported on first use, not with the package: the ``plantcrew`` command
(``plantcrew/__main__.py``) installs its signal handlers before anything heavy (pydantic, the
message models) is imported, so that a Ctrl-C or SIGTERM while it starts ends it quietly.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if TYPE_CHECKING:
    from plantcrew.errors import ConfigError, MessageValidationError, PlantcrewError
    from plantcrew.messages import Capability, Message, Subjects
    from plantcrew.settings import Settings, get_settings

__version__ = "0.1.0"
_FROM = {
    "Capability": "plantcrew.messages",
    "ConfigError": "plantcrew.errors",
    "Message": "plantcrew.messages",
    "MessageValidationError": "plantcrew.errors",
    "PlantcrewError": "plantcrew.errors",
    "Settings": "plantcrew.settings",
    "Subjects": "plantcrew.messages",
    "get_settings": "plantcrew.settings",
}


def __getattr__(name: str) -> Any:
    """``plantcrew.<name>`` for the names of ``__all__``, imported on first use; AttributeError
    for any other name (``from plantcrew import metrics`` then imports the submodule)."""
    if name not in _FROM:
        raise AttributeError(f"module 'plantcrew' has no attribute {name!r}")
    value = getattr(importlib.import_module(_FROM[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "Capability",
    "ConfigError",
    "Message",
    "MessageValidationError",
    "PlantcrewError",
    "Settings",
    "Subjects",
    "__version__",
    "get_settings",
]
