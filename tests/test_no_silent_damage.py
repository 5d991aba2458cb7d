"""Nothing destroyed silently: global scope warns when it empties a layer, a cap prevents it,
and k-means leaves a constant layer alone with a warning instead of refusing the model."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit as pk


def small_last_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 4))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # the classifier's weights are all smaller than the others
    return model


def test_global_scope_warns_naming_the_layer_it_empties():
    model = small_last_layer()
    with pytest.warns(UserWarning, match=r"removed every unit of layer\(s\) \['2'\].*max_layer_sparsity"):
        pk.prune(model, 0.5, scope="global")
    assert int(model[2].weight_mask.sum()) == 0


def test_max_layer_sparsity_keeps_every_layer_alive_and_reaches_the_target():
    model = small_last_layer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no emptied layer, no unreachable target
        pk.prune(model, 0.5, scope="global", max_layer_sparsity=0.9)
    assert pk.sparsity(model) == 0.5
    assert int((model[2].weight_mask == 0).sum()) == int(0.9 * 160)


def test_max_layer_sparsity_warns_when_the_target_is_out_of_reach():
    model = small_last_layer()
    with pytest.warns(UserWarning, match="max_layer_sparsity=0.5 lets global scope prune at most"):
        pk.prune(model, 0.9, scope="global", max_layer_sparsity=0.5)
    assert pk.sparsity(model) == 0.5


@pytest.mark.parametrize("kwargs, match", [
    ({"max_layer_sparsity": 0.5}, "applies only to scope='global'"),
    ({"max_layer_sparsity": 1.5, "scope": "global"}, "'max_layer_sparsity' parameter of prune"),
    ({"max_layer_sparsity": 0.5, "scope": "global", "method": "kmeans"}, "exact counts"),
])
def test_max_layer_sparsity_bad_input_leaves_the_model_untouched(kwargs, match):
    model = small_last_layer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        pk.prune(model, 0.5, **kwargs)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4), sparsity=st.floats(0, 1),
       cap=st.floats(0, 1), seed=st.integers(0, 10**6))
def test_max_layer_sparsity_is_the_global_ranking_restricted_to_each_layers_share(sizes, sparsity, cap, seed):
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(n, 1, bias=False) for n in sizes]
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randint(-5, 6, layer.weight.shape, generator=g).float())  # many ties
    model = nn.Sequential(*layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pk.prune(model, sparsity, scope="global", max_layer_sparsity=cap)
    # reference: walk the global order (|w| ascending, ties by position) and prune while the
    # layer's share allows, until round(sparsity * n) are pruned
    flat = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in layers])
    owner = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    allowed = [int(cap * n + 1e-9) for n in sizes]
    target = round(sparsity * flat.numel())
    expected = torch.ones(flat.numel(), dtype=torch.bool)
    for j in torch.argsort(flat, stable=True).tolist():
        if target == 0:
            break
        if allowed[owner[j]] > 0:
            allowed[owner[j]] -= 1
            expected[j] = False
            target -= 1
    got = torch.cat([layer.weight_mask.bool().reshape(-1) for layer in layers])
    assert torch.equal(got, expected)


def test_kmeans_leaves_a_constant_layer_alone_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 5))
    with torch.no_grad():
        model[2].weight.fill_(0.25)
    with pytest.warns(UserWarning, match=r"layer '2' as they are: they all have the same value"):
        pk.prune(model, 0.5, method="kmeans")
    assert int(model[2].weight_mask.sum()) == 150  # untouched
    assert 0.3 < 1 - float(model[0].weight_mask.float().mean()) < 0.7  # the others are pruned


def test_kmeans_never_empties_a_layer_below_sparsity_one():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)  # 4,608 weights, as in a small CNN's first layers
    for s in (0.95, 0.98, 0.99):
        keep = pk.kmeans_mask(conv.weight.detach(), s, n_clusters=8)
        assert keep.any(), s
    model = nn.Sequential(nn.Conv2d(16, 32, 3))
    pk.prune(model, 0.98, method="kmeans", n_clusters=4)
    assert model[0].weight_mask.any()
    assert not pk.kmeans_mask(conv.weight.detach(), 1.0, n_clusters=8).any()  # 1 prunes all
