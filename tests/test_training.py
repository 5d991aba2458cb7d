"""Data, models, training, schedules and plotting: what the chapters rely on."""

import math
import pathlib
import sys

import matplotlib
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.schedules import GradualPruning, cubic_sparsity, schedule

matplotlib.use("Agg")


# -- data ---------------------------------------------------------------------------------

def test_digits_split_is_stratified_standardised_and_seeded():
    a = pk.data.load("digits", seed=1)
    b = pk.data.load("digits", seed=1)
    c = pk.data.load("digits", seed=2)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape[1] == 64 and len(a.x_train) + len(a.x_test) == 1797
    assert abs(float(a.x_train.mean())) < 1e-4 and abs(float(a.x_train.std()) - 1) < 1e-3
    per_class = torch.bincount(torch.cat([a.y_train, a.y_test]), minlength=10).double()
    in_test = torch.bincount(a.y_test, minlength=10).double()
    assert bool(((in_test - 0.2 * per_class).abs() <= 1).all())  # stratified split


def test_mnist_subset_is_real_mnist_offline():
    s = pk.data.load("mnist-5k", flatten=False)
    assert s.x_train.shape == (4000, 1, 28, 28) and s.x_test.shape == (1000, 1, 28, 28)
    assert torch.equal(torch.bincount(s.y_train), torch.full((10,), 400))


def test_full_mnist_needs_explicit_download():
    with pytest.raises(ValueError, match="download=True"):
        pk.data.load("mnist")


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="'name'.*'digits'"):
        pk.data.load("cifar")


def test_tensor_loader_covers_every_sample_once_per_epoch_reproducibly():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    loader = pk.data.TensorLoader(x, y, batch_size=4, shuffle=True)
    assert len(loader) == 3
    torch.manual_seed(0)
    epoch1 = torch.cat([b for _, b in loader])
    epoch2 = torch.cat([b for _, b in loader])
    assert sorted(epoch1.tolist()) == list(range(10)) and not torch.equal(epoch1, epoch2)
    torch.manual_seed(0)  # the global RNG decides, as for DataLoader: reusing a loader reproduces
    assert torch.equal(torch.cat([b for _, b in loader]), epoch1)
    private = pk.data.TensorLoader(x, y, batch_size=4, shuffle=True, seed=3)
    again = pk.data.TensorLoader(x, y, batch_size=4, shuffle=True, seed=3)
    assert torch.equal(torch.cat([b for _, b in private]), torch.cat([b for _, b in again]))


# -- models -------------------------------------------------------------------------------

@pytest.mark.parametrize("model, n_params, shape", [
    (pk.models.LeNet300100(), 266_610, (2, 784)),
    (pk.models.LeNet5(), 431_080, (2, 1, 28, 28)),
    (pk.models.VGG((8, "M", 16, "M"), image_size=8), None, (2, 3, 8, 8)),
])
def test_models_have_published_sizes_and_run(model, n_params, shape):
    if n_params is not None:  # the sizes Han et al. 2015 report (267K and 431K)
        assert sum(p.numel() for p in model.parameters()) == n_params
    assert model(torch.randn(shape)).shape == (2, 10)


# -- training -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return pk.data.loaders("digits", batch_size=64, seed=0)


def test_training_learns_and_is_reproducible(digits):
    train, test = digits
    accs = []
    for _ in range(2):
        pk.training.seed_everything(0)
        model = pk.models.MLP(64, (32,), 10)
        history = pk.training.train(model, train, epochs=3, test_loader=test, progress=False)
        accs.append(history[-1]["test_accuracy"])
        assert history[-1]["loss"] < history[0]["loss"]
    assert accs[0] == accs[1] and accs[0] > 0.85


def test_fine_tune_keeps_masks_and_refuses_dense_models(digits):
    train, _ = digits
    pk.training.seed_everything(0)
    model = pk.models.MLP(64, (32,), 10)
    with pytest.raises(ValueError, match="no"):
        pk.training.fine_tune(model, train, progress=False)
    pk.prune(model, 0.7)
    before = {n: b.clone() for n, b in model.named_buffers()}
    pk.training.fine_tune(model, train, epochs=2, progress=False)
    assert abs(pk.sparsity(model) - 0.7) < 1e-3
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())


