"""nbval hooks for the chapters (`make test-notebooks`).

The book build (`make book`) treats any output a cell writes to stderr as an error
(`_config.yml`: `stderr_output: remove-warn`, and `-W`). `make test` runs every chapter once,
under nbval, and builds the book without executing it again; this hook keeps the stderr rule
in force there: a cell that writes to stderr fails, unless it is tagged `remove-stderr` (the
tag the book honours too).
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    outputs = getattr(item, "test_outputs", None)
    if report.when != "call" or not report.passed or not outputs:
        return
    if "remove-stderr" in item.cell.metadata.get("tags", []):
        return
    text = "".join(o.get("text", "") for o in outputs
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")
    if text:
        report.outcome = "failed"
        report.longrepr = (f"{item.name} wrote to stderr; the book build (-W) fails on that. "
                           f"Fix the cause (or tag the cell remove-stderr if it is harmless):\n"
                           f"{text[-2000:]}")
