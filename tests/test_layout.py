"""The package's shape: one concept per module, no import cycles, a stable public API.

These properties keep prunekit easy to extend (a new layer type is one entry in
``prunekit.targets``, a new method one file in ``prunekit/methods``) and keep user code
working across releases.
"""

import ast
import importlib
import pathlib
import warnings

import pytest
import torch
from torch import nn

import prunekit as pk

ROOT = pathlib.Path(pk.__file__).parent
MODULES = sorted(ROOT.rglob("*.py"))


def module_name(path: pathlib.Path) -> str:
    parts = ["prunekit", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def internal_imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """``(imported prunekit module, at top level?)`` for every import in the file."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("prunekit"):
                targets = [mod]
                for alias in node.names:  # `from . import data` imports a submodule
                    if is_module(f"{mod}.{alias.name}"):
                        targets.append(f"{mod}.{alias.name}")
                out += [(t, id(node) in top) for t in targets]
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names if a.name.startswith("prunekit")]
    return out


def test_no_module_is_over_600_lines():
    long = {module_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_no_function_level_imports_of_prunekit_modules():
    # a function-level import is how an import cycle hides; every internal import is at the top
    late = {module_name(p): [m for m, at_top in internal_imports(p) if not at_top] for p in MODULES}
    assert not {k: v for k, v in late.items() if v}


#: Files allowed to format argument messages themselves: none.
HAND_FORMATTED_ALLOWED: set = set()  # every module's messages go through _validation


def hand_formatted_argument_messages(path: pathlib.Path) -> list[int]:
    """Lines of string literals (f-strings too, docstrings not) that spell "parameter of"."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        else:
            continue
        if "parameter of" in text:
            lines.append(node.lineno)
    return sorted(set(lines))


def test_argument_messages_are_formatted_in_validation_only():
    # "The 'x' parameter of f must be ... Got ... instead." has one home, so every message
    # keeps that form: _validation.invalid / argument_error / check_*
    found = {module_name(p): lines for p in MODULES
             if p.name != "_validation.py" and module_name(p) not in HAND_FORMATTED_ALLOWED
             and (lines := hand_formatted_argument_messages(p))}
    assert not found, f"use prunekit._validation's helpers instead (module: lines): {found}"


def test_the_message_check_sees_a_hand_formatted_message(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('def f(x):\n    """No \'parameter of\' here."""\n'
                      '    raise ValueError(f"The \'x\' parameter of "\n'
                      '                     f"f must be > 0. Got {x!r} instead.")\n')
    assert hand_formatted_argument_messages(sample) == [3]


def test_no_import_cycles():
    names = {module_name(p) for p in MODULES}
    graph = {}
    for p in MODULES:
        me = module_name(p)
        deps = set()
        for mod, _ in internal_imports(p):
            while mod not in names:  # `from .x import name`: x is the module
                mod = mod.rpartition(".")[0]
            if mod != me and not me.startswith(mod + "."):  # a child imports its package first anyway
                deps.add(mod)
        graph[me] = deps
    done, active = set(), []

    def visit(node):
        if node in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(node):] + [node]))
        if node in done:
            return
        active.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        active.pop()
        done.add(node)

    for m in sorted(graph):
        visit(m)


@pytest.mark.parametrize("name", sorted({module_name(p) for p in MODULES} - {"prunekit"}))
def test_import_prunekit_module_gives_the_module(name):
    module = importlib.import_module(name)
    assert module.__name__ == name
    leaf = name.rpartition(".")[2]
    parent = importlib.import_module(name.rpartition(".")[0])
    # the attribute of the parent package is the module itself, not a function named like it
    assert getattr(parent, leaf) is module, (name, getattr(parent, leaf))
    assert (module.__doc__ or "").strip(), f"{name} has no module docstring"