def test_l1_penalty_drives_weights_towards_zero_more_than_l2(digits):
    train, _ = digits
    small = {}
    for name, kw in {"none": {}, "l1": {"l1": 1e-3}, "l2": {"l2": 1e-3}}.items():
        pk.training.seed_everything(0)
        model = pk.models.MLP(64, (32,), 10)
        pk.training.train(model, train, epochs=3, progress=False, **kw)
        w = torch.cat([m.weight.detach().reshape(-1) for m in model.modules() if isinstance(m, nn.Linear)])
        small[name] = float((w.abs() < 1e-3).float().mean())
    assert small["l1"] > small["l2"] and small["l1"] > small["none"]


def test_penalty_reaches_the_original_weights_of_a_pruned_layer():
    layer = pk.prune(nn.Linear(4, 3), 0.5)
    layer(torch.randn(2, 4))  # after a forward pass, as in a training loop
    pk.training.penalty(layer, l1=1.0).backward()
    grad = layer.weight_orig.grad
    assert torch.equal(grad == 0, layer.weight_mask == 0)  # pruned entries get no push


def test_train_validates_its_arguments(digits):
    train, _ = digits
    model = pk.models.MLP(64, (8,), 10)
    with pytest.raises(ValueError, match="'optimizer'"):
        pk.training.train(model, train, optimizer="lbfgs", progress=False)
    with pytest.raises(TypeError, match="'epochs'"):
        pk.training.train(model, train, epochs=1.5, progress=False)


# -- schedules ----------------------------------------------------------------------------

def test_cubic_schedule_matches_zhu_and_gupta():
    s_i, s_f, t0, n_dt = 0.1, 0.9, 2, 8
    for t in range(t0, t0 + n_dt + 1):
        expected = s_f + (s_i - s_f) * (1 - (t - t0) / n_dt) ** 3
        assert math.isclose(cubic_sparsity(t, s_f, start=t0, end=t0 + n_dt, initial_sparsity=s_i), expected)
    assert cubic_sparsity(0, s_f, start=t0, end=10, initial_sparsity=s_i) == s_i
    assert cubic_sparsity(99, s_f, start=t0, end=10) == s_f


def test_schedules_end_at_the_target_and_increase():
    for kind in ("cubic", "linear", "one-shot"):
        steps = schedule(0.9, 5, kind=kind)
        assert len(steps) == 5 and steps[-1] == 0.9 and steps == sorted(steps)


def test_gradual_pruning_reaches_the_target_with_nested_masks(digits):
    train, _ = digits
    pk.training.seed_everything(0)
    model = pk.models.MLP(64, (32,), 10)
    masks = []
    gradual = GradualPruning(0.8, start_epoch=1, end_epoch=3, scope="global")
    def record(epoch, m):
        gradual(epoch, m)
        masks.append(m.fc1.weight_mask.clone())
    pk.training.train(model, train, epochs=3, callback=record, progress=False)
    assert abs(pk.sparsity(model) - 0.8) < 1e-3
    for earlier, later in zip(masks, masks[1:]):
        assert bool((later <= earlier).all())  # a pruned weight is never revived


def test_gradual_pruning_validates():
    with pytest.raises(ValueError, match="'end_epoch'"):
        GradualPruning(0.5, start_epoch=3, end_epoch=2)


# -- plotting -----------------------------------------------------------------------------

def test_summarize_gives_mean_and_sample_std():
    rows = [{"m": "a", "x": 1, "y": v} for v in (1.0, 2.0, 3.0)] + [{"m": "b", "x": 1, "y": 5.0}]
    out = pk.plotting.summarize(rows, "x", "y", by="m")
    assert out["a"] == [(1, 2.0, 1.0, 3)] and out["b"] == [(1, 5.0, 0.0, 1)]


