"""nbval hooks for the chapters (`make test-notebooks`).

1. **The stderr rule.** The book build (`make book`) treats any output a cell writes to
   stderr as an error (`_config.yml`: `stderr_output: remove-warn`, and `-W`). This hook
   keeps that rule under nbval: a cell that writes to stderr fails, unless it is tagged
   `remove-stderr` (the tag the book honours too).

2. **Executed copies for the book check.** `make test` executes every chapter once,
   here.
   So that the book check (`make book-check`) can render real outputs without executing
   the chapters a second time, every notebook whose cells all ran is written with the
   outputs nbval received to `_build/executed/notebooks/NAME.ipynb` (or the folder in
   `$BOOK_EXECUTED_DIR`). The outputs are stored as the kernel sent them (stream chunks
   unmerged), exactly as a `make book` execution stores them, so the book check renders
   them through the same code. Each copy records the SHA-256 of the notebook it was
   executed from; `tools/book_tree.py` refuses a copy whose source has changed since.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXECUTED = pathlib.Path(
    os.environ.get("BOOK_EXECUTED_DIR", ROOT / "_build" / "executed")
)

_raw_outputs: list | None = (
    None  # the outputs of the cell running now, before nbval merges them
)
_results: dict = {}  # notebook path -> {cell index: outputs or None (failed)}


def _install_capture():
    """nbval merges a cell's stream chunks (nbval.plugin.coalesce_streams) right after
    the cell ran; keep a copy of the outputs as they came."""
    import nbval.plugin as plugin

    original = plugin.coalesce_streams
    if getattr(original, "_keeps_raw", False):
        return

    def coalesce_streams(outputs):
        global _raw_outputs
        _raw_outputs = copy.deepcopy(outputs)
        return original(outputs)

    coalesce_streams._keeps_raw = True
    plugin.coalesce_streams = coalesce_streams


_install_capture()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    global _raw_outputs
    _raw_outputs = None
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cell = getattr(item, "cell", None)
    if cell is None:
        return
    path = pathlib.Path(str(item.parent.path))
    cells = _results.setdefault(path, {})
    if report.when == "call":
        cells[item.cell_num] = _raw_outputs if report.passed else None
    elif report.when == "setup" and report.skipped:
        cells[item.cell_num] = "skipped"  # nbval-skip: not run, stored without outputs
    elif report.failed:
        cells[item.cell_num] = None

    outputs = getattr(item, "test_outputs", None)
    if report.when != "call" or not report.passed or not outputs:
        return
    if "remove-stderr" in cell.metadata.get("tags", []):
        return
    text = "".join(
        o.get("text", "")
        for o in outputs
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )
    if text:
        report.outcome = "failed"
        cells[item.cell_num] = None
        report.longrepr = (
            f"{item.name} wrote to stderr; the book build (-W) fails on that. "
            f"Fix the cause (or tag the cell remove-stderr if it is harmless):\n"
            f"{text[-2000:]}"
        )


def executed_notebook(
    path: pathlib.Path, outputs: dict
) -> nbformat.NotebookNode | None:
    """`path`'s notebook with `outputs` ({code cell number: outputs}), or None if a cell
    failed or did not run."""
    raw = path.read_bytes()
    nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if len(outputs) != len(code) or any(v is None for v in outputs.values()):
        return None
    for n, cell in enumerate(code):
        ran = outputs[n] != "skipped"
        cell.outputs = [nbformat.from_dict(o) for o in outputs[n]] if ran else []
        cell.execution_count = n + 1 if ran else None
        for out in cell.outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = n + 1
    nb.metadata["book_executed"] = {
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "by": "nbval (make test-notebooks)",
    }
    nbformat.validate(nb)
    return nb


def pytest_sessionfinish(session, exitstatus):
    for path, outputs in _results.items():
        try:
            rel = path.resolve().relative_to(ROOT)
        except ValueError:
            continue
        target = EXECUTED / rel
        nb = executed_notebook(path, outputs)
        if nb is None:
            target.unlink(missing_ok=True)  # never leave a stale copy behind
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
