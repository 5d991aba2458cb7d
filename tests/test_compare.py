"""prunekit.compare: a fair comparison of pruning methods (same start, same budget, seeds).

Every number in a row is checked against a reference computed directly with
pk.prune / pk.shrink / pk.count_parameters / pk.count_macs / pk.training.evaluate on a dense
model rebuilt exactly as compare builds it (seed_everything(seed); model_fn(); train), and
the summaries against statistics.mean / statistics.stdev.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import statistics

import numpy as np
import pytest
import torch
from torch import nn

import prunekit as pk

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# --------------------------------------------------------------------------------------
# Setups and references
# --------------------------------------------------------------------------------------

SEEDS = [0, 1]
SPARSITIES = [0.0, 0.7]
TRAIN = {"epochs": 1}
FINE_TUNE = {"epochs": 1}
QUIET = {"progress": False, "latency_repeats": 3}

#: the columns Comparison's docstring promises, written out (not imported from compare.py)
COLUMNS = {
    "method", "sparsity", "seed", "achieved_sparsity", "dense_accuracy", "pruned_accuracy",
    "accuracy", "params", "dense_params", "compression_ratio", "storage_ratio", "macs",
    "dense_macs", "theoretical_speedup", "dense_speedup", "latency_ms", "dense_latency_ms",
    "measured_speedup", "shrunk", "seconds", "val_accuracy", "dense_val_accuracy",
}
NUMERIC = sorted(COLUMNS - {"method", "sparsity", "seed", "shrunk"})
#: columns that are timings (not reproducible); every other column must be exact
TIMINGS = {"seconds", "latency_ms", "dense_latency_ms", "measured_speedup"}

#: DEFAULT_METHODS' labels on an MLP ("kernel" needs Conv2d layers)
MLP_DEFAULT_LABELS = ["random", "l1", "l1 (global)", "l2", "gradient", "taylor", "kmeans", "channel"]


def mlp_fn() -> nn.Module:
    return pk.models.MLP(hidden=(16, 16))  # fc1, fc2, fc3 (the classifier)


def vgg_fn() -> nn.Module:
    return pk.models.VGG((8, "M", 16, "M"), in_channels=1, image_size=8)  # conv1, conv2, fc


def first_input(loader) -> torch.Tensor:
    return next(iter(loader))[0][:1]


def reproducible(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMINGS}


def row_for(result, method, sparsity, seed) -> dict:
    (row,) = [r for r in result.rows
              if (r["method"], r["sparsity"], r["seed"]) == (method, sparsity, seed)]
    return row


def build_dense(model_fn, loader, seed, *, epochs=1, gradients=False):
    """The dense model exactly as compare builds it; with ``gradients``, also the statistics
    of "gradient" and "taylor", each collected from the RNG state right after training
    (the train loader shuffles with the global RNG), as compare does."""
    pk.training.seed_everything(seed)
    model = model_fn()
    pk.training.train(model, loader, epochs=epochs, progress=False)
    model.eval()
    if not gradients:
        return model, {}
    state = torch.get_rng_state()
    stats = {}
    for statistic, method in (("grad", "taylor"), ("abs_grad", "gradient")):
        torch.set_rng_state(state)
        stats[method] = pk.collect_gradient_stats(model, loader, nn.CrossEntropyLoss(),
                                                  statistics=(statistic,))
    return model, stats


def prune_copy(dense, sparsity, method, run_seed, exclude, scope="layer", /, **options):
    """A pruned copy of ``dense``, seeded as compare seeds it (``options``: the method's)."""
    model = copy.deepcopy(dense)
    pk.training.seed_everything(run_seed)
    pk.prune(model, sparsity, method=method, scope=scope, exclude=exclude, **options)
    return model.eval()


def call(model_fn, loaders, **kwargs):
    train, test = loaders
    options = {"train": TRAIN, "fine_tune": FINE_TUNE, **QUIET, **kwargs}
    return pk.compare(model_fn, train, test, **options)


# --------------------------------------------------------------------------------------
# Shared runs (module scope: each is computed once)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return pk.data.loaders("digits")


@pytest.fixture(scope="module")
def images():
    return pk.data.loaders("digits", flatten=False)


@pytest.fixture(scope="module")
def mlp_result(digits):
    """DEFAULT_METHODS on an MLP, 2 seeds x 2 sparsities."""
    return call(mlp_fn, digits, sparsities=SPARSITIES, seeds=SEEDS)


@pytest.fixture(scope="module")
def mlp_dense(digits):
    return {seed: build_dense(mlp_fn, digits[0], seed, gradients=True) for seed in SEEDS}


@pytest.fixture(scope="module")
def vgg_result(images):
    """Structured methods on a small CNN, with latency (threads=2 to check it is restored)."""
    return call(vgg_fn, images, methods=["l1", "kernel", "channel"], sparsities=[0.0, 0.5],
                seeds=[0], threads=2)


# --------------------------------------------------------------------------------------
# 1. Shape of the result
# --------------------------------------------------------------------------------------


def test_one_row_per_seed_method_sparsity_with_the_documented_columns(mlp_result):
    r = mlp_result
    assert r.methods == MLP_DEFAULT_LABELS  # default order; "kernel" skipped on an MLP
    assert len(r.rows) == len(SEEDS) * len(MLP_DEFAULT_LABELS) * len(SPARSITIES)
    assert [(x["seed"], x["method"], x["sparsity"]) for x in r.rows] == list(
        itertools.product(SEEDS, MLP_DEFAULT_LABELS, SPARSITIES))
    for row in r.rows:
        assert set(row) == COLUMNS
        assert isinstance(row["shrunk"], bool)
        assert row["seconds"] > 0
    assert r.settings["methods"] == MLP_DEFAULT_LABELS
    assert r.settings["sparsities"] == SPARSITIES and r.settings["seeds"] == SEEDS
    assert r.settings["exclude"] == ["fc3"]


def test_dense_has_one_entry_per_seed_matching_the_dense_model(mlp_result, mlp_dense, digits):
    example = first_input(digits[1])
    assert [d["seed"] for d in mlp_result.dense] == SEEDS
    for d in mlp_result.dense:
        dense, _ = mlp_dense[d["seed"]]
        assert set(d) == {"seed", "accuracy", "params", "macs", "val_accuracy"}
        assert d["val_accuracy"] is None                 # no val_loader given
        assert d["accuracy"] == pk.training.evaluate(dense, digits[1])
        assert d["params"] == pk.count_parameters(dense)
        assert d["macs"] == pk.count_macs(dense, example)


def test_default_methods_on_a_cnn_include_kernel(images):
    result = call(vgg_fn, images, sparsities=[0.5], seeds=[0], train={"epochs": 0},
                  fine_tune={"epochs": 0}, latency=False)
    assert result.methods == ["random", "l1", "l1 (global)", "l2", "gradient", "taylor",
                              "kmeans", "kernel", "channel"]
    assert len(result.rows) == 9


# --------------------------------------------------------------------------------------
# 2. Fairness: same start, independence, determinism
# --------------------------------------------------------------------------------------


def test_every_row_of_a_seed_starts_from_the_same_dense_model(mlp_result):
    dense = {d["seed"]: d for d in mlp_result.dense}
    for row in mlp_result.rows:
        assert row["dense_accuracy"] == dense[row["seed"]]["accuracy"]
        assert row["dense_params"] == dense[row["seed"]]["params"]
        assert row["dense_macs"] == dense[row["seed"]]["macs"]


def test_sparsity_zero_changes_nothing_and_every_method_gets_the_same_fine_tuning(mlp_result):
    for seed in SEEDS:
        rows = [r for r in mlp_result.rows if r["seed"] == seed and r["sparsity"] == 0.0]
        assert len(rows) == len(MLP_DEFAULT_LABELS)
        for row in rows:
            assert row["achieved_sparsity"] == 0.0
            assert row["pruned_accuracy"] == row["dense_accuracy"], row["method"]
            assert row["compression_ratio"] == 1.0
        # same model, same masks (all ones), same batches: the same fine-tuned accuracy
        assert len({row["accuracy"] for row in rows}) == 1


def test_a_row_does_not_depend_on_the_other_methods_sparsities_or_seeds(mlp_result, digits):
    # other methods (in another order), one sparsity, one seed; taylor alone collects only
    # the "grad" statistic, where the full run also collected "abs_grad" for "gradient"
    subset = call(mlp_fn, digits, methods=["taylor", "kmeans", "random",
                                          {"method": "l1", "scope": "global"}],
                  sparsities=[0.7], seeds=[1], latency=False)
    assert subset.methods == ["taylor", "kmeans", "random", "l1 (global)"]
    assert subset.dense == [mlp_result.dense[1]]
    for row in subset.rows:
        full = row_for(mlp_result, row["method"], 0.7, 1)
        assert reproducible(row) == reproducible(full), row["method"]


def test_compare_is_deterministic(digits):
    kwargs = dict(methods=["random", "gradient", "kmeans"], sparsities=[0.7], seeds=[3],
                  latency=False)
    first, second = call(mlp_fn, digits, **kwargs), call(mlp_fn, digits, **kwargs)
    assert [reproducible(r) for r in first.rows] == [reproducible(r) for r in second.rows]
    assert first.dense == second.dense


# --------------------------------------------------------------------------------------
# 3. The same fine-tuning budget
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(digits):
    """A run whose train and fine_tune are recording callables (that do not train)."""
    trained, calls = [], []

    def train(model):
        trained.append(model)

    def fine_tune(model):
        calls.append({
            "masked": {n for n, m in model.named_modules() if hasattr(m, "weight_mask")},
            "fc1_mask": model.fc1.weight_mask.clone(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state()[1].copy(),
            "model": model,
        })

    methods = ["l1", "kmeans", "random", {"method": "random", "seed": 5, "label": "random 5"},
               "channel"]
    result = call(mlp_fn, digits, methods=methods, sparsities=[0.5, 0.8], seeds=SEEDS,
                  train=train, fine_tune=fine_tune, latency=False)
    return result, trained, calls


def test_fine_tune_is_called_once_per_row_on_a_masked_copy(recorded):
    result, trained, calls = recorded
    assert len(trained) == len(SEEDS)  # one dense model per seed
    assert len(calls) == len(result.rows) == len(SEEDS) * 5 * 2
    assert len({id(c["model"]) for c in calls}) == len(calls)  # a fresh copy every time
    assert not any(c["model"] is d for c in calls for d in trained)
    for c in calls:
        assert c["masked"] >= {"fc1", "fc2"}
    # a fine_tune that does nothing leaves the pruned accuracy as it is
    for row in result.rows:
        assert row["accuracy"] == row["pruned_accuracy"]


def test_every_row_of_a_seed_fine_tunes_from_the_same_random_state(recorded):
    """Same batches in the same order for every method: RNGs are as right after seeding."""
    result, _, calls = recorded
    for seed in SEEDS:
        pk.training.seed_everything(seed)
        torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1]
        for row, c in zip(result.rows, calls):
            if row["seed"] == seed:
                assert torch.equal(c["torch_rng"], torch_state), row["method"]
                assert np.array_equal(c["numpy_rng"], numpy_state), row["method"]


def test_same_fine_tuning_state_when_a_gradient_method_collects_its_own_statistics(digits):
    states = []
    methods = ["l1", {"method": "taylor", "loader": digits[0], "loss_fn": nn.CrossEntropyLoss(),
                      "label": "taylor (own loader)"}]
    call(mlp_fn, digits, methods=methods, sparsities=[0.5], seeds=[0], train={"epochs": 0},
         fine_tune=lambda m: states.append(torch.get_rng_state()), latency=False)
    assert len(states) == 2
    assert torch.equal(states[0], states[1])


def test_sparsities_and_seeds_may_be_numpy_arrays(digits):
    """np.linspace(...) is what readers type; it gives the same rows as the list."""
    kw = dict(methods=["l1"], train={"epochs": 0}, fine_tune={"epochs": 0}, latency=False)
    arrays = call(mlp_fn, digits, sparsities=np.array([0.25, 0.5]), seeds=np.arange(1), **kw)
    lists = call(mlp_fn, digits, sparsities=[0.25, 0.5], seeds=[0], **kw)
    assert [r["sparsity"] for r in arrays.rows] == [0.25, 0.5]
    assert all(type(r["sparsity"]) is float and type(r["seed"]) is int for r in arrays.rows)
    assert [r["accuracy"] for r in arrays.rows] == [r["accuracy"] for r in lists.rows]


def test_fine_tune_epochs_zero_keeps_the_pruned_accuracy(digits):
    result = call(mlp_fn, digits, methods=["l1", "taylor"], sparsities=[0.7], seeds=[0],
                  fine_tune={"epochs": 0}, latency=False)
    for row in result.rows:
        assert row["accuracy"] == row["pruned_accuracy"]
        assert row["pruned_accuracy"] != row["dense_accuracy"]  # pruning did something


# --------------------------------------------------------------------------------------
# 4. Against references: pk.prune / pk.shrink / pk.count_* called directly
# --------------------------------------------------------------------------------------

MLP_SPECS = {  # label -> (method, scope, options(seed, stats))
    "random": ("random", "layer", lambda seed, stats: {"seed": seed}),
    "l1": ("l1", "layer", lambda seed, stats: {}),
    "l1 (global)": ("l1", "global", lambda seed, stats: {}),
    "l2": ("l2", "layer", lambda seed, stats: {}),
    "gradient": ("gradient", "layer", lambda seed, stats: {"stats": stats["gradient"]}),
    "taylor": ("taylor", "layer", lambda seed, stats: {"stats": stats["taylor"]}),
    "kmeans": ("kmeans", "layer", lambda seed, stats: {}),
    "channel": ("channel", "layer", lambda seed, stats: {}),
}


def test_every_row_matches_pruning_the_dense_model_directly(mlp_result, mlp_dense, digits):
    """achieved_sparsity and pruned_accuracy of every row (gradient and taylor with stats
    from pk.collect_gradient_stats on the dense model, random with the run's seed)."""
    assert sorted(MLP_SPECS) == sorted(mlp_result.methods)
    for row in mlp_result.rows:
        dense, stats = mlp_dense[row["seed"]]
        method, scope, options = MLP_SPECS[row["method"]]
        direct = prune_copy(dense, row["sparsity"], method, row["seed"], ["fc3"], scope,
                            **options(row["seed"], stats))
        where = (row["method"], row["sparsity"], row["seed"])
        assert row["achieved_sparsity"] == pk.sparsity(direct), where
        assert row["pruned_accuracy"] == pk.training.evaluate(direct, digits[1]), where


def test_global_scope_is_passed_on(mlp_dense):
    """The "l1 (global)" row above matches scope="global"; here, that this differs from
    scope="layer" on this model (otherwise the check would not tell them apart)."""
    dense, _ = mlp_dense[0]
    layer = prune_copy(dense, 0.7, "l1", 0, ["fc3"])
    glob = prune_copy(dense, 0.7, "l1", 0, ["fc3"], "global")
    assert pk.sparsity(layer.fc1.weight) != pk.sparsity(glob.fc1.weight)


def test_compression_ratio_is_dense_params_over_params(mlp_result, vgg_result):
    for row in mlp_result.rows + vgg_result.rows:
        assert row["compression_ratio"] == row["dense_params"] / row["params"]
        assert row["theoretical_speedup"] == row["dense_macs"] / row["macs"]


def test_storage_ratio_counts_a_relative_index_per_weight(mlp_result, mlp_dense):
    """l1 rows, the book's storage convention (chapter 3's): 32-bit values plus a 5-bit
    relative index per kept weight of a Linear layer, and a filler entry for every 32
    zeros in a row beyond what an index can skip, or the dense tensor where that is
    smaller; biases dense (computed by hand here, with numpy)."""
    checked = set()
    for row in mlp_result.rows:
        if row["method"] != "l1" or row["dense_speedup"] != 1.0:
            continue  # shrink removed dead neurons: counted on the smaller model instead
        checked.add(row["sparsity"])
        dense, _ = mlp_dense[row["seed"]]
        direct = prune_copy(dense, row["sparsity"], "l1", row["seed"], ["fc3"])
        bits = 0
        for module in direct.modules():
            if isinstance(module, nn.Linear):
                flat = module.weight.detach().reshape(-1).numpy()
                pos = np.flatnonzero(flat)
                gaps = np.diff(np.concatenate([[-1], pos])) - 1     # zeros skipped before each
                entries = len(pos) + int(np.sum(gaps // 2**5))      # kept weights + fillers
                bits += min(32 * flat.size, entries * (32 + 5)) + 32 * module.bias.numel()
        assert row["storage_ratio"] == pytest.approx(32 * row["dense_params"] / bits, rel=1e-12)
    assert checked == set(SPARSITIES)


def test_storage_ratio_never_exceeds_the_compression_ratio(mlp_result, vgg_result):
    """Indices (and zeros kept inside kernels) only add bits; a shrunk channel-pruned model
    is stored dense, so there the two ratios agree."""
    for row in mlp_result.rows + vgg_result.rows:
        assert row["storage_ratio"] <= row["compression_ratio"] * (1 + 1e-12), row
    channel = [r for r in vgg_result.rows if r["method"] == "channel" and r["sparsity"] > 0]
    assert channel
    for row in channel:
        assert row["storage_ratio"] == pytest.approx(row["compression_ratio"], rel=0.01)


def test_l1_and_l2_rank_single_weights_identically(mlp_result):
    for seed, s in itertools.product(SEEDS, SPARSITIES):
        l1, l2 = row_for(mlp_result, "l1", s, seed), row_for(mlp_result, "l2", s, seed)
        assert {k: v for k, v in reproducible(l1).items() if k != "method"} == \
               {k: v for k, v in reproducible(l2).items() if k != "method"}


@pytest.mark.parametrize("label", ["channel", "kernel", "l1"])
def test_cnn_rows_match_direct_pruning_fine_tuning_and_shrink(vgg_result, images, label):
    """The whole row, end to end: prune, evaluate, fine-tune (from the seeded state), evaluate,
    shrink, count. Counts come from the fine-tuned model: a dead kernel-pruned channel's
    constant output (its bias after BatchNorm and ReLU) changes with fine-tuning, and with it
    what shrink can cut out."""
    train, test = images
    dense, _ = build_dense(vgg_fn, train, 0)
    example = first_input(test)
    for s in (0.0, 0.5):
        row = row_for(vgg_result, label, s, 0)
        model = prune_copy(dense, s, label, 0, ["fc"], "layer")
        assert row["achieved_sparsity"] == pk.sparsity(model)
        assert row["pruned_accuracy"] == pk.training.evaluate(model, test)
        pk.training.fine_tune(model, train, progress=False, **FINE_TUNE)
        assert row["accuracy"] == pk.training.evaluate(model, test)
        small = pk.shrink(model.eval(), example)
        assert row["shrunk"] is True
        assert row["params"] == pk.count_parameters(small, nonzero_only=True)
        assert row["macs"] == pk.count_macs(small, example, nonzero_only=True)
        assert row["dense_speedup"] == row["dense_macs"] / pk.count_macs(small, example)


def test_channel_rows_match_shrink_of_the_directly_pruned_model(vgg_result, images):
    """Channel pruning masks biases and BatchNorm too: what shrink cuts out does not depend
    on fine-tuning, and the channels are really gone from the deployed model."""
    train, test = images
    dense, _ = build_dense(vgg_fn, train, 0)
    example = first_input(test)
    row = row_for(vgg_result, "channel", 0.5, 0)
    small = pk.shrink(prune_copy(dense, 0.5, "channel", 0, ["fc"], "layer"), example)
    assert (small.conv1.out_channels, small.conv2.out_channels) == (4, 8)
    assert row["params"] == pk.count_parameters(small, nonzero_only=True)
    assert row["macs"] == pk.count_macs(small, example, nonzero_only=True)
    assert row["dense_speedup"] > 2


# --------------------------------------------------------------------------------------
# 5. exclude
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclude, masked", [
    ("classifier", {"fc1", "fc2"}),
    ((), {"fc1", "fc2", "fc3"}),
    (["fc1"], {"fc2", "fc3"}),
])
def test_exclude_decides_which_layers_are_pruned(digits, exclude, masked):
    seen = []
    result = call(mlp_fn, digits, methods=["l1"], sparsities=[0.5], seeds=[0],
                  train={"epochs": 0}, exclude=exclude, latency=False,
                  fine_tune=lambda m: seen.append({n for n, x in m.named_modules()
                                                   if hasattr(x, "weight_mask")}))
    assert seen == [masked]
    assert result.settings["exclude"] == sorted({"fc1", "fc2", "fc3"} - masked)


# --------------------------------------------------------------------------------------
# 6-8. methods and bad input: errors name the argument and the value, before training
# --------------------------------------------------------------------------------------

EMPTY = pk.data.TensorLoader(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long))

