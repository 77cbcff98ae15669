"""plantcrew: a crew of role agents for automated anomaly response in industrial and IoT plants.

Importing plantcrew sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (see ``plantcrew.settings``) so
litellm never downloads its cost map at import.
"""

from plantcrew.errors import ConfigError, MessageValidationError, PlantcrewError
from plantcrew.messages import Capability, Message, Subjects
from plantcrew.settings import Settings, get_settings

__version__ = "0.1.0"
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
