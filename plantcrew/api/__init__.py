"""The HTTP service of plantcrew (``plantcrew serve``): API, web console, probes, metrics."""

from plantcrew.api.app import API_PREFIX, create_app
from plantcrew.api.config import ApiSettings

__all__ = ["API_PREFIX", "ApiSettings", "create_app"]
