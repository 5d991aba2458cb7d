"""Helpers for writing the book's notebooks from Python and keeping them consistent.

    python tools/nbtools.py check      # every notebook: setup cell, Colab badge, no outputs
    python tools/nbtools.py strip      # remove outputs and execution counts in place

The repository URL and branch come from ``_config.yml`` (the one place they are set).
"""

from __future__ import annotations

import json
import pathlib
import sys

import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def repository() -> tuple[str, str]:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    return cfg["repository"]["url"].rstrip("/"), cfg["repository"].get("branch", "main")


def colab_url(path: pathlib.Path) -> str:
    url, branch = repository()
    slug = url.split("github.com/", 1)[1]
    rel = path.resolve().relative_to(ROOT).as_posix()
    return f"https://colab.research.google.com/github/{slug}/blob/{branch}/{rel}"


def badge(path: pathlib.Path) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(path)})")


def setup_source() -> str:
    url, branch = repository()
    return (
        "# Colab setup (hidden in the book): install prunekit from the book's repository.\n"
        "# Locally this does nothing: `make book` / `pip install -e \".[book]\"` installed it.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q \"prunekit[book] @ git+{url}@{branch}\"\n"
    )


def setup_cell() -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(setup_source(), metadata={"tags": ["remove-cell"]})


def problems(path: pathlib.Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[0].source.strip() != setup_source().strip():
        out.append("first code cell is not the Colab setup cell from tools/nbtools.py")
    elif "remove-cell" not in code[0].metadata.get("tags", []):
        out.append("Colab setup cell is not tagged remove-cell")
    first_md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first_md is None or colab_url(path) not in first_md.source:
        out.append(f"first markdown cell lacks the Colab badge for {colab_url(path)}")
    for i, c in enumerate(code):
        if c.get("outputs") or c.get("execution_count") is not None:
            out.append(f"code cell {i} has stored outputs (commit notebooks stripped)")
            break
    return out


def strip(path: pathlib.Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        c.metadata.pop("execution", None)
    nbformat.write(nb, path)


def write(path: pathlib.Path, cells: list[tuple[str, str, list]]) -> None:
    """Write a notebook from (kind, source, tags) triples; the setup cell goes first."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = []
    for kind, source, tags in cells:
        meta = {"tags": list(tags)} if tags else {}
        cell = (nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell)(
            source.strip("\n"), metadata=meta)
        out.append(cell)
    first_code = next(i for i, c in enumerate(out) if c.cell_type == "code")
    out.insert(first_code, setup_cell())
    nb.cells = out
    nbformat.write(nb, path)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if cmd == "strip":
        for p in paths:
            strip(p)
    else:
        bad = {p.name: problems(p) for p in paths}
        bad = {k: v for k, v in bad.items() if v}
        print(json.dumps(bad, indent=2) if bad else f"{len(paths)} notebooks OK")
        sys.exit(1 if bad else 0)
