"""Every page of the built book, opened in headless Chromium as an offline reader sees it.

Needs an HTML build (``--book-dir`` or ``$BOOK_HTML``; ``make test`` passes the book check's
build, which renders the outputs nbval produced) and Debian's chromium + chromium-driver
(``tools/install-browser.sh``). The measurements are tools/browser_check.py's; see its
docstring for what each check counts. Run it as a script for the counts alone.

Enforced: every check (maths rendered offline, no block wider than the column at
1,400 px, progress bars as one line, every figure captioned, no console errors, internal
links resolve, the 390 px menus open, one desktop search box, notebook pages carry their
outputs). BOOK_ENFORCE can narrow the list while a page is being rewritten; the checks
left out are still measured and reported as xfail.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import browser_check  # noqa: E402


def book_dir(config) -> pathlib.Path | None:
    value = config.getoption("--book-dir", default=None)
    return pathlib.Path(value) if value else None

ENFORCED_BY_DEFAULT = set(browser_check.CHECKS)

NO_BUILD = ("no HTML build given: pass --book-dir DIR or set BOOK_HTML=DIR "
            "(make test-browser uses the book check's build)")


def enforced(config) -> set[str]:
    value = config.getoption("--enforce") or "default"
    out: set[str] = set()
    for part in (p.strip() for p in value.split(",")):
        if part == "all":
            out |= set(browser_check.CHECKS)
        elif part == "default":
            out |= ENFORCED_BY_DEFAULT
        elif part:
            name = part.lstrip("+")
            if name not in browser_check.CHECKS:
                raise pytest.UsageError(f"BOOK_ENFORCE: unknown check {name!r}; "
                                        f"known: {', '.join(browser_check.CHECKS)}")
            out.add(name)
    return out


def pytest_generate_tests(metafunc):
    if "page" in metafunc.fixturenames:
        d = book_dir(metafunc.config)
        pages = browser_check.pages(d) if d and d.is_dir() else []
        metafunc.parametrize("page", pages or [None], ids=pages or ["no-build"])


@pytest.fixture(scope="session")
def report(pytestconfig):
    d = book_dir(pytestconfig)
    if d is None:
        pytest.skip(NO_BUILD)
    if not (d / "_static").is_dir():
        pytest.fail(f"{d} is not an HTML build of the book (no _static/)")
    try:
        browser_check.find_browser()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    shots = pytestconfig.getoption("--screenshots")
    result = browser_check.check_book(d, pathlib.Path(shots) if shots else None, log=lambda s: None)
    pytestconfig._book_report = result
    pytestconfig._book_enforced = enforced(pytestconfig)
    out = pytestconfig.getoption("--book-report")
    if out:
        import json
        pathlib.Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result


@pytest.mark.parametrize("check", browser_check.CHECKS)
def test_page(page, check, report, pytestconfig):
    if page is None:
        pytest.skip(NO_BUILD)
    why = browser_check.failures(report, page, check)
    if why is None:
        return
    if check in enforced(pytestconfig):
        pytest.fail(f"{page}: {why}", pytrace=False)
    pytest.xfail(f"reported, not enforced (BOOK_ENFORCE leaves {check} out): {why[:240]}")


def test_the_build_has_pages(report):
    assert report, "the build has no pages"
