"""The book's notebooks and configuration stay consistent with each other.

Every chapter must open in Colab and install the package from the repository and branch
set in _config.yml (the one place they live), and notebooks are committed without outputs
so the book never publishes stale results.
"""

import pathlib
import sys

import nbformat
import pytest
import yaml
from _code_width import WIDTH, markdown_code_lines

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_colab_setup_badge_and_no_outputs(path):
    assert nbtools.problems(path) == []


def _toc_files(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                yield value
            else:
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_table_of_contents(path):
    files = set(_toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text())))
    assert f"notebooks/{path.stem}" in files


def test_config_sets_the_repository_once_and_fails_on_errors():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["repository"]["url"].startswith("https://github.com/")
    assert cfg["repository"]["branch"] == "main"
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["execute"]["raise_on_error"] is True
    assert cfg["execute"]["execute_notebooks"] in ("force", "cache")


def test_setup_cell_installs_the_current_package():
    src = nbtools.setup_source()
    url, branch = nbtools.repository()
    assert f"git+{url}@{branch}" in src and "google.colab" in src
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert any("import prunekit as pk" in c.source for c in nb.cells if c.cell_type == "code")


def test_comparison_chapter_is_committed_with_its_quick_setting():
    """Chapter 5's text says the book runs QUICK = True; the full sweep takes far longer
    than the test command's budget. A committed QUICK = False would break both."""
    nb = nbformat.read(ROOT / "notebooks" / "05_comparison.ipynb", as_version=4)
    settings = [c.source for c in nb.cells if c.cell_type == "code" and "QUICK =" in c.source]
    assert len(settings) == 1
    assert settings[0].startswith("QUICK = True")


@pytest.mark.parametrize("page", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_book_page_code_fits_its_code_box(page):
    """The book shows code in boxes about 76 monospace characters wide; a wider line of
    a page's own code blocks needs a horizontal scroll bar (the docstrings book/api.md
    renders are checked in tests/test_docstrings.py). Put long comments on a line of
    their own."""
    text = page.read_text(encoding="utf-8")
    too_wide = [f"book/{page.name}:{index + 1}: {width} > {WIDTH} columns: {line.strip()}"
                for index, width, line in markdown_code_lines(text) if width > WIDTH]
    assert not too_wide, "code wider than the page's code box:\n" + "\n".join(too_wide)