BAD = [
    # (keyword, value, exception, texts the message must contain)
    ("sparsities", [0.5, 1.5], ValueError, ["'sparsities[1]'", "1.5"]),
    ("sparsities", [-0.1], ValueError, ["'sparsities[0]'", "-0.1"]),
    ("sparsities", [], ValueError, ["'sparsities'", "[]"]),
    ("sparsities", np.array([0.5, 2.0]), ValueError, ["'sparsities[1]'", "2.0"]),
    ("sparsities", 0.5, TypeError, ["'sparsities'", "0.5"]),
    ("sparsities", [0.5, 0.5], ValueError, ["'sparsities'", "repeated", "[0.5, 0.5]"]),
    ("seeds", [0, -1], ValueError, ["'seeds[1]'", "-1"]),
    ("seeds", [1, 1], ValueError, ["'seeds'", "repeated", "[1, 1]"]),
    ("seeds", [0.5], TypeError, ["'seeds[0]'", "0.5"]),
    ("model_fn", 3, TypeError, ["'model_fn'", "3"]),
    ("model_fn", lambda: "not a model", TypeError, ["'model_fn'", "torch.nn.Module", "str"]),
    ("train", {"epoch": 1}, ValueError, ["'train'", "'epoch'"]),
    ("train", 5, TypeError, ["'train'", "5"]),
    ("fine_tune", {"epochs": 1, "momentumm": 0.5}, ValueError, ["'fine_tune'", "'momentumm'"]),
    ("evaluate", "accuracy", TypeError, ["'evaluate'", "'accuracy'"]),
    ("loss_fn", 1, TypeError, ["'loss_fn'", "1"]),
    ("gradient_batches", 0, ValueError, ["'gradient_batches'", "0"]),
    ("latency_batch", 0, ValueError, ["'latency_batch'", "0"]),
    ("latency_repeats", 2.5, TypeError, ["'latency_repeats'", "2.5"]),
    ("threads", 0, ValueError, ["'threads'", "0"]),
    ("progress", 1, TypeError, ["'progress'", "1"]),
    ("latency", "yes", TypeError, ["'latency'", "'yes'"]),
    ("use_shrink", None, TypeError, ["'use_shrink'", "None"]),
    ("test_loader", EMPTY, ValueError, ["'test_loader'", "no batches"]),
    ("test_loader", [], ValueError, ["'test_loader'", "no batches"]),
    ("train_loader", 7, TypeError, ["'train_loader'", "7"]),
    ("exclude", ["fc9"], ValueError, ["'exclude'", "'fc9'"]),
    ("exclude", "fc1", TypeError, ["'exclude'", "'fc1'"]),
    ("methods", "l1", TypeError, ["'methods'", "'l1'"]),
    ("methods", [], ValueError, ["'methods'", "empty"]),
    ("methods", ["l1", "nope"], ValueError, ["methods[1]", "'nope'"]),
    ("methods", [{"method": "l1", "p": 2}], ValueError, ["'methods[0]'", "'p'", "'l1'"]),
    ("methods", [{"method": "random", "n_clusters": 4}], ValueError, ["'methods[0]'", "'n_clusters'"]),
    ("methods", [{"method": "l1", "scope": "everywhere"}], ValueError, ["scope", "'everywhere'"]),
    ("methods", [{"scope": "global"}], TypeError, ["'methods[0]'", "'method'"]),
    ("methods", [{"method": "l1", "label": 3}], TypeError, ["label", "3"]),
    ("methods", ["l1", {"method": "l1"}], ValueError, ["'methods'", "label", "['l1']"]),
    ("methods", ["random", {"method": "l1", "label": "random"}], ValueError, ["'methods'", "['random']"]),
    ("methods", ["l1", "kernel"], ValueError, ["'methods[1]'", "'kernel'", "MLP"]),
]


