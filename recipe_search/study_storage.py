"""The optional Optuna RDB storage of a search's study (``--study-storage``): check and open a
SQLAlchemy URL (its password masked in every message, :func:`redact_url`), name the study,
and find one left by another driver."""

from __future__ import annotations

from .errors import SearchError


def redact_url(url: str) -> str:
    """The URL with its password masked (``***``); unparseable URLs are returned unchanged."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


def check_study_storage_url(url: str) -> None:
    """A well-formed SQLAlchemy URL whose driver is installed (SearchError otherwise)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception as e:  # noqa: BLE001 - sqlalchemy.exc.ArgumentError
        raise SearchError(f"--study-storage {url!r} is not a SQLAlchemy URL (e.g. "
                          f"postgresql://user:pass@host:5432/db or sqlite:///optuna.db): {e}") from None
    try:
        u.get_dialect()
    except Exception as e:  # noqa: BLE001 - NoSuchModuleError
        raise SearchError(f"--study-storage {redact_url(url)}: unknown database dialect: {e}") from None


def open_study_storage(url: str):
    """optuna.storages.RDBStorage for ``url``; connection/driver failures raise SearchError."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as e:  # noqa: BLE001 - ImportError (no driver), OperationalError, ...
        raise SearchError(f"--study-storage {redact_url(url)} unavailable: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None


def study_name(search_id: str) -> str:
    return f"recipe-search:{search_id}"


def existing_study(storage, name: str):
    """The study ``name`` in ``storage`` with its trials left RUNNING by a dead driver marked
    FAIL (they are asked again), or None when there is no such study."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    study_id = storage.get_study_id_from_name(name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            try:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already finished by someone else
                pass
    return study
