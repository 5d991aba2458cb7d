"""Structured pruning made physical: the graph walk, ``shrink``, and the Torch-Pruning adapter."""

from .graph import Blocked, following_batchnorms, register_channel_op
from .rebuild import UnsupportedGraphError, shrink
from .tp import TP_IMPORTANCES, PrunekitImportance, tp_prune

__all__ = [
    "shrink",
    "UnsupportedGraphError",
    "following_batchnorms",
    "register_channel_op",
    "Blocked",
    "tp_prune",
    "PrunekitImportance",
    "TP_IMPORTANCES",
]
