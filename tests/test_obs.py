"""Optimal Brain Surgeon (pk.obs_prune) on quadratic losses, where the answer is known."""

import itertools

import pytest
import torch

import prunekit as pk


def spd(n, seed, cond=50.0):
    """A random symmetric positive-definite n x n matrix (float64)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return (q * eig) @ q.T


def quad_loss(w, w_star, h):
    d = (w - w_star).reshape(-1).double()
    return float(0.5 * d @ h @ d)


def constrained_optimum(w_star, h, pruned):
    """argmin of 0.5 (w - w*)^T H (w - w*) subject to w[pruned] = 0, by a direct solve."""
    n = w_star.numel()
    pruned = torch.as_tensor(sorted(pruned), dtype=torch.long)
    kept = torch.tensor([i for i in range(n) if i not in set(pruned.tolist())], dtype=torch.long)
    w = torch.zeros(n, dtype=torch.float64)
    if kept.numel():
        # gradient on the kept coordinates: H_KK (w_K - w*_K) + H_KP (0 - w*_P) = 0
        rhs = h[kept][:, kept] @ w_star[kept] + h[kept][:, pruned] @ w_star[pruned]
        w[kept] = torch.linalg.solve(h[kept][:, kept], rhs)
    return w


def reference_obs(w, h, k):
    """The textbook loop: recompute the inverse of the kept block from scratch every step
    and visit every candidate weight in Python."""
    w = w.clone().double()
    n = w.numel()
    kept = list(range(n))
    for _ in range(k):
        hinv_kept = torch.linalg.inv(h[kept][:, kept])
        best, best_j = None, None
        for j, q in enumerate(kept):
            s = float(w[q] ** 2 / (2 * hinv_kept[j, j]))
            if best is None or s < best:
                best, best_j = s, j
        q = kept[best_j]
        delta = -(w[q] / hinv_kept[best_j, best_j]) * hinv_kept[:, best_j]
        for j, i in enumerate(kept):
            w[i] += delta[j]
        w[q] = 0.0
        kept.remove(q)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[kept] = True
    return w, mask


def test_single_removal_is_the_brute_force_optimum():
    # At the minimum w = w*, try every weight q: remove it and re-solve the others exactly.
    n = 9
    h = spd(n, 0)
    w_star = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    candidates = [(quad_loss(constrained_optimum(w_star, h, [q]), w_star, h), q) for q in range(n)]
    best_loss, best_q = min(candidates)

    new_w, keep = pk.obs_prune(w_star, h, 1 / n)
    assert int((~keep).sum()) == 1 and not keep[best_q]
    assert torch.allclose(new_w, constrained_optimum(w_star, h, [best_q]), atol=1e-10)
    assert quad_loss(new_w, w_star, h) == pytest.approx(best_loss, rel=1e-10)
    # ... and the OBS saliency w_q^2 / (2 [H^-1]_qq) is that loss
    hinv = torch.linalg.inv(h)
    assert best_loss == pytest.approx(float(w_star[best_q] ** 2 / (2 * hinv[best_q, best_q])),
                                      rel=1e-10)


def test_kept_weights_are_optimal_for_the_mask():
    # Sequential OBS on a quadratic: after k removals the kept weights minimise the loss
    # given the removed set, exactly as a direct solve does.
    n = 12
    h = spd(n, 2)
    w_star = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for s in (0.25, 0.5, 0.75):
        new_w, keep = pk.obs_prune(w_star, h, s)
        pruned = torch.nonzero(~keep).flatten().tolist()
        assert torch.allclose(new_w, constrained_optimum(w_star, h, pruned), atol=1e-9)


def test_two_removals_brute_force_on_a_tiny_problem():
    # Greedy OBS is not globally optimal in general, but it must never be worse than the
    # best single removal followed by the best second one (which is what it does), and
    # its loss must equal the exact loss of its own mask.
    n = 6
    h = spd(n, 4)
    w_star = torch.randn(n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    new_w, keep = pk.obs_prune(w_star, h, 2 / n)
    pruned = torch.nonzero(~keep).flatten().tolist()
    exact = quad_loss(constrained_optimum(w_star, h, pruned), w_star, h)
    assert quad_loss(new_w, w_star, h) == pytest.approx(exact, rel=1e-10)
    best_pair = min(quad_loss(constrained_optimum(w_star, h, list(p)), w_star, h)
                    for p in itertools.combinations(range(n), 2))
    assert exact >= best_pair - 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_reference_loop(seed):
    n = 15
    h = spd(n, 10 + seed)
    w = torch.randn(3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for s in (0.0, 0.2, 0.6, 1.0):
        k = round(s * n)
        ref_w, ref_mask = reference_obs(w.reshape(-1), h, k)
        new_w, keep = pk.obs_prune(w, h, s)
        assert new_w.shape == w.shape and keep.shape == w.shape and keep.dtype == torch.bool
        assert torch.equal(keep.reshape(-1), ref_mask)
        assert torch.allclose(new_w.reshape(-1), ref_w, atol=1e-9)


@pytest.mark.parametrize("n,s", [(10, 0.33), (64, 0.5), (37, 0.9), (8, 0.0), (8, 1.0)])
def test_exact_count_and_exact_zeros(n, s):
    h = spd(n, n)
    w = torch.randn(n, generator=torch.Generator().manual_seed(n)).float()
    new_w, keep = pk.obs_prune(w, h.float(), s)
    assert int((~keep).sum()) == round(s * n)
    assert torch.all(new_w[~keep] == 0)
    assert new_w.dtype == torch.float32 and keep.device == w.device


def test_ties_go_to_the_lower_index_and_it_beats_obd_on_correlated_weights():
    h = torch.eye(4, dtype=torch.float64)
    w = torch.ones(4, dtype=torch.float64)
    _, keep = pk.obs_prune(w, h, 0.5)
    assert keep.tolist() == [False, False, True, True]
    # Two strongly correlated weights: OBS moves the partner, OBD cannot.
    h = torch.tensor([[1.0, 0.99], [0.99, 1.0]], dtype=torch.float64)
    w_star = torch.tensor([1.0, 1.0], dtype=torch.float64)
    new_w, keep = pk.obs_prune(w_star, h, 0.5)
    obd = w_star.clone()
    obd[~keep] = 0
    assert quad_loss(new_w, w_star, h) < 0.05 * quad_loss(obd, w_star, h)


def test_damp_makes_a_singular_hessian_usable():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = torch.kron(torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64), x.T @ x)
    w = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(ValueError, match="'hessian'.*positive definite.*damp"):
        pk.obs_prune(w, h, 0.5)
    new_w, keep = pk.obs_prune(w, h, 0.5, damp=0.01)
    assert int((~keep).sum()) == 3 and torch.isfinite(new_w).all()


def test_inputs_untouched():
    h = spd(6, 7)
    w = torch.randn(2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    w0, h0 = w.clone(), h.clone()
    pk.obs_prune(w, h, 0.5, damp=0.1)
    assert torch.equal(w, w0) and torch.equal(h, h0)


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(weight=[1.0, 2.0]), TypeError, "'weight' parameter of obs_prune"),
    (dict(hessian=torch.eye(3)), ValueError, r"'hessian' parameter of obs_prune must be a square \(4, 4\)"),
    (dict(hessian=torch.eye(4)[:, :3]), ValueError, "'hessian'.*square"),
    (dict(hessian=torch.ones(4, 4).long()), TypeError, "'hessian'.*floating-point"),
    (dict(hessian="H"), TypeError, "'hessian'.*Got str"),
    (dict(hessian=torch.triu(torch.ones(4, 4)) + 3 * torch.eye(4)), ValueError, "'hessian'.*symmetric"),
    (dict(hessian=-torch.eye(4)), ValueError, "'hessian'.*positive definite"),
    (dict(hessian=torch.full((4, 4), float("nan"))), ValueError, "'hessian'.*finite"),
    (dict(sparsity=1.5), ValueError, "'sparsity' parameter of obs_prune.*1.5"),
    (dict(damp=-0.1), ValueError, "'damp' parameter of obs_prune.*-0.1"),
    (dict(damp="a"), TypeError, "'damp'"),
])
def test_bad_input_names_the_argument(kwargs, exc, pattern):
    args = dict(weight=torch.ones(2, 2), hessian=torch.eye(4), sparsity=0.5)
    args.update(kwargs)
    damp = args.pop("damp", 0.0)
    before = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)}
    with pytest.raises(exc, match=pattern):
        pk.obs_prune(args["weight"], args["hessian"], args["sparsity"], damp=damp)
    for k, v in before.items():
        assert torch.equal(args[k], v) or bool(torch.isnan(v).all())
