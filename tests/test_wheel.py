"""prunekit works as Colab uses it: installed from a built wheel, run outside the repository.

The test builds the wheel, installs it (without dependencies) into a fresh virtual
environment, and executes the quickstart notebook from a temporary directory with that
environment's Python. The fresh environment sees the heavy dependencies (torch, jupyter)
through a path entry pointing at the test environment's site-packages, so the test costs
seconds instead of a second 700 MB torch install; the editable prunekit of the checkout
is *not* visible there (editable finders are not activated through a plain path entry),
which the notebook's extra first cell asserts.
"""

import os
import pathlib
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_quickstart.ipynb"


def run(*args, **kwargs):
    # without PYTHONPATH: a caller's path to a checkout would shadow the installed wheel
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          env=env, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, ROOT)
    (path,) = out.glob("prunekit-*.whl")
    return path


def test_wheel_contains_the_package_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "prunekit/__init__.py" in names and "prunekit/masks.py" in names
    # every module and subpackage of the source tree, nothing left behind
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "prunekit").rglob("*.py")}
    assert source <= set(names), sorted(source - set(names))
    subpackages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "prunekit").rglob("__init__.py")}
    assert len(subpackages) >= 5, subpackages  # prunekit, cluster, measure, methods, structured
    assert "prunekit/texts/tempest.txt" in names  # the language-model chapter's text ships too
    top = {n.split("/")[0] for n in names}
    assert all(t == "prunekit" or t.endswith((".dist-info",)) for t in top), top


def test_notebook_runs_from_the_wheel_outside_the_repository(wheel, tmp_path):
    env_dir = tmp_path / "fresh-env"
    run(sys.executable, "-m", "venv", "--without-pip", env_dir)
    py = env_dir / "bin" / "python"
    fresh_site = pathlib.Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # dependencies from the test environment, through a plain path entry (no editable finder)
    deps = [p for p in site.getsitepackages() if pathlib.Path(p).is_dir()]
    (fresh_site / "_deps.pth").write_text("\n".join(deps) + "\n")
    run(sys.executable, "-m", "pip", "install", "--no-deps", "--target", fresh_site, wheel)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    check = textwrap.dedent(f"""
        import prunekit, sys
        assert prunekit.__file__.startswith({str(fresh_site)!r}), prunekit.__file__
        assert sys.prefix == {str(env_dir)!r}, sys.prefix
    """)
    nb.cells.insert(0, nbformat.v4.new_code_cell(check))
    nbformat.write(nb, workdir / NOTEBOOK.name)
    script = textwrap.dedent("""
        import nbformat, sys
        from nbclient import NotebookClient
        nb = nbformat.read(sys.argv[1], as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3").execute()
        print("executed", sum(c.cell_type == "code" for c in nb.cells), "cells")
    """)
    result = run(py, "-c", script, workdir / NOTEBOOK.name, cwd=workdir)
    assert "executed" in result.stdout
    shutil.rmtree(env_dir, ignore_errors=True)
