"""Helpers for writing the book's notebooks from Python and keeping them consistent.

    python tools/nbtools.py check      # every notebook: setup cell, Colab badge, no outputs,
                                       # the chapter frame, no build jargon in the prose
    python tools/nbtools.py strip      # remove outputs and execution counts in place

The repository URL and branch come from ``_config.yml`` (the one place they are set).
"""

from __future__ import annotations

import json
import pathlib
import re
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


# The badge image is the book's own (notebooks/images/): Colab's hosted badge is an external
# request, which fails for a reader offline. In Colab itself the image does not resolve and
# its alt text shows instead, where the badge has nothing left to do.
BADGE_IMAGE = "images/colab-badge.svg"


def badge(path: pathlib.Path) -> str:
    return f"[![Open in Colab]({BADGE_IMAGE})]({colab_url(path)})"


# The frame every chapter has (issue #15): what the reader will learn and needs first, the
# key takeaways, exercises with their solutions behind a toggle.
FRAME = {
    "a 'What you will learn' admonition": re.compile(r"```\{admonition\} What you will learn"),
    "a 'Prerequisites' line": re.compile(r"^\**Prerequisites", re.M),
    "a 'Key takeaways' admonition": re.compile(r"```\{admonition\} Key takeaways"),
    "an '## Exercises' section": re.compile(r"^## Exercises", re.M),
    "solutions behind a toggle (an admonition or dropdown with :class: dropdown)":
        re.compile(r"```\{(admonition|dropdown)\}[^\n]*\n(:[a-z-]+:[^\n]*\n)*:class: dropdown"),
}
# Words of the build and test machinery, which mean nothing to a reader of the prose.
JARGON = re.compile(r"\b(nbval|pytest|make test|CI|nbval-ignore-output|BOOK_ENFORCE)\b")


def setup_source() -> str:
    url, branch = repository()
    return (
        "# Colab setup (hidden in the book): install prunekit from the book's repository.\n"
        "# Locally this does nothing: `make book` / `pip install -e \".[book]\"` installed it.\n"
        "import sys\n"
        "\n"
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
    if first_md is None or badge(path) not in first_md.source:
        out.append(f"first markdown cell lacks the Colab badge {badge(path)}")
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    out += [f"chapter frame: no {what}" for what, pattern in FRAME.items()
            if not pattern.search(prose)]
    for word in sorted(set(JARGON.findall(prose))):
        out.append(f"prose uses the build/test word {word!r}")
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
