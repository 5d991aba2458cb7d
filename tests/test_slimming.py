"""Network Slimming: channels ranked by |BatchNorm gamma|, pruned with their BN, shrunk exactly."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

import prunekit as pk


def bn_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        fc1=nn.Linear(8, 6), bn1=nn.BatchNorm1d(6), relu1=nn.ReLU(),
        fc2=nn.Linear(6, 5), bn2=nn.BatchNorm1d(5), relu2=nn.ReLU(),
        fc3=nn.Linear(5, 3))).eval()


def bn_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 8, 3), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 6, 3), bn2=nn.BatchNorm2d(6), relu2=nn.ReLU(),
        flatten=nn.Flatten(), fc=nn.Linear(6 * 4 * 4, 3))).eval()


def set_gammas(model, **gammas):
    with torch.no_grad():
        for name, values in gammas.items():
            getattr(model, name).weight.copy_(torch.tensor(values))
            getattr(model, name).running_var.uniform_(0.5, 2.0)
            getattr(model, name).running_mean.normal_()


def test_global_ranking_is_the_order_of_abs_gamma():
    model = set_gammas_and_return(bn_mlp())
    gammas = torch.cat([model.bn1.weight, model.bn2.weight]).detach().abs()
    for k in range(10):
        m = pk.prune(set_gammas_and_return(bn_mlp()), k / 11, method="slimming",
                     scope="global", exclude=["fc3"])
        kept = torch.cat([m.fc1.weight_mask.any(1), m.fc2.weight_mask.any(1)])
        expected = torch.ones(11, dtype=torch.bool)
        expected[torch.argsort(gammas, stable=True)[:k]] = False  # the k smallest |gamma|
        assert torch.equal(kept, expected), k


def set_gammas_and_return(model):
    set_gammas(model, bn1=[0.5, -0.1, 2.0, 0.05, 1.0, -3.0], bn2=[0.2, 0.3, -0.01, 4.0, 1.0])
    return model


def test_layer_scope_ranks_each_layer_by_its_own_gammas():
    m = pk.prune(set_gammas_and_return(bn_mlp()), {"fc1": 0.5, "fc2": 0.4},
                 method="slimming")
    assert m.fc1.weight_mask.any(1).tolist() == [False, False, True, False, True, True]
    assert m.fc2.weight_mask.any(1).tolist() == [False, True, False, True, True]


@pytest.mark.parametrize("make", [bn_mlp, bn_cnn])
def test_channel_and_its_batchnorm_go_together_and_shrink_is_exact(make):
    model = make()
    set_gammas(model, bn1=torch.linspace(-1, 1, model.bn1.num_features).tolist(),
               bn2=torch.linspace(0.1, 2, model.bn2.num_features).tolist())
    last = "fc3" if make is bn_mlp else "fc"
    x = torch.randn(16, 8) if make is bn_mlp else torch.randn(16, 1, 8, 8)
    masked = pk.prune(model, 0.4, method="slimming", scope="global", exclude=[last])
    first = masked.fc1 if make is bn_mlp else masked.conv1
    gone = ~first.weight_mask.flatten(1).any(1)
    assert gone.any()
    for t in (first.bias, masked.bn1.weight, masked.bn1.bias):
        assert torch.all(t[gone] == 0)
    small = pk.shrink(masked, x)
    assert small.bn1.num_features == int((~gone).sum())
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), masked(x), atol=1e-5)


def test_scores_equal_abs_gamma():
    model = set_gammas_and_return(bn_mlp())
    method = pk.METHODS["slimming"]
    assert method.granularity == "channel"
    options = {"_bn": method.followers(model)}
    for layer, bn in ((model.fc1, model.bn1), (model.fc2, model.bn2)):
        s = method.scores("", layer, layer.weight, options)
        assert torch.equal(s, bn.weight.detach().abs())


def test_layer_without_batchnorm_is_refused_by_name_and_model_untouched():
    model = bn_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"\['fc3'\].*exclude"):
        pk.prune(model, 0.5, method="slimming", scope="global")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_penalty_is_the_l1_norm_of_gammas_and_differentiable():
    model = set_gammas_and_return(bn_mlp())
    penalty = pk.slimming_penalty(model)
    assert float(penalty.detach()) == pytest.approx(float(
        (model.bn1.weight.abs().sum() + model.bn2.weight.abs().sum()).detach()))
    penalty.backward()
    assert torch.equal(model.bn1.weight.grad, torch.sign(model.bn1.weight.detach()))
    assert model.fc1.weight.grad is None


def test_slimming_loss_adds_the_penalty_and_drives_gammas_down():
    model = bn_mlp().train()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    loss = pk.slimming_loss(model, strength=0.1)
    expected = nn.functional.cross_entropy(model(x), y) + 0.1 * pk.slimming_penalty(model)
    assert float(loss(model(x), y)) == pytest.approx(float(expected), rel=1e-5)
    start = float(pk.slimming_penalty(model))
    pk.training.train(model, [(x, y)] * 20, epochs=1, lr=0.05, loss_fn=loss, progress=False)
    weak = bn_mlp().train()
    pk.training.train(weak, [(x, y)] * 20, epochs=1, lr=0.05, progress=False)
    assert float(pk.slimming_penalty(model)) < min(start, float(pk.slimming_penalty(weak)))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="'model' parameter of slimming_penalty"):
        pk.slimming_penalty(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'strength' parameter of slimming_loss.*-1"):
        pk.slimming_loss(bn_mlp(), strength=-1)
    with pytest.raises(TypeError):
        pk.slimming_penalty("not a model")


def test_random_channel_prunes_whole_channels_exactly_and_reproducibly():
    masks = []
    for seed in (0, 0, 1):
        m = pk.prune(bn_cnn(), {"conv1": 0.5, "conv2": 0.5}, method="random_channel",
                     seed=seed)
        gone = ~m.conv2.weight_mask.flatten(1).any(1)
        assert int(gone.sum()) == 3                              # round(0.5 * 6)
        assert torch.all(m.conv2.weight_mask[gone] == 0)
        assert torch.all(m.bn2.weight[gone] == 0)
        masks.append(m.conv1.weight_mask.flatten(1).any(1))
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])
