"""Seeded test data for the k-means tests: value distributions like real weights."""

from __future__ import annotations

import torch


def distribution(name: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "normal":
        return torch.randn(n, generator=g)
    if name == "laplace":
        u = torch.rand(n, generator=g) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    if name == "bimodal":
        a = torch.randn(n, generator=g)
        return torch.where(torch.rand(n, generator=g) < 0.3, 0.3 * a - 2.0, 0.5 * a + 1.0)
    if name == "trained":  # peaked, heavy-tailed, slightly skewed: like a trained layer
        z = torch.randn(n, generator=g)
        chi = torch.randn(n, 3, generator=g).pow(2).sum(1) / 3  # Student-t with 3 dof
        return 0.05 * z / chi.sqrt() + 0.002
    if name == "pruned":  # a magnitude-pruned layer's survivors: two tails, a gap at zero
        z = 0.05 * torch.randn(n * 3, generator=g)
        return z[z.abs() > 0.05][:n]
    raise ValueError(name)
