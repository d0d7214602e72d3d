"""What a search measured on: the proxy data's digest and the budget's shape, as one key.

Two searches may share a stored recipe slot only when they trained and evaluated on the
same images (class list and every split's pixels and labels: ``ProxyData.fingerprint``)
with the same image size, per-class sizes and epochs, under the same evaluation protocol
(``EVALUATION``: since precise BN statistics, figures measured before are not comparable). The 16-hex ``digest`` is the
recipe store's key (with backbone and dataset name); the MLflow dataset input logged on
every run carries the data digest, so the UI's Dataset column shows what each trial saw.
"""

from __future__ import annotations

import hashlib
import json

EVALUATION = "precise-bn-v1"  # how encoders are evaluated (trainer.precise_bn); part of the digest

def fingerprint(proxy, *, dataset: str, budget: str, image_size: int, epochs: int, spec) -> dict:
    """``{"digest", "data_digest", ...shape}`` of ``proxy`` (a ``trainer.ProxyData``) under a budget."""
    shape = {"image_size": int(image_size), "classes": proxy.num_classes,
             "train_per_class": spec.train_per_class, "val_per_class": spec.val_per_class,
             "test_per_class": spec.test_per_class, "epochs": int(epochs), "evaluation": EVALUATION}
    data_digest = proxy.fingerprint()
    digest = hashlib.sha256(json.dumps({"data": data_digest, **shape}, sort_keys=True).encode()).hexdigest()[:16]
    return {"digest": digest, "data_digest": data_digest, "dataset": dataset, "budget": budget, **shape,
            "sizes": proxy.sizes()}


def mlflow_dataset(fp: dict, source: str | None):
    """The proxy as an ``mlflow.entities.Dataset`` (name, data digest, sizes as its profile)."""
    from mlflow.entities import Dataset

    return Dataset(name=f"{fp['dataset']}-proxy-{fp['digest']}", digest=fp["data_digest"][:32],
                   source_type="local", source=json.dumps({"uri": source or fp["dataset"]}),
                   profile=json.dumps({**fp["sizes"], "image_size": fp["image_size"]}))
