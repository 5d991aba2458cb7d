"""Example networks with named layers: MLPs, LeNet-300-100, LeNet-5, a small VGG, TinyResNet."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._validation import invalid

__all__ = ["MLP", "LeNet300100", "LeNet5", "VGG", "VGG_SMALL", "TinyResNet", "CharTransformer"]


class MLP(nn.Sequential):
    """A ReLU multilayer perceptron ``in -> hidden... -> out`` with layers ``fc1, fc2, ...``.

    Args:
        in_features: input size (64 for 8x8 digits, 784 for MNIST).
        hidden: sizes of the hidden layers.
        n_classes: output size.

    Examples:
        >>> import prunekit as pk
        >>> pk.models.MLP(64, (32,), 10)
        MLP(
          (fc1): Linear(in_features=64, out_features=32, bias=True)
          (relu1): ReLU()
          (fc2): Linear(in_features=32, out_features=10, bias=True)
        )
    """

    def __init__(self, in_features: int = 64, hidden=(128, 64), n_classes: int = 10):
        sizes = [in_features, *hidden, n_classes]
        layers = OrderedDict()
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
            layers[f"fc{i}"] = nn.Linear(a, b)
            if i < len(sizes) - 1:
                layers[f"relu{i}"] = nn.ReLU()
        super().__init__(layers)


class LeNet300100(MLP):
    """LeNet-300-100 (LeCun et al. 1998): 784-300-100-10, 266,610 parameters on MNIST.

    The fully connected network of Han et al. 2015's first experiment (12x compression).
    """

    def __init__(self, in_features: int = 784, n_classes: int = 10):
        super().__init__(in_features, (300, 100), n_classes)


class LeNet5(nn.Sequential):
    """LeNet-5 as in Caffe, Han et al. 2015 and SNIP (431,080 parameters on 28x28 MNIST).

    ``conv1`` 20 filters 5x5 -> max-pool 2 -> ``conv2`` 50 filters 5x5 -> max-pool 2 ->
    ``fc1`` 800 -> 500 -> ReLU -> ``fc2`` 500 -> 10. (Not LeCun 1998's original LeNet-5.)

    Args:
        in_channels: 1 for MNIST.
        image_size: 28 for MNIST; 8x8 digits are too small for two 5x5 convolutions.
        n_classes: output size.
        batch_norm: add BatchNorm after each convolution (useful for channel pruning).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, n_classes: int = 10,
                 batch_norm: bool = False):
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise invalid(ValueError, "image_size", "LeNet5", "at least 16", repr(image_size))
        layers = OrderedDict()
        layers["conv1"] = nn.Conv2d(in_channels, 20, 5)
        if batch_norm:
            layers["bn1"] = nn.BatchNorm2d(20)
        layers["relu1"] = nn.ReLU()
        layers["pool1"] = nn.MaxPool2d(2)
        layers["conv2"] = nn.Conv2d(20, 50, 5)
        if batch_norm:
            layers["bn2"] = nn.BatchNorm2d(50)
        layers["relu2"] = nn.ReLU()
        layers["pool2"] = nn.MaxPool2d(2)
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(50 * side * side, 500)
        layers["relu3"] = nn.ReLU()
        layers["fc2"] = nn.Linear(500, n_classes)
        super().__init__(layers)


#: conv widths and max-pools ("M") of the small VGG used in the structured-pruning chapter
VGG_SMALL = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M")


class VGG(nn.Sequential):
    """A VGG-style CNN: 3x3 conv + BatchNorm + ReLU blocks, max-pools, one linear classifier.

    Args:
        cfg: widths and ``"M"`` (max-pool 2x2), e.g. :data:`VGG_SMALL` or a narrow
            ``(16, "M", 32, "M")`` for quick experiments.
        in_channels: image channels.
        image_size: input height/width.
        n_classes: output size.
    """

    def __init__(self, cfg=VGG_SMALL, in_channels: int = 3, image_size: int = 32, n_classes: int = 10):
        layers = OrderedDict()
        c, side, i = in_channels, image_size, 0
        for item in cfg:
            if item == "M":
                layers[f"pool{i}"] = nn.MaxPool2d(2)
                side //= 2
            else:
                i += 1
                layers[f"conv{i}"] = nn.Conv2d(c, item, 3, padding=1)
                layers[f"bn{i}"] = nn.BatchNorm2d(item)
                layers[f"relu{i}"] = nn.ReLU()
                c = item
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(c * side * side, n_classes)
        super().__init__(layers)


class TinyResNet(nn.Module):
    """A small residual CNN (two basic blocks, one with a 1x1 projection) for examples.

    ``stem`` conv 3x3 + BatchNorm + ReLU -> ``block1`` (identity shortcut) -> ``block2``
    (stride 2, ``conv`` 1x1 + BatchNorm shortcut) -> global average pool -> ``fc``.
    The additions couple the channels of the stem, of each block's second convolution
    and of the shortcut, which is why :func:`prunekit.shrink` refuses to remove them
    and :func:`prunekit.tp_prune` is needed.

    Args:
        in_channels: image channels.
        width: channels of the stem and the first block; the second block has twice as many.
        n_classes: output size.

    Examples:
        >>> import torch, prunekit as pk
        >>> pk.models.TinyResNet()(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    class Block(nn.Module):
        """conv-BN-ReLU-conv-BN plus a shortcut, then ReLU."""

        def __init__(self, c_in: int, c_out: int, stride: int = 1):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                              nn.BatchNorm2d(c_out))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.shortcut(x))

    def __init__(self, in_channels: int = 3, width: int = 16, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = TinyResNet.Block(width, width)
        self.block2 = TinyResNet.Block(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


class CharTransformer(nn.Module):
    """A small GPT-style character model built from torch's own Transformer layers.

    Token and position embeddings, ``n_layers`` pre-norm ``nn.TransformerEncoderLayer``
    blocks with a causal mask (``nn.MultiheadAttention`` inside: its packed Q/K/V
    ``in_proj_weight`` and ``out_proj``, then a two-layer MLP), a final LayerNorm and a
    linear head. ``forward(ids)`` takes ``(batch, length)`` character ids and returns logits
    ``(batch, length, vocab_size)``.

    Args:
        vocab_size: number of characters.
        width: embedding width (``d_model``).
        n_layers: transformer blocks.
        n_heads: attention heads.
        context: longest sequence.
        mlp_ratio: MLP hidden width / ``width``.
    """

    def __init__(self, vocab_size: int, width: int = 64, n_layers: int = 2, n_heads: int = 4,
                 context: int = 64, mlp_ratio: int = 4):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(context, width)
        layer = nn.TransformerEncoderLayer(width, n_heads, mlp_ratio * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        h = self.tok(ids) + self.pos(torch.arange(n, device=ids.device))
        h = self.blocks(h, mask=self.causal[:n, :n], is_causal=True)
        return self.head(self.norm(h))
