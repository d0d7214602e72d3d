"""Ray's ASHA, except that it never stops a baseline, a warm start's point, nor a trial that has
finished training.

* Every search confirms both baselines beside its finalists, and reports their
  validation curves in full, which a baseline stopped at an early rung would never
  reach. The baselines still report to their rungs, so they keep setting the
  cut-offs the other trials must beat; only ASHA's STOP for a baseline itself
  becomes CONTINUE.
* A warm start's points (``keep``: other backbones' confirmed recipes, ``search/warm_start.py``)
  are priors like the baselines: each runs to the end. Run first, they met only each other at
  the first rungs, and ASHA stopped one that would have reached the cold search's incumbent
  two epochs later (docs/results.md section 7). A trial is one of them when its config holds
  the point's every value.
* At ``max_t`` (the last epoch) all that is left is the final evaluation, which is
  cheap next to the epochs already paid for; stopping there would only throw the
  trial's final metric away. The result still counts for the rung.

ASHA ranks on the validation objective (val kNN top-1); it never sees a test metric.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..baselines import baseline_name


def is_baseline(trial) -> bool:
    return baseline_name(trial.config) is not None


def is_point(config: dict | None, point: dict) -> bool:
    """Whether a trial's ``config`` runs ``point`` (every value of the point, as given).

    >>> is_point({"lr": 0.1, "temperature": 0.2}, {"lr": 0.1}), is_point({"lr": 0.2}, {"lr": 0.1})
    (True, False)
    """
    config = config or {}
    return bool(point) and all(k in config and config[k] == v for k, v in point.items())


class BaselineSafeASHA(ASHAScheduler):
    def __init__(self, *args, keep: list[dict] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self._keep = [dict(p) for p in keep]  # the warm start's points: run to the end

    def protected(self, trial) -> bool:
        """A baseline or a warm start's point: ASHA never stops it."""
        return is_baseline(trial) or any(is_point(trial.config, p) for p in getattr(self, "_keep", ()))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        done_training = result.get(self._time_attr, 0) >= self._max_t
        if action == TrialScheduler.STOP and (done_training or self.protected(trial)):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
