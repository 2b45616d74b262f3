"""The web app and HTTP API: ``create_app(config)``, served by ``taleforge serve``."""

from taleforge.serve.app import create_app, serve
from taleforge.serve.registry import BusyError, ModelInfo, ModelRegistry, UnknownModelError

__all__ = ["BusyError", "ModelInfo", "ModelRegistry", "UnknownModelError", "create_app", "serve"]
