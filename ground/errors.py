"""One exception hierarchy for user-facing failures, each with an exit code.

The CLI catches :class:`Art2MusError` once and prints ``Error: <message>``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Art2MusError(Exception):
    """Base for errors caused by the user's input or environment."""

    exit_code = 1


class ConfigError(Art2MusError):
    """A config file that cannot be read or does not validate."""

    exit_code = 2


class InputError(Art2MusError):
    """A bad input file or argument (image, audio, model folder)."""

    exit_code = 3


class DependencyError(Art2MusError):
    """An optional dependency that a feature needs is not installed."""

    exit_code = 4


class RoleFailed(Art2MusError):
    """A role could not be kept running by the supervisor."""

    exit_code = 5
