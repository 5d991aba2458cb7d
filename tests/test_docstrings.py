"""Every example in prunekit's docstrings runs and prints what it claims.

The API reference page shows these examples, so they must stay true.
"""

import doctest
import importlib
import pkgutil

import pytest

import prunekit

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(prunekit.__path__, prefix="prunekit.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
