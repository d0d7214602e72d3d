"""The records recipe-search keeps in MLflow: one place for every ``rs.*`` tag name, the typed
record of each kind of run that writes and reads them, and the filter strings that find runs.

* :mod:`.tags` -- the tag names (the stored format; never renamed), the kinds, :func:`filter`;
* :mod:`.runs` -- :class:`Search` (a search's parent run), :class:`Trial` (a search-stage trial),
  :class:`Confirmation` (a confirmation run, phase select or report), :class:`Training`;
* :mod:`.promotion` -- :class:`Promotion` (a run of the recipe store).

Use it as ``from recipe_search import records``: ``records.filter(kind=records.TRIAL,
search_id=sid)``, ``records.Trial.read(run.data.tags)``, ``records.Search(status="failed").to_tags()``.
"""

from .promotion import (CURRENT, MAX_TAG, PENDING, SCHEMA, SUPERSEDED, WITHHELD, Promotion, shrink,
                        val_scores)
from .runs import Confirmation, RunRecord, Search, Training, Trial
from .tags import *  # noqa: F401,F403 - the tag names and kinds
from .tags import FILTER_ATTRIBUTES, FILTER_TAGS, filter, filterable, reused_tag  # noqa: A004

__all__ = [
    "CURRENT", "MAX_TAG", "PENDING", "SCHEMA", "SUPERSEDED", "WITHHELD", "Promotion", "shrink", "val_scores",
    "Confirmation", "RunRecord", "Search", "Training", "Trial",
    "FILTER_ATTRIBUTES", "FILTER_TAGS", "filter", "filterable", "reused_tag",
]