@pytest.mark.parametrize("keyword, value, exc, texts", BAD,
                         ids=[f"{k}={v!r}" for k, v, _, _ in BAD])
def test_bad_argument_is_refused_before_any_training(digits, keyword, value, exc, texts):
    counts = {"model_fn": 0, "train": 0}

    def model_fn():
        counts["model_fn"] += 1
        return mlp_fn()

    def train(model):
        counts["train"] += 1

    args = {"model_fn": model_fn, "train_loader": digits[0], "test_loader": digits[1]}
    kwargs = {"methods": ["l1"], "sparsities": [0.5], "seeds": [0], "train": train,
              "fine_tune": {"epochs": 0}, "progress": False, "latency": False}
    (args if keyword in args else kwargs)[keyword] = value
    with pytest.raises(exc) as info:
        pk.compare(args["model_fn"], args["train_loader"], args["test_loader"], **kwargs)
    for text in texts:
        assert text in str(info.value), (text, str(info.value))
    assert counts["train"] == 0
    assert counts["model_fn"] <= 1  # at most the probe that checks methods and exclude


def test_dict_specs_with_label_scope_and_options(digits, mlp_dense):
    methods = [{"method": "l1", "scope": "global", "label": "global magnitude"},
               {"method": "random", "seed": 7},
               {"method": "channel", "p": 2}]
    result = call(mlp_fn, digits, methods=methods, sparsities=[0.7], seeds=[0],
                  fine_tune={"epochs": 0}, latency=False)
    assert result.methods == ["global magnitude", "random (seed=7)", "channel (p=2)"]
    dense, _ = mlp_dense[0]
    for label, (method, scope, options) in zip(result.methods, [("l1", "global", {}),
                                                                ("random", "layer", {"seed": 7}),
                                                                ("channel", "layer", {"p": 2})]):
        direct = prune_copy(dense, 0.7, method, 0, ["fc3"], scope, **options)
        row = row_for(result, label, 0.7, 0)
        assert row["pruned_accuracy"] == pk.training.evaluate(direct, digits[1]), label
        assert row["achieved_sparsity"] == pk.sparsity(direct), label


