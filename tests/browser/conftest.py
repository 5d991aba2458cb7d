"""Options of the real-browser test (tests/browser/test_pages.py).

    pytest tests/browser --book-dir _build/check/_build/html [--screenshots DIR]
    BOOK_HTML=_build/html pytest tests/browser           # the same, by environment

Which checks fail the test: BOOK_ENFORCE (or --enforce), a comma-separated list of check
names, "all", or "default" (test_pages.ENFORCED_BY_DEFAULT: every check), e.g.
BOOK_ENFORCE=tex,links,nav while a chapter is being rewritten. Checks not enforced are
still measured and reported (as xfail, with the counts) so the numbers stay visible.
"""

from __future__ import annotations

import os


def pytest_addoption(parser):
    group = parser.getgroup("book", "real-browser test of the built book")
    group.addoption("--book-dir", default=os.environ.get("BOOK_HTML"),
                    help="an HTML build of the book (default: $BOOK_HTML)")
    group.addoption("--screenshots", default=os.environ.get("BOOK_SCREENSHOTS"),
                    help="save 1,400 and 390 px screenshots of every page here")
    group.addoption("--book-report", default=os.environ.get("BOOK_REPORT"),
                    help="write the full JSON report here")
    group.addoption("--enforce", default=os.environ.get("BOOK_ENFORCE", "default"),
                    help="checks that fail the test (comma list of names; 'all'; 'default')")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = getattr(config, "_book_report", None)
    if not report:
        return
    tr = terminalreporter
    tr.section("book pages in Chromium (counts per page)")
    cols = ("tex", "wide", "walls", "captions", "console", "external", "links", "nav",
            "search", "outputs")
    tr.write_line(f"{'page':32s} " + " ".join(f"{c:>8s}" for c in cols) + "  figures")
    for page, r in report.items():
        tr.write_line(f"{page:32s} " + " ".join(f"{r[c]['count']:8d}" for c in cols)
                      + f"  {r['captions']['figures']:7d}")
    tr.write_line("enforced: " + ", ".join(sorted(config._book_enforced)))
