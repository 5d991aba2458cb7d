"""Lay out the book's sources with executed notebooks, for a build that executes nothing.

    python tools/book_tree.py [--executed _build/executed] [--out _build/checktree]

`make test` executes every chapter once, under nbval; notebooks/conftest.py writes the
executed copies to `_build/executed/notebooks/`. This script copies the book's sources
to `--out`, puts those executed copies in place of the committed (output-free) notebooks,
and switches execution off in the copied `_config.yml`. `make book-check` then builds
that tree with `-W -n`: the chapters are rendered with the outputs and figures they
produced, and none is executed a second time.

It fails when a notebook has no executed copy, or when the copy was executed from a
different version of the notebook (its recorded SHA-256 differs): a book check must never
render stale outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "_build", "build", "dist", ".pytest_cache",
                                ".hypothesis", "__pycache__", "*.egg-info", ".ipynb_checkpoints")


def check_config(text: str) -> str:
    new, n = re.subn(r'(?m)^(\s+execute_notebooks:).*$', r'\1 "off"', text)
    if n != 1:
        raise SystemExit("book_tree: _config.yml must set execute.execute_notebooks exactly once")
    return new


def build_tree(executed: pathlib.Path, out: pathlib.Path) -> list[str]:
    problems = []
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    copies = {}
    for src in sources:
        rel = src.relative_to(ROOT)
        copy = executed / rel
        if not copy.is_file():
            problems.append(f"{rel}: no executed copy in {copy.parent} (run `make test-notebooks`)")
            continue
        meta = json.loads(copy.read_text()).get("metadata", {}).get("book_executed", {})
        if meta.get("source_sha256") != hashlib.sha256(src.read_bytes()).hexdigest():
            problems.append(f"{rel}: its executed copy is stale (the notebook changed since "
                            f"nbval ran it; run `make test-notebooks`)")
            continue
        copies[rel] = copy
    if problems:
        return problems
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ROOT, out, ignore=IGNORE, symlinks=False)
    for rel, copy in copies.items():
        shutil.copyfile(copy, out / rel)
    (out / "_config.yml").write_text(check_config((ROOT / "_config.yml").read_text()))
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executed", type=pathlib.Path, default=ROOT / "_build" / "executed")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "_build" / "checktree")
    args = ap.parse_args(argv)
    problems = build_tree(args.executed.resolve(), args.out.resolve())
    for p in problems:
        print("book_tree:", p, file=sys.stderr)
    if not problems:
        print(f"book_tree: {args.out} holds the book with executed notebooks, execution off")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