# --------------------------------------------------------------------------------------
# 7. "random" gets the run's seed unless one is given
# --------------------------------------------------------------------------------------


def test_random_uses_the_seed_of_the_run(recorded):
    result, _, calls = recorded
    masks = {(r["method"], r["sparsity"], r["seed"]): c["fc1_mask"]
             for r, c in zip(result.rows, calls)}
    for s in (0.5, 0.8):
        assert not torch.equal(masks["random", s, 0], masks["random", s, 1])
        for seed in SEEDS:  # the same seed reproduces the mask (of any model of this shape)
            direct = pk.prune(mlp_fn(), s, method="random", seed=seed, exclude=["fc3"])
            assert torch.equal(masks["random", s, seed], direct.fc1.weight_mask)
        # a seed given in the spec wins over the run's seed
        assert torch.equal(masks["random 5", s, 0], masks["random 5", s, 1])
        direct = pk.prune(mlp_fn(), s, method="random", seed=5, exclude=["fc3"])
        assert torch.equal(masks["random 5", s, 0], direct.fc1.weight_mask)


# --------------------------------------------------------------------------------------
# 9-10. Latency, use_shrink, models shrink cannot rebuild
# --------------------------------------------------------------------------------------


def test_latency_only_where_structure_was_removed(vgg_result):
    assert torch.get_num_threads() == 1  # threads=2 was restored after timing
    for row in vgg_result.rows:
        removed = row["shrunk"] and row["dense_speedup"] > 1
        assert (row["latency_ms"] is not None) == removed, (row["method"], row["sparsity"])
        if removed:
            assert row["latency_ms"] > 0 and row["dense_latency_ms"] > 0
            assert row["measured_speedup"] == row["dense_latency_ms"] / row["latency_ms"]
        else:
            assert row["dense_latency_ms"] is None and row["measured_speedup"] is None
    for method in ("channel", "kernel"):
        assert row_for(vgg_result, method, 0.5, 0)["latency_ms"] is not None
        assert row_for(vgg_result, method, 0.0, 0)["latency_ms"] is None
    assert all(r["latency_ms"] is None for r in vgg_result.rows if r["method"] == "l1")


