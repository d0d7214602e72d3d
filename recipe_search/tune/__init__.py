"""Running trials: Ray Tune and Optuna (runtime, the two stages, the searcher and samplers, ASHA),
a trial's run and its failures, retries and progress."""
