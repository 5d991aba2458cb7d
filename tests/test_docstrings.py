"""Every example in prunekit's docstrings runs, prints what it claims and fits the page.

The API reference page shows these examples, so they must stay true, and it shows them
in code boxes 76 columns wide, so they must fit.
"""

import doctest
import importlib
import pathlib
import pkgutil

import pytest
from _code_width import WIDTH, docstrings, rst_code_lines

import prunekit

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(prunekit.__path__, prefix="prunekit.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


# The book's API page (book/api.md) renders these docstrings with their examples in code
# boxes about 76 monospace characters wide; a wider line needs a horizontal scroll bar.
# Rewrap long calls over "..." lines and put long comments on a line of their own.
SOURCES = sorted(pathlib.Path(prunekit.__file__).parent.rglob("*.py"))
ROOT = pathlib.Path(prunekit.__file__).parents[1]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docstring_code_fits_the_api_pages_code_box(path):
    too_wide = [
        f"{path.relative_to(ROOT)}:{lineno + index} ({name}): {width} > {WIDTH} columns: {line.strip()}"
        for name, lineno, text in docstrings(path.read_text(encoding="utf-8"))
        for index, width, line in rst_code_lines(text)
        if width > WIDTH
    ]
    assert not too_wide, "docstring code wider than the API page's code box:\n" + "\n".join(too_wide)