@pytest.mark.parametrize("use_shrink, latency", [(True, False), (False, True)])
def test_latency_false_and_use_shrink_false(digits, use_shrink, latency):
    test = digits[1]
    result = call(mlp_fn, digits, methods=["channel", "l1"], sparsities=[0.5], seeds=[0],
                  train={"epochs": 0}, fine_tune={"epochs": 0}, use_shrink=use_shrink,
                  latency=latency)
    assert all(r[k] is None for r in result.rows for k in TIMINGS - {"seconds"})
    channel = row_for(result, "channel", 0.5, 0)
    assert channel["shrunk"] is use_shrink
    if use_shrink:
        assert channel["dense_speedup"] > 1
    else:  # measured as masked: a dense implementation computes every MAC
        pk.training.seed_everything(0)
        direct = prune_copy(mlp_fn(), 0.5, "channel", 0, ["fc3"])
        assert channel["dense_speedup"] == 1.0
        assert channel["params"] == pk.count_parameters(direct, nonzero_only=True)
        assert channel["macs"] == pk.count_macs(direct, first_input(test), nonzero_only=True)


def test_a_model_shrink_cannot_rebuild_is_measured_masked(images):
    test = images[1]

    def resnet():
        return pk.models.TinyResNet(in_channels=1, width=4)

    pk.training.seed_everything(0)
    direct = prune_copy(resnet(), 0.5, "channel", 0, ["fc"])
    with pytest.raises(pk.UnsupportedGraphError):  # the premise of this test
        pk.shrink(direct, first_input(test))
    result = call(resnet, images, methods=["channel"], sparsities=[0.5], seeds=[0],
                  train={"epochs": 0}, fine_tune={"epochs": 0})
    (row,) = result.rows
    assert row["shrunk"] is False
    assert row["latency_ms"] is None and row["dense_speedup"] == 1.0
    assert row["params"] == pk.count_parameters(direct, nonzero_only=True)
    assert row["achieved_sparsity"] == pk.sparsity(direct) > 0.4


