"""recipe-search: automatic contrastive pretraining recipe search (Ray Tune + Optuna + MLflow)."""

__version__ = "0.1.0"
