"""prunekit.profile: parameter and MAC counts, size on disk, storage bits, latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import prunekit as pk

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))


def test_count_parameters():
    model = small_cnn()
    expected = (8 * 3 * 9 + 8) + 16 + (4 * 4 * 9 + 4) + (16 * 5 + 5)
    assert pk.count_parameters(model) == expected
    pk.prune(model, 0.5, method="l1")
    assert pk.count_parameters(model) == expected  # weight_orig + mask count once
    zeros = sum(int((pk.effective_tensor(m) == 0).sum()) for _, m in pk.prunable_layers(model))
    assert pk.count_parameters(model, nonzero_only=True) == expected - zeros - 8  # BN biases are 0
    shared = nn.Linear(3, 3)
    assert pk.count_parameters(nn.Sequential(shared, shared)) == 12


def test_count_macs_matches_a_hand_count_and_flop_counter():
    model = small_cnn()
    x = torch.randn(2, 3, 8, 8)
    conv1 = 2 * 8 * 8 * 8 * (3 * 9)   # batch * H * W * out * (in * k * k)
    conv2 = 2 * 2 * 2 * 4 * (4 * 9)   # groups=2: each output reads in/groups = 4 channels
    fc = 2 * 16 * 5
    assert pk.count_macs(model, x) == conv1 + conv2 + fc
    with FlopCounterMode(display=False) as counter:
        model.eval()(x)
    assert counter.get_total_flops() == 2 * pk.count_macs(model, x)


def test_count_macs_nonzero_only_and_modes_restored():
    torch.manual_seed(0)
    model = small_cnn().train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    stats = model[1].running_mean.clone()
    pk.prune(model, 0.75, method="l1")
    x = torch.randn(1, 3, 8, 8)
    dense = pk.count_macs(model, x)
    effective = pk.count_macs(model, x, nonzero_only=True)
    assert effective == 64 * 54 + 4 * 36 + 20 and 4 * effective == dense
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[1].running_mean, stats)
    # the pruned weight is back on the autograd graph after the no-grad forward
    assert model[0].weight.grad_fn is not None


def test_model_size_bytes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    dense = pk.model_size_bytes(model)
    assert dense > 4 * (200 * 100 + 100 * 10)
    pk.prune(model, 0.5, method="channel", exclude=["2"])
    assert pk.model_size_bytes(model) > 1.9 * dense  # weight_orig and weight_mask
    assert abs(pk.model_size_bytes(model, strip_masks=True) - dense) <= 128  # archive alignment
    small = pk.shrink(model, torch.randn(1, 200))
    assert pk.model_size_bytes(small) < 0.55 * dense


def test_sparse_storage_bits():
    w = torch.zeros(4, 2, 3, 3)
    w[0, 0] = 1.0            # one full kernel
    w[3, 1, 1, 1] = 2.0      # one kernel with a single non-zero
    assert pk.sparse_storage_bits(w, "dense") == 72 * 32
    assert pk.sparse_storage_bits(w, "fine") == 10 * (32 + 7)          # 72 positions -> 7 bits
    assert pk.sparse_storage_bits(w, "kernel") == 2 * (9 * 32 + 3)     # 8 kernels -> 3 bits
    assert pk.sparse_storage_bits(w, "channel") == 2 * (18 * 32 + 2)   # 4 channels -> 2 bits
    # relative indices, 2 bits: kernel gaps 1 and 7 -> one filler for 7 > 4
    assert pk.sparse_storage_bits(w, "kernel", index_bits=2) == 3 * (9 * 32 + 2)
    assert pk.sparse_storage_bits(w, "fine", value_bits=8, index_bits=8) == 10 * 16
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()[0, 0] = 1.0
    assert pk.sparse_storage_bits(model, "kernel") == pk.sparse_storage_bits(model, "fine") == 32 + 3
    with pytest.raises(ValueError, match="'granularity'"):
        pk.sparse_storage_bits(w, "block")
    with pytest.raises(TypeError, match="'weight_or_model'"):
        pk.sparse_storage_bits([1.0])


def test_measure_latency_restores_threads_and_modes():
    model = small_cnn().train()
    before = torch.get_num_threads()
    lat = pk.measure_latency(model, torch.randn(4, 3, 8, 8), warmup=1, repeats=5, threads=2)
    assert torch.get_num_threads() == before
    assert model.training and all(m.training for m in model.modules())
    assert lat.threads == 2 and lat.batch_size == 4 and lat.repeats == 5 and lat.device == "cpu"
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms and lat.mean_ms > 0
    assert "ms median" in str(lat)
    with pytest.raises(ValueError, match="'repeats'"):
        pk.measure_latency(model, torch.randn(1, 3, 8, 8), repeats=0)
    with pytest.raises(TypeError, match="'example_input'"):
        pk.measure_latency(model, "x")


def test_compare_models_shrunk_vgg():
    torch.manual_seed(0)
    model = pk.models.VGG((8, "M", 16, "M"), image_size=8).eval()
    pk.prune(model, 0.5, method="channel", exclude=["fc"])
    x = torch.randn(4, 3, 8, 8)
    small = pk.shrink(model, x)
    table = pk.compare_models(model, small, {1: x[:1], 4: x}, warmup=1, repeats=3,
                              names=("masked", "shrunk"))
    assert table.params[0] > 2 * table.params[1]
    # the masked model still multiplies by conv2's weights that read the dead channels
    assert table.nonzero_params[0] > table.nonzero_params[1]
    assert table.macs[0] == pk.count_macs(model, x[:1])
    assert table.mac_ratio == pytest.approx(table.macs[0] / table.macs[1])
    assert table.effective_macs[0] > table.effective_macs[1] == table.macs[1]
    assert table.size_bytes[0] > table.size_bytes[1]
    assert set(table.latency) == {1, 4} and table.speedup(4) > 0
    text = str(table)
    assert "theoretical speed-up" in text and "latency at batch 4" in text and "shrunk" in text
    assert len(table.as_dicts()) == 7