# --------------------------------------------------------------------------------------
# 11. summary() and best_within()
# --------------------------------------------------------------------------------------


def test_summary_is_mean_and_stdev_over_seeds(mlp_result):
    summary = mlp_result.summary()
    assert [(it["method"], it["sparsity"]) for it in summary] == list(
        itertools.product(MLP_DEFAULT_LABELS, SPARSITIES))
    for item in summary:
        rows = [r for r in mlp_result.rows
                if (r["method"], r["sparsity"]) == (item["method"], item["sparsity"])]
        assert item["n"] == len(rows) == len(SEEDS)
        assert set(item) == {"method", "sparsity", "n"} | {f"{m}_{s}" for m in NUMERIC
                                                            for s in ("mean", "std")}
        for metric in NUMERIC:
            values = [r[metric] for r in rows if r[metric] is not None]
            if not values:
                assert item[f"{metric}_mean"] is None and item[f"{metric}_std"] is None
                continue
            assert item[f"{metric}_mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            expected_std = statistics.stdev(values) if len(values) > 1 else 0.0
            assert item[f"{metric}_std"] == pytest.approx(expected_std, rel=1e-9, abs=1e-15)
    accuracies = [d["accuracy"] for d in mlp_result.dense]
    mean, std = mlp_result.dense_accuracy
    assert mean == pytest.approx(statistics.mean(accuracies), rel=1e-12)
    assert std == pytest.approx(statistics.stdev(accuracies), rel=1e-9)


def synthetic(rows, dense_accuracies=(0.75, 0.75)):
    """A Comparison built by hand: exactly representable accuracies, known answers."""
    full = []
    for method, sparsity, seed, accuracy, ratio, speedup in rows:
        row = {k: 1.0 for k in NUMERIC}
        row.update(method=method, sparsity=sparsity, seed=seed, accuracy=accuracy,
                   compression_ratio=ratio, theoretical_speedup=speedup, latency_ms=None,
                   dense_latency_ms=None, measured_speedup=None, shrunk=False)
        full.append(row)
    dense = [{"seed": i, "accuracy": a, "params": 1, "macs": 1}
             for i, a in enumerate(dense_accuracies)]
    return pk.Comparison(rows=full, dense=dense)


HAND = synthetic([
    # method, sparsity, seed, accuracy, compression ratio, theoretical speed-up
    ("a", 0.5, 0, 0.75, 2.0, 2.0), ("a", 0.5, 1, 0.75, 2.0, 2.0),
    ("a", 0.9, 0, 0.5, 10.0, 10.0), ("a", 0.9, 1, 0.5, 10.0, 10.0),     # exactly at 0.75 - 0.25
    ("a", 0.95, 0, 0.5, 20.0, 20.0), ("a", 0.95, 1, 0.25, 20.0, 20.0),  # mean 0.375: too low
    ("b", 0.5, 0, 0.25, 2.0, 2.0), ("b", 0.5, 1, 0.25, 2.0, 2.0),       # never good enough
    ("c", 0.5, 0, 1.0, 4.0, 1.5), ("c", 0.5, 1, 1.0, 4.0, 1.5),         # largest ratio of c
    ("c", 0.9, 0, 0.75, 3.0, 6.0), ("c", 0.9, 1, 0.75, 3.0, 6.0),       # largest speed-up of c
])


def test_best_within_against_a_hand_computation():
    # dense mean 0.75; tolerance 0.25: accuracy_mean >= 0.5 qualifies (boundary included)
    best = HAND.best_within(0.25)
    assert list(best) == ["a", "b", "c"]
    assert best["a"]["sparsity"] == 0.9 and best["a"]["compression_ratio_mean"] == 10.0
    assert best["b"] is None
    assert best["c"]["sparsity"] == 0.5  # the largest ratio, not the largest sparsity
    assert {m: b and b["sparsity"] for m, b in HAND.best_within(0.0).items()} == \
           {"a": 0.5, "b": None, "c": 0.5}
    assert HAND.best_within(0.25, x="theoretical_speedup")["c"]["sparsity"] == 0.9
    assert {m: b and b["sparsity"] for m, b in HAND.best_within(1.0).items()} == \
           {"a": 0.95, "b": 0.5, "c": 0.5}


@pytest.mark.parametrize("tolerance", [0.0, 0.03, 1.0])
def test_best_within_on_a_real_comparison(mlp_result, tolerance):
    floor = statistics.mean(d["accuracy"] for d in mlp_result.dense) - tolerance
    summary = mlp_result.summary()
    best = mlp_result.best_within(tolerance)
    assert list(best) == MLP_DEFAULT_LABELS
    for method in MLP_DEFAULT_LABELS:
        ok = [it for it in summary if it["method"] == method and it["accuracy_mean"] >= floor]
        expected = max(ok, key=lambda it: it["compression_ratio_mean"]) if ok else None
        assert best[method] == expected, method


@pytest.mark.parametrize("kwargs, exc, texts", [
    ({"tolerance": -0.01}, ValueError, ["'tolerance'", "-0.01"]),
    ({"tolerance": "0.1"}, ValueError, ["'tolerance'", "'0.1'"]),
    ({"tolerance": True}, ValueError, ["'tolerance'", "True"]),
    ({"x": "size"}, ValueError, ["'x'", "'size'"]),
    ({"x": 3}, TypeError, ["'x'", "3"]),
])
def test_best_within_refuses_bad_arguments(kwargs, exc, texts):
    with pytest.raises(exc) as info:
        HAND.best_within(**kwargs)
    for text in texts:
        assert text in str(info.value)


# --------------------------------------------------------------------------------------
# 12. plot(), str(), to_pandas()
# --------------------------------------------------------------------------------------


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib", reason="plot needs matplotlib (the 'book' extra)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def test_plot_draws_one_line_per_method_and_the_dense_accuracy(mlp_result, plt):
    ax = mlp_result.plot()
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == MLP_DEFAULT_LABELS + ["dense"]
    assert ax.get_xscale() == "log"
    summary = mlp_result.summary()
    for line in lines[:-1]:
        points = sorted((it for it in summary if it["method"] == line.get_label()),
                        key=lambda it: it["compression_ratio_mean"])
        assert list(line.get_xdata()) == [it["compression_ratio_mean"] for it in points]
        assert list(line.get_ydata()) == [it["accuracy_mean"] for it in points]
    assert list(lines[-1].get_ydata()) == [mlp_result.dense_accuracy[0]] * 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == MLP_DEFAULT_LABELS + ["dense"]


def test_plot_options(mlp_result, plt):
    ax = mlp_result.plot(x="achieved_sparsity", methods=["l1", "random"])
    assert ax.get_xscale() == "linear"
    assert [line.get_label() for line in ax.get_lines()] == ["l1", "random", "dense"]
    _, given = plt.subplots()
    assert mlp_result.plot(y="params", ax=given, title="size") is given
    assert [line.get_label() for line in given.get_lines()] == MLP_DEFAULT_LABELS  # no dense
    assert given.get_title() == "size"


@pytest.mark.parametrize("kwargs, texts", [
    ({"methods": ["l1", "nope"]}, ["'methods'", "nope"]),
    ({"x": "size"}, ["'x'", "'size'"]),
    ({"y": "loss"}, ["'y'", "'loss'"]),
])
def test_plot_refuses_unknown_names(mlp_result, plt, kwargs, texts):
    with pytest.raises(ValueError) as info:
        mlp_result.plot(**kwargs)
    for text in texts:
        assert text in str(info.value)


def test_str_lists_every_method_and_the_dense_models(mlp_result):
    text = str(mlp_result)
    assert text == repr(mlp_result)
    lines = text.splitlines()
    for label in MLP_DEFAULT_LABELS:
        # columns are separated by two spaces or more; labels contain single spaces
        assert sum(re.split(r"\s{2,}", line)[0] == label for line in lines) == len(SPARSITIES)
    assert lines[-1].startswith(f"dense ({len(SEEDS)} seeds)")


def test_html_is_the_same_table(mlp_result):
    """In a notebook the comparison shows as an HTML table with the cells print() shows."""
    page = mlp_result._repr_html_()
    table = mlp_result._table()
    assert page.count("<tr>") == 1 + len(table.rows) and "<tfoot>" in page
    text = str(mlp_result)
    for row in table.rows:
        assert all(cell in text and cell in page for cell in row)


def test_to_pandas(mlp_result):
    pd = pytest.importorskip("pandas", reason="to_pandas needs pandas, an optional dependency")
    frame = mlp_result.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == len(mlp_result.rows)
    assert set(frame.columns) == COLUMNS
    assert frame["accuracy"].tolist() == [r["accuracy"] for r in mlp_result.rows]


def test_val_loader_records_validation_accuracy_and_best_within_chooses_on_it():
    split = pk.data.load("digits", seed=0, validation_fraction=0.2)
    train, test, val = split.loader("train", 64), split.loader("test"), split.loader("val")
    result = pk.compare(lambda: pk.models.MLP(hidden=(16,)), train, test, val_loader=val,
                        methods=["l1"], sparsities=[0.5, 0.9], seeds=[0],
                        train={"epochs": 2}, fine_tune={"epochs": 1}, progress=False,
                        latency=False)
    for row in result.rows:
        assert row["val_accuracy"] is not None and row["dense_val_accuracy"] is not None
        assert row["dense_val_accuracy"] == result.dense[0]["val_accuracy"]
    best = result.best_within(1.0, on="val_accuracy")["l1"]        # everything qualifies
    assert best["sparsity"] == 0.9
    with pytest.raises(ValueError, match="'on' parameter of best_within"):
        result.best_within(0.01, on="test")


def test_at_interpolates_at_matched_achieved_compression():
    rows = [dict(method=m, sparsity=s, seed=0, compression_ratio=c, accuracy=a)
            for m, s, c, a in (("a", 0.5, 2.0, 0.9), ("a", 0.9, 10.0, 0.5),
                               ("b", 0.5, 4.0, 0.8), ("b", 0.9, 40.0, 0.2))]
    got = pk.Comparison(rows, dense=[]).at(4.0)
    assert got["b"] == pytest.approx(0.8)
    assert got["a"] == pytest.approx(0.9 + (0.5 - 0.9) * math.log(2) / math.log(5))
    assert pk.Comparison(rows, dense=[]).at(1.5)["a"] is None     # not reached: no guess
    with pytest.raises(ValueError, match="'value' parameter of at"):
        pk.Comparison(rows, dense=[]).at(-1)
