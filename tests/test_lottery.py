"""pk.lottery_tickets: iterative magnitude pruning with rewinding, and its controls.

What a user relies on: the masks nest from round to round, every round starts from exactly
the rewind weights, round r prunes round((1 - (1 - p)^r) * n) weights of each layer, the
model passed in is never modified, the controls change only what they claim to change,
and everything is reproducible with seeds.
"""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.lottery import imp_sparsity


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 3))


X = torch.randn(64, 12, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2))
LAYERS = ("0", "2", "4")


def trainer(log=None, steps=5):
    """A deterministic train_fn: seeded SGD steps; optionally logs the starting weights."""
    def train_fn(model):
        if log is not None:
            log.append({k: v.clone() for k, v in model.state_dict().items()})
        torch.manual_seed(123)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            perm = torch.randperm(len(X))[:32]
            loss = nn.functional.cross_entropy(model(X[perm]), Y[perm])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return train_fn


def keep(result, r, layer):
    return result.rounds[r].masks[(layer, "weight")]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_nest_round_to_round(scope):
    result = pk.lottery_tickets(make_model(), trainer(), rounds=4, rate=0.3, scope=scope)
    for r in range(2, 5):
        for layer in LAYERS:
            assert not (keep(result, r, layer) & ~keep(result, r - 1, layer)).any()


def test_every_round_starts_from_the_rewind_weights_exactly():
    model = make_model()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    log = []
    result = pk.lottery_tickets(model, trainer(log), rounds=3, rate=0.5)
    assert len(log) == 4
    for r, state in enumerate(log):
        for layer in LAYERS:
            key = f"{layer}.weight_orig" if r else f"{layer}.weight"
            assert torch.equal(state[key], saved[f"{layer}.weight"])
            assert torch.equal(state[f"{layer}.bias"], saved[f"{layer}.bias"])
            if r:
                assert torch.equal(state[f"{layer}.weight_mask"].bool(), keep(result, r, layer))
    # the ticket of any round: the same weights, that round's mask, untrained
    ticket = result.ticket(2)
    for layer in LAYERS:
        module = ticket.get_submodule(layer)
        assert torch.equal(module.weight_orig, saved[f"{layer}.weight"])
        assert torch.equal(module.weight, saved[f"{layer}.weight"] * keep(result, 2, layer))
    assert {k: v for k, v in result.rewind_state.items()}.keys() == saved.keys()


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.37])
def test_round_r_prunes_exactly_the_compound_fraction_per_layer(rate):
    result = pk.lottery_tickets(make_model(), trainer(), rounds=5, rate=rate)
    for r in range(1, 6):
        s = 1 - (1 - rate) ** r
        assert result.rounds[r].sparsity == pytest.approx(s) == imp_sparsity(rate, r)
        for layer in LAYERS:
            mask = keep(result, r, layer)
            assert int((~mask).sum()) == round(s * mask.numel()), (r, layer)
        trained = result.rounds[r].model
        for layer in LAYERS:  # the round's model keeps its own mask, in force in training
            module = trained.get_submodule(layer)
            assert torch.equal(module.weight_mask.bool(), keep(result, r, layer))
            assert torch.equal(module.weight == 0, ~keep(result, r, layer) | (module.weight == 0))
            assert not module.weight[~keep(result, r, layer)].any()


def test_global_scope_prunes_the_compound_fraction_of_all_weights():
    result = pk.lottery_tickets(make_model(), trainer(), rounds=3, rate=0.4, scope="global")
    n = sum(keep(result, 1, layer).numel() for layer in LAYERS)
    for r in range(1, 4):
        zeros = sum(int((~keep(result, r, layer)).sum()) for layer in LAYERS)
        assert zeros == round(imp_sparsity(0.4, r) * n)
        assert result.rounds[r].achieved == pytest.approx(zeros / n)


def test_the_model_passed_in_is_untouched():
    model = make_model()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    result = pk.lottery_tickets(model, trainer(), rounds=2, rate=0.5)
    assert model.state_dict().keys() == saved.keys()  # no masks attached
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    # neither do the controls and the ticket touch it, nor each other
    result.ticket(1), result.reinitialised(1, seed=3), result.random_mask(1, seed=3)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_rewinding_to_an_early_step_uses_that_step():
    model = make_model()
    trainer(steps=2)(model)  # "step k": the rewind point is the partly trained model
    at_k = {k: v.clone() for k, v in model.state_dict().items()}
    log = []
    pk.lottery_tickets(model, trainer(log, steps=3), rounds=2, rate=0.5)
    assert torch.equal(log[2]["0.weight_orig"], at_k["0.weight"])
    assert not torch.equal(at_k["0.weight"], make_model().state_dict()["0.weight"])


