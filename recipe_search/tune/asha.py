"""Ray's ASHA, except that it never stops a baseline, nor a trial that has finished training.

* Every search confirms both baselines beside its finalists, and reports their
  validation curves in full, which a baseline stopped at an early rung would never
  reach. The baselines still report to their rungs, so they keep setting the
  cut-offs the other trials must beat; only ASHA's STOP for a baseline itself
  becomes CONTINUE.
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


class BaselineSafeASHA(ASHAScheduler):
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        done_training = result.get(self._time_attr, 0) >= self._max_t
        if action == TrialScheduler.STOP and (done_training or is_baseline(trial)):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
