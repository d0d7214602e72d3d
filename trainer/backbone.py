"""timm backbones as contrastive encoders.

``create_backbone`` builds any timm model with ``num_classes=0`` (the pooled
feature vector is the representation) and adapts its stem to small inputs:

* below 96 px (CIFAR-size images) the first strided convolution of the stem
  gets stride 1 and a stem max-pool (ResNets) is removed, so a 32 px image
  keeps 4x more spatial resolution through the network. This is the usual
  CIFAR adaptation (as in the MoCo CIFAR demo and solo-learn) applied
  generically: it works for ResNets, MobileNetV3, EfficientNet and most timm
  convnets. Transformers whose stem is a patch embedding are left unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import CheckpointError
from .recipe import check_backbone

SMALL_INPUT = 96


def create_backbone(name: str, image_size: int) -> tuple[nn.Module, int]:
    """Return ``(model, feature_dim)`` for timm model ``name`` without its classifier."""
    import timm

    check_backbone(name)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    if image_size < SMALL_INPUT:
        adapt_small_input(model)
    return model, feature_dim(model, image_size)


@torch.no_grad()
def feature_dim(model: nn.Module, image_size: int) -> int:
    """Width of the pooled output (timm's num_features is pre-head for MobileNetV3)."""
    dim = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"backbone output must be [B, D] with num_classes=0, got {tuple(out.shape)}")
    return int(out.shape[1]) if out.shape[1] else int(dim)


def adapt_small_input(model: nn.Module) -> bool:
    """Give the stem stride 1 and drop a stem max-pool. Returns True if changed."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.stride == (1, 1):
        return False
    if first.kernel_size[0] == first.stride[0] and first.stride[0] > 2:
        return False  # a patch embedding, not a conv stem
    first.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    return True


def save_encoder(path: str, backbone: nn.Module, recipe_dict: dict, feature_dim: int) -> None:
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    torch.save(
        {"format": "recipe-search-encoder/1", "backbone": recipe_dict["backbone"],
         "image_size": recipe_dict["image_size"], "feature_dim": feature_dim,
         "recipe": recipe_dict, "state_dict": state},
        path,
    )


def load_encoder(path: str) -> tuple[nn.Module, dict]:
    """Load an exported encoder: ``(backbone, payload)``; raises CheckpointError."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"encoder checkpoint {path!r} does not exist") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"encoder checkpoint {path!r} is corrupt or unreadable: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != "recipe-search-encoder/1":
        raise CheckpointError(f"{path!r} is not a recipe-search encoder checkpoint")
    model, _ = create_backbone(payload["backbone"], payload["image_size"])
    model.load_state_dict(payload["state_dict"])
    return model, payload