@pytest.mark.parametrize("name, home", [
    ("TinyResNet", pk.models.TinyResNet),
    ("PrunekitImportance", pk.structured.PrunekitImportance),
    ("PRUNABLE_TYPES", pk.targets.PRUNABLE_TYPES),
])
def test_names_that_left_the_top_level_still_work_with_a_deprecation_warning(name, home):
    with pytest.warns(DeprecationWarning, match=f"prunekit.{name} moved to"):
        assert getattr(pk, name) is home


def test_public_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in pk.__all__:
            getattr(pk, name)


def test_the_method_registry_is_read_only_from_outside():
    with pytest.raises(TypeError):
        pk.METHODS["mine"] = pk.METHODS["l1"]
    with pytest.raises(TypeError):
        del pk.METHODS["l1"]
    assert set(pk.METHODS) >= {"l1", "l2", "random", "gradient", "taylor", "fisher", "kmeans",
                               "channel", "kernel"}


def test_register_method_refuses_what_is_not_a_named_method():
    with pytest.raises(TypeError, match="named Method instance"):
        pk.register_method(object())
    with pytest.raises(TypeError, match="named Method instance"):
        pk.register_method(pk.Method())  # no name


class ReverseMagnitude(pk.Method):
    """The documented extension point: a subclass implementing only ``scores``."""

    name = "test-reverse-magnitude"

    def scores(self, name, module, weight, options):
        return -weight.abs()  # prune the largest weights first


@pytest.fixture
def reverse():
    method = pk.register_method(ReverseMagnitude())
    yield method
    pk.methods._REGISTRY.pop(method.name)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Conv1d(1, 3, 3), nn.Flatten(), nn.Linear(3, 2))


def expected_keep(weight: torch.Tensor, n_prune: int) -> torch.Tensor:
    order = torch.argsort(-weight.abs().reshape(-1), stable=True)  # lowest score first, ties by index
    keep = torch.ones(weight.numel(), dtype=torch.bool)
    keep[order[:n_prune]] = False
    return keep.view(weight.shape)


def test_a_user_method_prunes_layer_by_layer_with_exact_counts(reverse):
    m = model()
    before = {n: mod.weight.detach().clone() for n, mod in m.named_modules() if hasattr(mod, "weight")}
    pk.prune(m, 0.3, method=reverse.name)
    for name, w in before.items():
        keep = m.get_submodule(name).weight_mask.bool()
        assert torch.equal(keep, expected_keep(w, round(0.3 * w.numel()))), name


def test_a_user_method_prunes_globally_with_one_ranking(reverse):
    m = model()
    layers = [mod for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv1d))]
    flat = torch.cat([mod.weight.detach().reshape(-1) for mod in layers])
    pk.prune(m, 0.4, method=reverse.name, scope="global")
    keep = torch.cat([mod.weight_mask.bool().reshape(-1) for mod in layers])
    assert torch.equal(keep, expected_keep(flat, round(0.4 * flat.numel())))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_a_user_method_re_prunes_nested(reverse, scope):
    m = model()
    pk.prune(m, 0.2, method=reverse.name, scope=scope)
    first = {n: mod.weight_mask.bool().clone() for n, mod in m.named_modules() if hasattr(mod, "weight_mask")}
    pk.prune(m, 0.6, method=reverse.name, scope=scope)
    for name, was in first.items():
        now = m.get_submodule(name).weight_mask.bool()
        assert not (now & ~was).any(), name  # never revived
    assert pk.sparsity(m) == pytest.approx(0.6, abs=1 / 250)
    if scope == "layer":
        for name in first:
            w = m.get_submodule(name).weight_mask
            assert int((w == 0).sum()) == round(0.6 * w.numel()), name


def test_a_gradient_method_declares_what_it_needs():
    for name in pk.GRADIENT_SCORES:
        assert pk.METHODS[name].needs == "gradients"
        assert pk.METHODS[name].statistic in pk.GRADIENT_STATISTICS
    assert all(pk.METHODS[n].needs is None for n in ("l1", "l2", "random", "kmeans", "channel", "kernel"))
