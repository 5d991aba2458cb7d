"""Magnitude methods (``l1``, ``l2``), the ``random`` baseline, and structured ``channel``/``kernel``."""

from __future__ import annotations

import torch
from torch import nn

from .. import scores as S
from .._validation import check_int, check_p
from .base import Method

__all__ = ["MagnitudeMethod", "RandomMethod", "ChannelMethod", "KernelMethod", "RandomChannelMethod"]


class MagnitudeMethod(Method):
    """Unstructured magnitude pruning, ``|w|`` (``"l1"``) or ``w**2`` (``"l2"``).

    Both rank single weights identically; the two names exist because the book compares
    them as *regularisers* and for groups, where they differ.
    """

    granularity = "weight"
    options: dict = {}

    def __init__(self, name: str, p: int):
        self.name, self.p = name, p

    def scores(self, name, module, weight, options):
        return S.magnitude_scores(weight, self.p)


class RandomMethod(Method):
    """Unstructured random pruning: the baseline every experiment needs (option ``seed``).

    Scores are uniform random numbers from a generator seeded with ``seed`` (default 0),
    drawn per layer in model order, so the same call prunes the same weights.
    """

    name = "random"
    granularity = "weight"
    options = {"seed": 0}

    def prepare(self, model, layers, options):
        check_int(options["seed"], "prune", "seed")
        return {**options, "_generator": torch.Generator().manual_seed(options["seed"])}

    def scores(self, name, module, weight, options):
        r = torch.rand(weight.shape, generator=options["_generator"], dtype=torch.float64)
        return r.to(weight.device)


class ChannelMethod(Method):
    """Whole output channels by Lp norm (option ``p``, default 1), with bias and BatchNorm."""

    name = "channel"
    granularity = "channel"
    options = {"p": 1}

    def check_options(self, options, caller):
        options = super().check_options(options, caller)
        check_p(options["p"], caller)
        return options

    def scores(self, name, module, weight, options):
        return S.channel_scores(weight, options["p"])


class KernelMethod(ChannelMethod):
    """Whole ``k x k`` kernels of ``Conv2d`` layers by Lp norm (option ``p``, default 1)."""

    name = "kernel"
    granularity = "kernel"

    def applies_to(self, module):
        return isinstance(module, nn.Conv2d)

    def describe_targets(self):
        return "nn.Conv2d weights"

    def scores(self, name, module, weight, options):
        return S.kernel_scores(weight, options["p"])


class RandomChannelMethod(ChannelMethod):
    """Whole output channels chosen at random (option ``seed``, default 0): the baseline of
    Li et al. (2017) for filter pruning. Bias and BatchNorm go with the channel, as for
    ``"channel"``; the same call prunes the same channels."""

    name = "random_channel"
    options = {"seed": 0}

    def check_options(self, options, caller):
        return Method.check_options(self, options, caller)

    def prepare(self, model, layers, options):
        check_int(options["seed"], "prune", "seed")
        return {**options, "_generator": torch.Generator().manual_seed(options["seed"])}

    def scores(self, name, module, weight, options):
        r = torch.rand(weight.shape[0], generator=options["_generator"], dtype=torch.float64)
        return r.to(weight.device)
