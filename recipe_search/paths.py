"""The paths a user gives a search, made absolute once, on the driver, before anything runs.

Ray starts each trial in its own working directory (and a trial on another node has its
own environment), so a relative path read there -- ``--data``, ``$RECIPE_SEARCH_DATA``,
``--space``, ``sqlite:///relative.db`` -- names a file that is not there. The driver
resolves every one against *its* working directory:

* :func:`resolve_settings` rewrites a :class:`~recipe_search.plan.SearchSettings` in place
  (``$RECIPE_SEARCH_DATA`` becomes its ``data``, so the workers and the node preflight
  get the absolute path in the data spec, and ``--resume`` finds it again);
* :func:`absolute_uri` does a tracking or study-storage URI that is a local file;
* :func:`absolute_environment` makes the path variables the local Ray workers inherit
  absolute (``prepare_environment`` calls it before Ray starts).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import SearchSettings

DATA_ENV = "RECIPE_SEARCH_DATA"
# path variables the driver and its local workers read (a URI value is left alone)
PATH_ENVS = (DATA_ENV, "RECIPE_SEARCH_HOME", "RECIPE_SEARCH_CACHE", "RECIPE_SEARCH_STORAGE")
URI_ENVS = ("MLFLOW_TRACKING_URI",)


def absolute_path(path: str) -> str:
    """``path`` with ``~`` expanded, absolute against this process's working directory."""
    return os.path.abspath(os.path.expanduser(path))


def absolute_uri(uri: str) -> str:
    """A URI naming a local file made absolute: ``sqlite:///rel.db`` -> ``sqlite:////cwd/rel.db``,
    ``file:rel`` and a plain path likewise; any other URI (a server, ``sqlite://`` in memory,
    an absolute one) is returned unchanged."""
    for scheme in ("sqlite", "sqlite+pysqlite"):
        prefix = f"{scheme}:///"
        if uri.startswith(prefix):
            rest = uri[len(prefix):]
            path, sep, query = rest.partition("?")
            if not path or path == ":memory:" or path.startswith("/") or path.startswith("file:"):
                return uri
            return f"{prefix}{absolute_path(path)}{sep}{query}"
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return "file:" + absolute_path(uri[len("file:"):])
    if "://" not in uri and uri.startswith((".", "~", "/")) or ("/" in uri and ":" not in uri):
        return absolute_path(uri)  # a plain path (a bare word such as ``databricks`` is a scheme)
    return uri


def resolve_settings(settings: "SearchSettings") -> None:
    """Make every path of ``settings`` absolute (see the module docstring); raises
    :class:`trainer.errors.DataError` when ``$RECIPE_SEARCH_DATA`` names nothing."""
    from trainer.errors import DataError

    if settings.data is None and settings.dataset != "synthetic" and os.environ.get(DATA_ENV):
        given = os.environ[DATA_ENV]
        if "://" not in given:
            root = absolute_path(given)
            if not os.path.exists(root):
                raise DataError(f"${DATA_ENV} path {given!r} does not exist (resolved against {os.getcwd()}: "
                                f"{root}); point it at an ImageFolder directory or a .tar.gz of one")
            settings.data = root
    elif settings.data is not None and "://" not in settings.data:
        settings.data = absolute_path(settings.data)
    if settings.warm_start_file is not None:
        settings.warm_start_file = absolute_path(settings.warm_start_file)
    if settings.space is not None and os.path.exists(os.path.expanduser(str(settings.space))):
        settings.space = absolute_path(str(settings.space))  # a bare name is looked up in search_spaces/
    for name in ("tracking_uri", "study_storage"):
        value = getattr(settings, name)
        if value:
            setattr(settings, name, absolute_uri(value))


def absolute_environment() -> None:
    """Make the path variables of :data:`PATH_ENVS` and :data:`URI_ENVS` absolute in this
    process's environment (which Ray's local workers inherit)."""
    for name in PATH_ENVS:
        value = os.environ.get(name)
        if value and "://" not in value and not os.path.isabs(value):
            os.environ[name] = absolute_path(value)
    for name in URI_ENVS:
        value = os.environ.get(name)
        if value:
            os.environ[name] = absolute_uri(value)