def test_controls_change_only_what_they_claim():
    result = pk.lottery_tickets(make_model(), trainer(), rounds=3, rate=0.5)
    ticket = result.ticket(3)
    reinit = result.reinitialised(3, seed=7)
    rand = result.random_mask(3, seed=7)
    for layer in LAYERS:
        t, a, b = (m.get_submodule(layer) for m in (ticket, reinit, rand))
        # re-initialised: the same mask, new weights drawn from the same init distribution
        assert torch.equal(a.weight_mask, t.weight_mask)
        assert not torch.equal(a.weight_orig, t.weight_orig)
        bound = 1 / t.in_features ** 0.5  # nn.Linear's default init: U(-1/sqrt(in), 1/sqrt(in))
        assert float(a.weight_orig.detach().abs().max()) <= bound
        # random mask: the same weights, the same count per layer, a different pattern
        assert torch.equal(b.weight_orig, t.weight_orig)
        assert int(b.weight_mask.sum()) == int(t.weight_mask.sum())
        assert not torch.equal(b.weight_mask, t.weight_mask)
    # and both train like any pruned model: the mask stays in force
    trainer()(rand)
    assert not rand.get_submodule("0").weight[rand.get_submodule("0").weight_mask == 0].any()


def test_seeded_runs_and_controls_are_reproducible():
    a = pk.lottery_tickets(make_model(), trainer(), rounds=2, rate=0.5, evaluate_fn=lambda m: 0.5)
    b = pk.lottery_tickets(make_model(), trainer(), rounds=2, rate=0.5)
    for r in (1, 2):
        for layer in LAYERS:
            assert torch.equal(keep(a, r, layer), keep(b, r, layer))
        assert torch.equal(a.rounds[r].model(X), b.rounds[r].model(X))
    state = torch.random.get_rng_state()
    for control in ("reinitialised", "random_mask"):
        x = getattr(a, control)(2, seed=5).state_dict()
        y = getattr(b, control)(2, seed=5).state_dict()
        z = getattr(a, control)(2, seed=6).state_dict()
        assert all(torch.equal(x[k], y[k]) for k in x)
        assert not all(torch.equal(x[k], z[k]) for k in x)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left alone
    assert [r.metric for r in a.rounds] == [0.5, 0.5, 0.5]
    assert [r.metric for r in b.rounds] == [None, None, None]


def test_exclude_and_keep_models():
    result = pk.lottery_tickets(make_model(), trainer(), rounds=2, rate=0.5, exclude=["4"],
                                keep_models=False)
    assert ("4", "weight") not in result.rounds[2].masks
    assert all(r.model is None for r in result.rounds)
    assert "round" in str(result) and len(result.as_dicts()) == 3


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(rounds=0), ValueError, "'rounds'"),
    (dict(rounds=1.5), TypeError, "'rounds'"),
    (dict(rate=0.0), ValueError, "'rate'"),
    (dict(rate=1.0), ValueError, "'rate'"),
    (dict(rate=float("nan")), ValueError, "'rate'"),
    (dict(rate="0.2"), TypeError, "'rate'"),
    (dict(rate=True), TypeError, "'rate'"),
    (dict(scope="everywhere"), ValueError, "'scope'"),
    (dict(exclude=["nope"]), ValueError, "nope"),
    (dict(evaluate_fn=3), TypeError, "'evaluate_fn'"),
    (dict(keep_models=1), TypeError, "'keep_models'"),
])
def test_bad_arguments_are_refused_before_training(kwargs, exc, words):
    model = make_model()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    options = {**dict(rounds=2, rate=0.2), **kwargs}
    with pytest.raises(exc, match=words):
        pk.lottery_tickets(model, lambda m: calls.append(1), **options)
    assert not calls and all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_bad_model_train_fn_and_round_are_refused():
    with pytest.raises(TypeError, match="'model'"):
        pk.lottery_tickets("model", trainer(), rounds=1)
    with pytest.raises(TypeError, match="'train_fn'"):
        pk.lottery_tickets(make_model(), None, rounds=1)
    result = pk.lottery_tickets(make_model(), trainer(), rounds=2, rate=0.5)
    for bad, exc in ((0, ValueError), (3, ValueError), (1.0, TypeError)):
        with pytest.raises(exc, match="'round_'"):
            result.ticket(bad)
    with pytest.raises(TypeError, match="'seed'"):
        result.random_mask(1, seed="x")
    with pytest.raises(TypeError, match="'init'"):
        result.reinitialised(1, init=3)
