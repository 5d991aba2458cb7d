"""Train, evaluate and fine-tune with pruning masks kept in force."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from ._modules import eval_mode, model_device
from ._progress import progress_bar
from ._validation import argument_error, check_choice, check_int
from .reparam import pruned_tensor_names
from .targets import targets

__all__ = ["seed_everything", "train", "fine_tune", "evaluate", "penalty"]

OPTIMIZERS = ("sgd", "adam")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random number generators."""
    check_int(seed, "seed_everything", "seed")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def penalty(model: nn.Module, l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1 * sum|w| + l2 * sum w**2`` over the weights of every Linear/Conv layer.

    Pruned layers contribute their masked weights (``layer.weight``), so the penalty
    never pushes on weights that are already gone. Biases are not penalised.
    """
    total = None
    for t in targets(model):
        w = getattr(t.module, t.tensor)
        term = 0.0
        if l1:
            term = term + l1 * w.abs().sum()
        if l2:
            term = term + l2 * w.square().sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device=None) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` (in eval mode; the mode is restored).

    Examples:
        >>> import torch, prunekit as pk
        >>> train, test = pk.data.loaders("digits")
        >>> 0.0 <= pk.training.evaluate(pk.models.MLP(), test) <= 1.0
        True
    """
    device = model_device(model, device)
    correct = total = 0
    with eval_mode(model):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    if total == 0:
        raise argument_error(ValueError, "loader", "evaluate", "yielded no samples.")
    return correct / total


def train(model: nn.Module, loader, *, epochs: int = 1, lr: float = 0.05,
          optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 0.0,
          l1: float = 0.0, l2: float = 0.0, loss_fn=None, test_loader=None,
          callback=None, device=None, progress: bool = True, desc: str = "train") -> list[dict]:
    """Train ``model`` in place with SGD (momentum) or Adam and cross-entropy.

    Args:
        model: the model; pruned layers keep their masks (gradients of pruned entries are 0).
        loader: iterable of ``(inputs, targets)`` batches.
        epochs: passes over ``loader``.
        lr, momentum, weight_decay: optimizer settings (``momentum`` is ignored by Adam).
        optimizer: ``"sgd"`` or ``"adam"``, or an existing ``torch.optim.Optimizer``
            (its settings are used; ``lr`` etc. are ignored).
        l1, l2: strengths of an L1 / L2 penalty on the Linear/Conv weights (see
            :func:`penalty`), the regularisers of chapter 1.
        loss_fn: defaults to ``nn.CrossEntropyLoss()``.
        test_loader: if given, test accuracy is recorded after every epoch.
        callback: ``callback(epoch, model)`` called after every epoch (e.g. to prune
            gradually); epochs count from 1.
        device: defaults to the device of the model's parameters.
        progress: show a tqdm progress bar.
        desc: label of the progress bar.

    Returns:
        One dict per epoch: ``epoch``, ``loss`` (mean training loss, penalty excluded) and,
        with ``test_loader``, ``test_accuracy``.
    """
    epochs = check_int(epochs, "train", "epochs", minimum=0)
    device = model_device(model, device)
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    else:
        check_choice(optimizer, OPTIMIZERS, "train", "optimizer")
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    history = []
    bar = progress_bar(total=epochs * len(loader), desc=desc, enabled=progress)
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            running, seen = 0.0, 0
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                loss = loss_fn(model(x), y)
                total = loss + penalty(model, l1, l2) if (l1 or l2) else loss
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                running += float(loss.detach()) * len(y)
                seen += len(y)
                bar.update(1)
            record = {"epoch": epoch, "loss": running / max(seen, 1)}
            if test_loader is not None:
                record["test_accuracy"] = evaluate(model, test_loader, device=device)
                model.train()
            history.append(record)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"}, refresh=False)
            if callback is not None:
                callback(epoch, model)
    finally:
        bar.close()
    return history


def fine_tune(model: nn.Module, loader, *, epochs: int = 1, lr: float = 0.01, **kwargs) -> list[dict]:
    """Retrain a pruned model with its masks in force (Han et al.'s retraining step).

    Same arguments as :func:`train` (with a smaller default learning rate: Han et al.
    retrain at a fraction of the original rate). Raises ``ValueError`` if the model has
    no pruning masks (after :func:`prunekit.remove` nothing would keep the zeros).
    """
    masked = [(m, n) for m in model.modules() for n in pruned_tensor_names(m)]
    if not masked:
        raise argument_error(
            ValueError, "model", "fine_tune", "must be a model pruned with prunekit (masks "
            "attached); this one has none, so nothing would keep pruned weights at zero. Use "
            "train() for dense models.")
    return train(model, loader, epochs=epochs, lr=lr, desc=kwargs.pop("desc", "fine-tune"), **kwargs)
