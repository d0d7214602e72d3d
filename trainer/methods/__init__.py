"""Self-supervised methods, one module each, registered by name (:data:`METHODS`).

``base`` holds the interface (:class:`Method`) and the registry; each method module registers
its class with ``@register_method`` when imported, and is imported here once.
"""

from .base import METHODS, Method, StepLoss, create_method, get_method, register_method
from . import mocov2, simclr  # noqa: E402,F401  (each registers itself)

__all__ = ["METHODS", "Method", "StepLoss", "create_method", "get_method", "register_method"]
