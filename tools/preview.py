"""Build the book with one chapter executed and look at that page in the browser.

    python tools/preview.py notebooks/03_kmeans.ipynb            # -> _build/preview/03_kmeans
    make preview NB=notebooks/03_kmeans.ipynb

For writing a chapter: the whole book is built (so links, citations and figure numbers
resolve as in the real build), but only the named notebooks are executed; the others are
rendered without outputs. Then the executed pages are measured by tools/browser_check.py
(raw TeX, blocks wider than the column, uncaptioned figures, progress walls, console
errors, broken links, the phone menu) and screenshotted at 1,400 and 390 px into
``OUT/screenshots``. Prints the build's warnings and the page's counts; exit status 1 if
the build failed or a check the book enforces (all of them, here) fails.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book_tree  # noqa: E402
import browser_check  # noqa: E402


def config_executing(text: str, notebooks: list[pathlib.Path]) -> str:
    """_config.yml with execution limited to ``notebooks`` (the others excluded)."""
    others = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb")
                    if p.resolve() not in {n.resolve() for n in notebooks})
    block = "".join(f"    - {o}\n" for o in others)
    new, n = re.subn(r"(?m)^(execute:\n)", lambda m: m.group(1) + "  exclude_patterns:\n" + block,
                     text)
    if n != 1:
        raise SystemExit("preview: _config.yml must have one top-level execute: section")
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path, help="default: _build/preview/<first notebook>")
    ap.add_argument("--no-browser", action="store_true", help="build only")
    args = ap.parse_args(argv)
    nbs = [p.resolve() for p in args.notebooks]
    for p in nbs:
        if not p.is_file() or p.parent != (ROOT / "notebooks").resolve():
            ap.error(f"not a chapter in notebooks/: {p}")
    out = (args.out or ROOT / "_build" / "preview" / nbs[0].stem).resolve()
    tree = out / "tree"
    for old in (tree, out / "_build"):  # a fresh build: Sphinx's incremental one misses changes
        if old.exists():
            shutil.rmtree(old)
    shutil.copytree(ROOT, tree, ignore=book_tree.IGNORE)
    (tree / "_config.yml").write_text(config_executing((ROOT / "_config.yml").read_text(), nbs))
    jb = pathlib.Path(sys.executable).parent / "jupyter-book"
    build = subprocess.run([str(jb), "build", str(tree), "--path-output", str(out), "-n",
                            "--keep-going"], capture_output=True, text=True)
    log = build.stdout + build.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    mine = [w for w in warnings if any(f"notebooks/{p.name}" in w for p in nbs)]
    print(f"build: exit {build.returncode}, {len(warnings)} warnings, {len(mine)} in "
          f"{', '.join(p.name for p in nbs)}")
    for w in mine:
        print("  ", w)
    (out / "build.log").write_text(log)
    if build.returncode != 0 or args.no_browser:
        return 1 if build.returncode or mine else 0
    html = out / "_build" / "html"
    pages = [f"notebooks/{p.stem}.html" for p in nbs]
    report = browser_check.check_book(html, out / "screenshots", pages, log=lambda s: None)
    bad = 0
    for page in pages:
        for check in browser_check.CHECKS:
            why = browser_check.failures(report, page, check)
            if why:
                bad += 1
                print(f"{page} {check}: {why}")
    print(f"browser: {bad} failing checks; screenshots in {out / 'screenshots'}")
    return 1 if bad or mine else 0


if __name__ == "__main__":
    sys.exit(main())
