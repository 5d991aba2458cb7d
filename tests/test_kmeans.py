"""K-means (chapter 3) beyond the solver: the source's code, prune(method="kmeans"), weight
sharing and Deep Compression's size accounting. ``kmeans_1d`` and ``kmeans_mask`` are
checked in ``test_cluster.py``.

What is checked:

* ``source_kmeans_mask``: reproduces the documented problems;
* ``prune(method="kmeans")``: both scopes, nested re-pruning, bad input leaves the model
  untouched;
* ``share_weights``: at most 2**bits shared values, zeros stay zero, centroid gradients
  are the sums of their weights' gradients, fine-tuning keeps sharing, state_dict and
  deepcopy;
* ``compression_report`` on hand-computed examples (including the paper's).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from _kmeans_data import distribution
from torch import nn

import prunekit as pk
from prunekit import reference, sharing

sklearn_cluster = pytest.importorskip("sklearn.cluster")
threadpoolctl = pytest.importorskip("threadpoolctl")  # a scikit-learn dependency


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, state: dict) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


# --------------------------------------------------------------------------------------
# The source document's kmeans()
# --------------------------------------------------------------------------------------


def test_source_kmeans_mask_reproduces_the_documented_problems():
    w = distribution("normal", 1500, seed=0).view(30, 50)
    with threadpoolctl.threadpool_limits(1):
        at0 = reference.source_kmeans_mask(w, 8, 0.0, seed=0)
        at5 = reference.source_kmeans_mask(w, 8, 0.5, seed=0)
        fit = sklearn_cluster.KMeans(n_clusters=8, random_state=0).fit(w.reshape(-1, 1).numpy())
    # sparsity 0 still prunes (the cluster with the smallest |centre|)
    assert 0.0 < 1 - at0.float().mean() < 0.5
    # "sparsity" is a fraction of clusters: 0.5 prunes far more than half of the weights
    assert float(1 - at5.float().mean()) > 0.6
    # ... while prunekit's kmeans_mask lands near the request
    assert abs(pk.sparsity(w * pk.kmeans_mask(w, 0.5, n_clusters=8)) - 0.5) < 0.1
    assert at0.dtype == torch.bool and at0.shape == w.shape
    # the source's loop equals the vectorised mask[labels]: same clustering, same mask
    mags = torch.tensor(fit.cluster_centers_[:, 0]).abs()
    keep_cluster = mags > torch.quantile(mags, 0.5)
    assert torch.equal(at5, keep_cluster[torch.as_tensor(fit.labels_).long()].view(w.shape))
    assert int((~keep_cluster).sum()) == 4  # half of the *clusters*


# --------------------------------------------------------------------------------------
# prune(method="kmeans")
# --------------------------------------------------------------------------------------

LINEARS = ["0", "2", "4"]


def test_prune_kmeans_layer_scope_is_kmeans_mask_per_layer():
    model = mlp()
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in LINEARS}
    info = {}
    pk.prune(model, 0.6, method="kmeans", n_clusters=6, info=info)
    for n in LINEARS:
        expected = pk.kmeans_mask(weights[n], 0.6, n_clusters=6)
        assert torch.equal(model.get_submodule(n).weight_mask.bool(), expected)
        assert info[n].n_pruned == int((~expected).sum())
    assert set(info) == set(LINEARS)


def test_prune_kmeans_global_scope_clusters_all_layers_together():
    model = mlp(1)
    weights = [model.get_submodule(n).weight.detach().clone() for n in LINEARS]
    flat = torch.cat([w.reshape(-1) for w in weights])
    expected = pk.kmeans_mask(flat, 0.7, n_clusters=8)
    info = {}
    pk.prune(model, 0.7, method="kmeans", scope="global", info=info)
    got = torch.cat([model.get_submodule(n).weight_mask.bool().reshape(-1) for n in LINEARS])
    assert torch.equal(got, expected)
    assert info["global"].n_pruned == int((~expected).sum())
    assert pk.sparsity(model) == pytest.approx(info["global"].achieved_sparsity)
    per_layer = [float((model.get_submodule(n).weight == 0).float().mean()) for n in LINEARS]
    assert max(per_layer) - min(per_layer) > 0.01  # layers end up at different sparsities


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_kmeans_is_nested_and_clusters_only_unpruned_weights(scope):
    model = mlp(2)
    pk.prune(model, 0.3, method="kmeans", scope=scope, n_clusters=5)
    first = {n: model.get_submodule(n).weight_mask.bool().clone() for n in LINEARS}
    info = {}
    pk.prune(model, 0.75, method="kmeans", scope=scope, n_clusters=5, info=info)
    for n in LINEARS:
        now = model.get_submodule(n).weight_mask.bool()
        assert not (now & ~first[n]).any()  # never revived
    for row in info.values():
        assert row.n_already_pruned > 0
        assert sum(row.sizes) == row.n_weights - row.n_already_pruned  # pruned ones not clustered
    total = sum(int((model.get_submodule(n).weight_mask == 0).sum()) for n in LINEARS)
    assert total == sum(row.n_pruned for row in info.values())
    assert pk.sparsity(model) > 0.5


def test_prune_kmeans_warns_when_already_past_the_target():
    model = mlp(3)
    pk.prune(model, 0.8, method="l1")
    before = snapshot(model)
    with pytest.warns(UserWarning, match="already pruned"):
        pk.prune(model, 0.5, method="kmeans")
    assert same_state(model, before)


def test_prune_kmeans_accepts_a_per_layer_plan():
    model = mlp(4)
    pk.prune(model, {"0": 0.5, "4": 0.9}, method="kmeans", n_clusters=4)
    assert not hasattr(model[2], "weight_mask")
    assert pk.sparsity(model[4].weight) > 0.6


@pytest.mark.parametrize("options, exc, match", [
    ({"n_clusters": True}, TypeError, "'n_clusters' parameter of prune"),
    ({"n_clusters": 0}, ValueError, "'n_clusters' parameter of prune"),
    ({"n_clusters": 2.5}, TypeError, "'n_clusters' parameter of prune"),
    ({"n_clusters": 50}, ValueError, r"unpruned weights of layer '4' \(48\)"),  # 3x16 layer
    ({"info": []}, TypeError, "'info' parameter of prune"),
    ({"bits": 4}, TypeError, "unexpected keyword"),
])
def test_prune_kmeans_bad_options_leave_the_model_untouched(options, exc, match):
    model = mlp(5)
    before = snapshot(model)
    info = {}
    opts = {"info": info, **options}
    with pytest.raises(exc, match=match):
        pk.prune(model, 0.5, method="kmeans", **opts)
    assert same_state(model, before) and info == {}
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_prune_kmeans_with_nan_weights_leaves_the_model_untouched():
    model = mlp(6)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    keys = set(model.state_dict())
    with pytest.raises(ValueError, match="finite"):
        pk.prune(model, 0.5, method="kmeans")
    assert set(model.state_dict()) == keys


# --------------------------------------------------------------------------------------
# Weight sharing
# --------------------------------------------------------------------------------------


def pruned_mlp(seed=0, sparsity=0.7) -> nn.Sequential:
    model = mlp(seed)
    pk.prune(model, sparsity)
    return model


@pytest.mark.parametrize("init", sharing.SHARING_INITS)
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_share_weights_uses_at_most_2_to_the_bits_values_and_keeps_zeros(init, bits):
    model = pruned_mlp()
    zeros = {n: model.get_submodule(n).weight == 0 for n in LINEARS}
    before = {n: pk.effective_tensor(model.get_submodule(n)).clone() for n in LINEARS}
    pk.share_weights(model, bits=bits, init=init)
    for n in LINEARS:
        layer = model.get_submodule(n)
        w = layer.weight
        assert torch.equal(w == 0, zeros[n])
        assert w[w != 0].unique().numel() <= 2 ** bits
        shared = layer.parametrizations.weight[0]
        assert shared.codebook.numel() == 2 ** bits
        assert torch.equal(w, shared.codebook[shared.indices.long()] * shared.mask)
        # every weight sits at the nearest centroid of its original value
        orig = before[n][~zeros[n]]
        cb = shared.codebook.detach()
        nearest = cb[(orig[:, None] - cb[None, :]).abs().argmin(1)]
        assert torch.allclose(w[~zeros[n]], nearest)
    assert pk.sparsity(model) == pytest.approx(0.7, abs=0.01)


def test_share_weights_centroids_are_the_means_of_their_weights():
    model = pruned_mlp(1)
    orig = pk.effective_tensor(model[0]).clone()
    pk.share_weights(model, n_clusters=5)
    shared = model[0].parametrizations.weight[0]
    for c in range(5):
        members = orig[(shared.indices.long() == c) & shared.mask]
        if members.numel():
            assert shared.codebook[c].item() == pytest.approx(members.double().mean().item(), abs=1e-6)


def test_share_weights_kmeans_init_has_the_lowest_error():
    model = pruned_mlp(2)
    orig = pk.effective_tensor(model[0]).clone()
    errors = {}
    for init in sharing.SHARING_INITS:
        m = copy.deepcopy(model)
        pk.share_weights(m, bits=3, init=init)
        errors[init] = float(((m[0].weight.detach() - orig) ** 2).sum())
    assert errors["kmeans"] <= min(errors.values()) * (1 + 1e-6)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    model = pruned_mlp(3)
    pk.share_weights(model, bits=3)
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (9,), generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(x), y).backward()
    # by hand: the same network with plain weight tensors, then sum per centroid
    plain = [model.get_submodule(n).weight.detach().clone().requires_grad_(True) for n in LINEARS]
    h = x
    for i, (n, w) in enumerate(zip(LINEARS, plain)):
        h = nn.functional.linear(h, w, model.get_submodule(n).bias)
        if i < 2:
            h = torch.relu(h)
    nn.functional.cross_entropy(h, y).backward()
    for n, w in zip(LINEARS, plain):
        shared = model.get_submodule(n).parametrizations.weight[0]
        idx, mask = shared.indices.long(), shared.mask
        expected = torch.stack([w.grad[(idx == c) & mask].sum() for c in range(8)])
        assert torch.allclose(shared.codebook.grad, expected, atol=1e-6)
        assert model.get_submodule(n).parametrizations.weight.original.grad is None


def test_fine_tuning_moves_centroids_and_keeps_sharing():
    model = pruned_mlp(4)
    pk.share_weights(model, bits=2)
    zeros = model[0].weight == 0
    before = model[0].parametrizations.weight[0].codebook.detach().clone()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # plain SGD steps over every parameter, as an optimizer would take
        x, y = torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
    after = model[0].parametrizations.weight[0].codebook.detach()
    assert not torch.equal(before, after)
    assert torch.equal(model[0].weight == 0, zeros)
    w = model[0].weight
    assert w[w != 0].unique().numel() <= 4


def test_shared_model_survives_state_dict_and_deepcopy():
    model = pruned_mlp(5)
    pk.share_weights(model, bits=3)
    with torch.no_grad():
        model[0].parametrizations.weight[0].codebook.add_(0.01)  # as after fine-tuning
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = pruned_mlp(6)  # prepared the same way: pruned, then shared
    pk.share_weights(fresh, bits=3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(5, 12)
    assert torch.equal(fresh(x), model(x))
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x))
    with torch.no_grad():
        twin[0].parametrizations.weight[0].codebook.mul_(2)
    assert not torch.equal(twin(x), model(x))  # an independent copy


def test_share_weights_exclude_and_unpruned_layers():
    model = mlp(7)  # not pruned: every weight is shared, none is zero
    pk.share_weights(model, n_clusters=3, exclude=["4"])
    assert model[0].weight.unique().numel() <= 3 and pk.sparsity(model[0].weight) == 0.0
    assert not hasattr(model[4], "parametrizations")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({}, TypeError, "exactly one of 'bits' and 'n_clusters'"),
    ({"bits": 3, "n_clusters": 8}, TypeError, "exactly one"),
    ({"bits": 0}, ValueError, "'bits' parameter of share_weights"),
    ({"bits": 17}, ValueError, "'bits' parameter of share_weights"),
    ({"bits": True}, TypeError, "'bits' parameter of share_weights"),
    ({"n_clusters": 0}, ValueError, "'n_clusters' parameter of share_weights"),
    ({"bits": 2, "init": "forgy"}, ValueError, "'init' parameter of share_weights"),
    ({"bits": 2, "exclude": ["nope"]}, ValueError, "'exclude' parameter of share_weights"),
])
def test_share_weights_bad_arguments_leave_the_model_untouched(kwargs, exc, match):
    model = pruned_mlp(8)
    before = snapshot(model)
    with pytest.raises(exc, match=match):
        pk.share_weights(model, **kwargs)
    assert same_state(model, before)


def test_share_weights_refuses_shared_or_nan_layers_without_changes():
    model = pruned_mlp(9)
    pk.share_weights(model, bits=2, exclude=["4"])
    before = snapshot(model)
    with pytest.raises(ValueError, match="already shares weights"):
        pk.share_weights(model, bits=2)
    assert same_state(model, before)
    assert not hasattr(model[4], "parametrizations")  # the valid layer was not shared either
    model = pruned_mlp(10)
    with torch.no_grad():
        model[2].weight_orig[0, 0] = float("inf")
        model[2].weight_mask[0, 0] = 1.0
    before = snapshot(model)
    with pytest.raises(ValueError, match="finite"):
        pk.share_weights(model, bits=2)
    assert same_state(model, before)


# --------------------------------------------------------------------------------------
# Compressed size
# --------------------------------------------------------------------------------------


def test_compression_report_reproduces_the_papers_example():
    """Deep Compression: 16 weights, 4 shared values: 16*32 / (16*2 + 4*32) = 3.2."""
    layer = nn.Linear(4, 4, bias=False)
    pk.share_weights(layer, bits=2)
    row = pk.compression_report(layer).rows[0]
    assert (row.format, row.value_bits, row.codebook_size) == ("dense", 2, 4)
    assert row.compressed_bits == 16 * 2 + 4 * 32 and row.dense_bits == 512
    assert row.ratio == pytest.approx(3.2)


def hand_layer(positions, n=16, values=None) -> nn.Linear:
    layer = nn.Linear(n, 1, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        for i, p in enumerate(positions):
            layer.weight[0, p] = values[i] if values else 1.0 + i
    return layer


def test_relative_index_fillers_follow_figure_2_of_the_paper():
    # Non-zeros at 1, 4, 15 with 3-bit relative indices: the gap 4 -> 15 skips 10 zeros,
    # more than 7, so one filler zero is stored (at 12): 4 entries in all.
    layer = hand_layer([1, 4, 15])
    row = pk.compression_report(layer, index_bits=3).rows[0]
    assert (row.nonzeros, row.fillers, row.format) == (3, 1, "sparse")
    assert row.compressed_bits == 4 * (3 + 32)  # not shared: 32-bit values
    assert row.ratio == pytest.approx(512 / 140)


@pytest.mark.parametrize("positions, index_bits, fillers", [
    ([0, 8], 3, 0),      # 7 zeros in between: fits in 3 bits
    ([0, 9], 3, 1),      # 8 zeros: one filler
    ([10], 3, 1),        # 10 leading zeros: one filler
    ([0, 17, 35], 3, 4),  # 16 zeros -> 2 fillers, 17 zeros -> 2 fillers
    ([2, 40], 5, 1),     # 37 zeros with 5-bit indices (range 31): one filler
])
def test_filler_counts(positions, index_bits, fillers):
    layer = hand_layer(positions, n=64)
    row = pk.compression_report(layer, index_bits=index_bits).rows[0]
    assert row.fillers == fillers
    assert row.compressed_bits == (len(positions) + fillers) * (index_bits + 32)


def test_compression_report_of_a_pruned_and_shared_model():
    layer = hand_layer([1, 4, 15], values=[-0.5, 0.5, 0.6])
    pk.share_weights(layer, n_clusters=2)  # codebook of 2 values: 1-bit codes
    row = pk.compression_report(layer, index_bits=3).rows[0]
    assert row.codebook_size == 2 and row.value_bits == 1
    assert row.compressed_bits == 4 * (3 + 1) + 2 * 32
    model = pruned_mlp(11, sparsity=0.9)
    pk.share_weights(model, bits=4)
    report = pk.compression_report(model)
    biases = sum(model.get_submodule(n).bias.numel() for n in LINEARS)
    assert report.other_params == biases
    assert report.dense_bytes == 4 * sum(p.numel() for p in mlp(11).parameters())
    expected = (sum(r.compressed_bits for r in report.rows) + 32 * biases) / 8
    assert report.compressed_bytes == expected
    assert report.ratio > 5
    assert all(r.index_bits == 5 and r.value_bits == 4 for r in report.rows)
    text = str(report)
    assert "total" in text and "Linear" in text and "Parametrized" not in text
    assert report.as_dicts()[-1]["layer"] == "total"


def test_compression_report_rejects_bad_arguments():
    with pytest.raises(TypeError, match="'model' parameter of compression_report"):
        pk.compression_report(torch.zeros(3))
    with pytest.raises(ValueError, match="'index_bits' parameter of compression_report"):
        pk.compression_report(nn.Linear(2, 2), index_bits=0)


# --------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU; the torch code path it runs is also checked on "
                           "the CPU by test_cluster.py::test_numpy_and_torch_code_paths_agree")
def test_cuda_results_match_the_cpu_and_stay_on_the_device():
    x = distribution("normal", 20000, seed=0).view(100, 200)
    c_cpu, l_cpu = pk.kmeans_1d(x, 16)
    c_gpu, l_gpu = pk.kmeans_1d(x.cuda(), 16)
    assert c_gpu.is_cuda and l_gpu.is_cuda
    assert torch.allclose(c_gpu.cpu(), c_cpu, rtol=1e-5, atol=1e-6)
    assert (l_gpu.cpu() != l_cpu).float().mean() < 1e-3  # float rounding at boundaries only
    mask = pk.kmeans_mask(x.cuda(), 0.5, n_clusters=8)
    assert mask.is_cuda and abs(pk.sparsity(x.cuda() * mask) - 0.5) < 0.1
    model = mlp().cuda()
    pk.prune(model, 0.6, method="kmeans", scope="global")
    pk.share_weights(model, bits=3)
    out = model(torch.randn(4, 12, device="cuda"))
    out.sum().backward()
    assert model[0].parametrizations.weight[0].codebook.grad.is_cuda
    assert pk.compression_report(model).ratio > 1
