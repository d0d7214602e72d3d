"""recipe-search's training engine: recipe in, metrics out.

>>> from trainer import Recipe, DataSpec, train          # doctest: +SKIP
>>> result = train(Recipe(backbone="resnet18"), DataSpec(root="cifar10.tar.gz"))  # doctest: +SKIP
>>> result.metrics["test_probe_top1"]                    # doctest: +SKIP
"""

from .data import DataSpec, ProxyData, fit_spec, load_proxy
from .engine import StopTraining, TrainingRun, TrainResult, random_init_metrics, train
from .errors import CheckpointError, DataError, DeviceError, RecipeError, TrainerError
from .recipe import Distill, Recipe

__all__ = ["Recipe", "Distill", "DataSpec", "ProxyData", "load_proxy", "fit_spec", "train", "TrainResult",
           "StopTraining", "TrainingRun", "random_init_metrics", "TrainerError", "RecipeError", "DataError",
           "DeviceError", "CheckpointError"]
