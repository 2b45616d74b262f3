"""Errors that taleforge raises for things a user can fix.

Every message says what went wrong and what to change; the CLI prints the message alone
(no traceback) and exits with status 2.
"""

from __future__ import annotations


class TaleforgeError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class ConfigError(TaleforgeError, ValueError):
    """A configuration value, preset file or parameter is invalid."""


class ModelNotFoundError(TaleforgeError, LookupError):
    """A model spec names nothing that can be loaded here."""


class ModelLoadError(TaleforgeError, RuntimeError):
    """A model was found but could not be loaded (corrupt files, missing base model, ...)."""


class DiskFullError(TaleforgeError, OSError):
    """The disk filled up while writing; what was written before is intact."""
