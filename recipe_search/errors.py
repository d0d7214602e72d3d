"""User-facing errors of the search side (the trainer has its own in ``trainer.errors``).

Each message names what is wrong and what is allowed; the CLI prints it as one
line and exits with status 2.
"""


class SearchError(Exception):
    """Base class for user-facing recipe-search errors."""


class SpaceError(SearchError, ValueError):
    """A search-space file is malformed; the message starts with the offending path."""


class ResumeError(SearchError):
    """There is no search to resume, or its saved state cannot be used."""
