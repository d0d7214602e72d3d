"""Errors the trainer raises on bad input.

Every error carries a message meant for a user: it names the field or path at
fault and what is allowed. Command-line entry points print the message and exit
non-zero instead of dumping a traceback.
"""


class TrainerError(Exception):
    """Base class for user-facing trainer errors."""


class RecipeError(TrainerError, ValueError):
    """A recipe field is missing, of the wrong type, or out of range."""


class DataError(TrainerError):
    """A dataset cannot be found, read or decoded."""


class DeviceError(TrainerError):
    """A device was asked for and is absent."""


class CheckpointError(TrainerError):
    """A checkpoint is missing, corrupt or belongs to another recipe."""


def either(names) -> str:
    """``"sgd, lars or adamw"``: the allowed values of a field, in a message."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