def test_plots_draw_labelled_axes():
    import matplotlib.pyplot as plt

    model = pk.prune(pk.models.MLP(784, (16,), 10), 0.5)
    rows = [{"method": "l1", "sparsity": s, "accuracy": 1 - s, "seed": k} for s in (0.5, 0.9) for k in (0, 1)]
    axes = [
        pk.plotting.plot_curves(rows, "sparsity", "accuracy", reference=1.0, percent_x=True),
        pk.plotting.plot_weight_histograms({"pruned": model, "tensor": torch.randn(100)}),
        pk.plotting.plot_mask(model.fc1.weight_mask.T),
        pk.plotting.plot_input_mask(model.fc1.weight_mask),
    ]
    for ax in axes[:3]:
        assert ax.get_xlabel() and ax.get_ylabel()
    plt.close("all")


def test_validation_split_is_disjoint_stratified_and_seeded():
    a = pk.data.load("digits", seed=3, validation_fraction=0.2)
    b = pk.data.load("digits", seed=3, validation_fraction=0.2)
    c = pk.data.load("digits", seed=4, validation_fraction=0.2)
    n = len(a.x_train) + len(a.x_val) + len(a.x_test)
    assert n == 1797 and abs(len(a.x_val) - 0.2 * n) <= 1 and abs(len(a.x_test) - 0.2 * n) <= 1
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    rows = {tuple(r.tolist()) for r in a.x_val}
    assert not rows & {tuple(r.tolist()) for r in a.x_test}
    # stratified: every class is in the validation set, in proportion
    counts = torch.bincount(a.y_val, minlength=10)
    assert counts.min() >= 30
    # the test part does not depend on whether a validation part is carved out
    d = pk.data.load("digits", seed=3)
    assert torch.equal(torch.sort(d.y_test).values, torch.sort(a.y_test).values)
    assert len(d.x_val) == 0 and "validation" not in repr(d) and "validation" in repr(a)
    assert a.loader("val").batch_size == 1024 and a.loader("train").shuffle
    with pytest.raises(ValueError, match="no validation images"):
        d.loader("val")


@pytest.mark.parametrize("bad", [1.0, -0.1, 0.8])
def test_validation_fraction_out_of_range_names_the_argument(bad):
    with pytest.raises(ValueError, match="validation_fraction"):
        pk.data.load("digits", validation_fraction=bad)


def test_char_corpus_round_trips_and_keeps_validation_text_apart():
    text = pk.data.load_text("tempest")
    assert text.startswith("THE TEMPEST") and len(text) > 90000
    corpus = pk.data.CharCorpus(text, validation_fraction=0.1)
    assert corpus.decode(corpus.encode(text[:500])) == text[:500]
    assert len(corpus.train) + len(corpus.val) == len(text)
    x, y = corpus.batch(4, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    xv, yv = corpus.windows(16, part="val")
    assert torch.equal(xv.flatten()[1:], yv.flatten()[:-1])
    assert int(xv.max()) < corpus.vocab_size
    with pytest.raises(ValueError, match="'name' parameter of load_text"):
        pk.data.load_text("hamlet")


def test_char_transformer_is_causal():
    torch.manual_seed(0)
    model = pk.models.CharTransformer(10, width=16, n_layers=1, n_heads=2, context=8).eval()
    ids = torch.randint(0, 10, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 10
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])  # later characters never leak backwards
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_progress_bar_fits_the_books_code_column(capsys):
    """The book's code column holds 80 monospace characters: a training bar is one line of
    at most 76, so that the rendered chapters show it without running off the page."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools" / "sphinx_ext"))
    from book_infra import render_stream_text

    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    pk.training.train(nn.Linear(5, 3), loader, epochs=2, progress=True, desc="a long description")
    shown = render_stream_text(capsys.readouterr().out).splitlines()
    assert len(shown) == 1 and "16/16" in shown[0]
    assert len(shown[0]) <= 76
