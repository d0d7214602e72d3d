"""Ray's ASHA, except that it never stops a baseline, nor a trial that has finished training.

* Every search reports its lift over the baselines in linear-probe top-1, which a
  baseline stopped at an early rung would never reach. The baselines still report
  to their rungs, so they keep setting the cut-offs the other trials must beat;
  only ASHA's STOP for a baseline itself becomes CONTINUE.
* At ``max_t`` (the last epoch) all that is left is the linear probe, which is
  cheap next to the epochs already paid for; stopping there would only throw the
  trial's final metric away. The result still counts for the rung.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class BaselineSafeASHA(ASHAScheduler):
    def __init__(self, *, baseline_points: list[dict], **kwargs):
        super().__init__(**kwargs)
        self._baseline_points = [dict(p) for p in baseline_points]

    def is_baseline(self, trial) -> bool:
        config = trial.config or {}
        return any(all(config.get(k) == v for k, v in p.items()) for p in self._baseline_points)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        done_training = result.get(self._time_attr, 0) >= self._max_t
        if action == TrialScheduler.STOP and (done_training or self.is_baseline(trial)):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
