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
  two epochs later (docs/results.md section 7). A trial is one of them when its config's
  ``point_key`` is one of ``keep`` (the keys the MLflow logger names a warm trial by: the trial
  context's ``warm``, ``search/warm_start.trial_key``, which nests dotted names as Tune does).
* At ``max_t`` (the last epoch) all that is left is the final evaluation, which is
  cheap next to the epochs already paid for; stopping there would only throw the
  trial's final metric away. The result still counts for the rung.

ASHA ranks on the validation objective (val kNN top-1); it never sees a test metric.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..baselines import baseline_name
from ..tracking import point_key


def is_baseline(trial) -> bool:
    return baseline_name(trial.config) is not None


class BaselineSafeASHA(ASHAScheduler):
    def __init__(self, *args, keep=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._keep = frozenset(keep)  # the warm start's points (their trial keys): run to the end

    def protected(self, trial) -> bool:
        """A baseline or a warm start's point: ASHA never stops it."""
        return is_baseline(trial) or point_key(trial.config or {}) in getattr(self, "_keep", ())

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        done_training = result.get(self._time_attr, 0) >= self._max_t
        if action == TrialScheduler.STOP and (done_training or self.protected(trial)):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
