"""Open every page of a built book in headless Chromium and measure what a reader sees.

    python tools/browser_check.py _build/check/_build/html            # counts per page
    python tools/browser_check.py BUILD --screenshots DIR --json FILE  # + screenshots, report

The book is served on 127.0.0.1 only and Chromium resolves no other host, so the pages are
measured as an offline reader sees them. Per page:

  tex          raw TeX left on screen after MathJax ran (``\\(``, ``\\frac``, ``$$``, a stray
               ``$`` ...) outside code, plus MathJax's own error boxes
  wide         blocks wider than the text column at 1,400 px (code, outputs, tables, maths,
               images): they need a horizontal scroll bar or stick out of the column
  walls        stream outputs in which one progress bar was printed at several stages
               (every refresh became a line) instead of its one final line
  captions     figures (images in cell outputs or figure blocks) without a caption
  console      console errors (JavaScript errors, local files that fail to load)
  external     requests to other hosts (they fail offline; listed, not counted as errors)
  links        internal links (page or #anchor) that do not resolve
  nav          at 390 px: the primary-sidebar button opens a drawer with the chapter list,
               and the contents (secondary) button opens its drawer where the page has one
  search       search boxes visible on a desktop page (one is right)
  outputs      cell outputs on a notebook page (a build without executed outputs has none)

tests/browser/test_pages.py runs the same measurements under pytest. Chromium and
chromedriver are Debian's (tools/install-browser.sh); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html.parser
import http.server
import json
import pathlib
import re
import shutil
import socketserver
import sys
import tempfile
import threading
import time
import urllib.parse

DESKTOP = (1400, 900)
PHONE = (390, 844)
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html", "index.html"}
SKIP_DIRS = {"_static", "_sources", "_modules", "_images", "_downloads"}
CHECKS = ("tex", "wide", "walls", "captions", "console", "links", "nav", "search", "outputs")

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
    "--lang=en-US",
    # Offline: every host except the local server fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


def pages(book_dir: pathlib.Path) -> list[str]:
    """The book's pages, as paths relative to the HTML build ('notebooks/01_l1_l2.html')."""
    out = []
    for p in sorted(book_dir.rglob("*.html")):
        rel = p.relative_to(book_dir)
        if rel.parts[0] in SKIP_DIRS or rel.as_posix() in SKIP_PAGES:
            continue
        out.append(rel.as_posix())
    return out


# --------------------------------------------------------------------------------------
# Serving the build on 127.0.0.1


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass


@contextlib.contextmanager
def serve(book_dir: pathlib.Path):
    handler = functools.partial(_QuietHandler, directory=str(book_dir))
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as httpd:
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()


# --------------------------------------------------------------------------------------
# Chromium


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths, or raise FileNotFoundError saying how to install."""
    import os
    chromium = (os.environ.get("CHROMIUM") or shutil.which("chromium")
                or shutil.which("chromium-browser"))
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        raise FileNotFoundError("Debian's chromium and chromium-driver are needed: run "
                                "`tools/install-browser.sh` as root (or `make browser-deps`), or set "
                                "CHROMIUM and CHROMEDRIVER.")
    return chromium, driver


@contextlib.contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = find_browser()
    profile = tempfile.mkdtemp(prefix="book-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    d.set_page_load_timeout(60)
    d.set_script_timeout(60)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(d, width: int, height: int, mobile: bool) -> None:
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(d, path: pathlib.Path, full: bool, size: tuple[int, int], mobile: bool,
               max_height: int = 32000) -> None:
    """A PNG of the viewport, or of the whole page (the viewport stretched to the page's
    height for the shot: Chromium's captureBeyondViewport shifted wide pages sideways)."""
    import base64
    if full:
        h = d.execute_script("return document.documentElement.scrollHeight")
        set_viewport(d, size[0], min(max(h, size[1]), max_height), mobile)
        time.sleep(0.3)
    data = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
    if full:
        set_viewport(d, *size, mobile=mobile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data))


# Wait for MathJax 3 (if the page loads it) to finish typesetting; give up after 15 s
# (a MathJax that never loads, e.g. from an unreachable CDN, leaves the TeX on screen).
WAIT_MATHJAX = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
const script = document.querySelector('script[src*="mathjax" i], script[src*="tex-" i]');
(function poll() {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise && mj.typesetPromise) {
    mj.startup.promise.then(() => done('typeset')).catch(e => done('error: ' + e));
  } else if (!script) {
    done('absent');  // the page has no maths, so Sphinx did not include MathJax
  } else if (Date.now() - t0 > 15000) {
    done('not loaded');
  } else { setTimeout(poll, 100); }
})();
"""

MEASURE_DESKTOP = r"""
const article = document.querySelector('article.bd-article') || document.querySelector('main');
const column = article.getBoundingClientRect();
const skip = 'pre, code, script, style, textarea, mjx-container, .MathJax, mjx-assistive-mml, .headerlink';
function visible(el) {
  if (!el) return false;
  const s = getComputedStyle(el);
  if (s.display === 'none' || s.visibility === 'hidden') return false;
  return el.getClientRects().length > 0;
}
// -- raw TeX in visible prose
const texRe = /\\[()\[\]]|\$\$|\\(frac|begin|end|sum|prod|mathbf|mathrm|mathcal|text|left|right|sqrt|cdot|odot|times|lVert|rVert|operatorname|hat|tilde|arg|min|max|in|le|ge|leq|geq|approx|alpha|beta|lambda|theta|sigma|ell)\b|\$/g;
const tex = [];
const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const p = n.parentElement;
  if (!p || p.closest(skip) || !visible(p)) continue;
  const m = n.nodeValue.match(texRe);
  if (m) tex.push({hits: m.length, text: n.nodeValue.trim().slice(0, 100)});
}
const mjxErrors = Array.from(article.querySelectorAll('mjx-merror')).map(e => e.textContent.slice(0, 80));
// -- blocks wider than the column
function describe(el) {
  const id = el.closest('[id]');
  let text = (el.innerText || el.getAttribute('src') || '').trim().split('\n')[0].slice(0, 70);
  return {tag: el.tagName.toLowerCase(), cls: (typeof el.className === 'string' ? el.className : '').slice(0, 50),
          section: id ? id.id : '', width: Math.round(Math.max(el.scrollWidth, el.getBoundingClientRect().width)),
          box: Math.round(el.clientWidth), column: Math.round(column.width), text};
}
const wide = [];
const seen = new Set();
const blocks = article.querySelectorAll('pre, table, img, svg, mjx-container[display="true"], .cell_output > .output, div.math');
for (const el of blocks) {
  if (!visible(el) || el.closest('.sidebar, aside, .margin')) continue;
  const r = el.getBoundingClientRect();
  const overflows = el.scrollWidth > el.clientWidth + 2 && getComputedStyle(el).overflowX !== 'visible';
  const sticksOut = r.right > column.right + 2 || r.left < column.left - 2;
  // a table inside a scroll container is measured by its container
  const scroller = el.tagName === 'TABLE' ? el.parentElement : null;
  const scrolls = scroller && scroller.scrollWidth > scroller.clientWidth + 2;
  if (overflows || sticksOut || scrolls) {
    let top = el;
    for (const s of seen) if (s.contains(el)) { top = null; break; }
    if (top) { seen.add(el); wide.push(describe(el)); }
  }
}
// -- progress walls: one bar printed at several stages inside one stream output
const barRe = /^(.*?):?\s*(\d+)%\|.*?\|\s*(\d+)\/(\d+)\b/;
const walls = [];
for (const out of article.querySelectorAll('.output.stream')) {
  const lines = out.innerText.split('\n');
  let partial = 0, bars = 0;
  for (const line of lines) {
    const m = line.match(barRe);
    if (!m) continue;
    bars += 1;
    if (parseInt(m[3]) < parseInt(m[4])) partial += 1;
  }
  if (partial >= 2) {
    const id = out.closest('[id]');
    walls.push({section: id ? id.id : '', bar_lines: bars, unfinished: partial,
                first: lines.find(l => barRe.test(l)).slice(0, 70)});
  }
}
// -- figures and captions
const figures = [];
for (const img of article.querySelectorAll('.cell_output img, figure img, figure svg, img.figure')) {
  if (!visible(img)) continue;
  const fig = img.closest('figure');
  const cap = fig ? fig.querySelector('figcaption') : null;
  const text = cap ? cap.innerText.trim() : '';
  const id = img.closest('[id]');
  figures.push({captioned: text.length > 0, caption: text.slice(0, 60), section: id ? id.id : '',
                width: Math.round(img.getBoundingClientRect().width)});
}
// -- search boxes a desktop reader sees
const searchBoxes = Array.from(document.querySelectorAll(
    'form.bd-search, .search-button-field, button.search-button'))
  .filter(el => visible(el) && !el.closest('dialog, .search-button__wrapper')
           && el.getBoundingClientRect().width > 0)
  .map(el => el.tagName.toLowerCase() + '.' + String(el.className).split(' ')[0]);
const outputs = article.querySelectorAll('.cell_output').length;
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
return {tex, mjxErrors, wide, walls, figures, searchBoxes, outputs, links};
"""

# At 390 px: which toggle is on screen, does clicking it show a drawer whose chapter
# links are visible and on top (not under an overlay)?
DRAWER_STATE = r"""
const which = arguments[0];
const sel = which === 'primary' ? '#pst-primary-sidebar, .bd-sidebar-primary'
                                : '#pst-secondary-sidebar, .bd-sidebar-secondary';
const bar = document.querySelector(sel);
if (!bar) return {exists: false};
const r = bar.getBoundingClientRect();
const links = Array.from(bar.querySelectorAll(which === 'primary' ? 'nav a.reference' : 'a'));
let onTop = 0;
for (const a of links) {
  const lr = a.getBoundingClientRect();
  if (lr.width < 1 || lr.height < 1 || lr.bottom < 0 || lr.top > innerHeight) continue;
  const hit = document.elementFromPoint(lr.left + Math.min(10, lr.width / 2), lr.top + lr.height / 2);
  if (hit && (hit === a || a.contains(hit))) onTop += 1;
}
return {exists: true, left: Math.round(r.left), right: Math.round(r.right), width: Math.round(r.width),
        links: links.length, links_on_top: onTop};
"""

TOGGLES = r"""
const which = arguments[0];
const sel = which === 'primary' ? '.primary-toggle' : '.secondary-toggle';
const out = [];
for (const b of document.querySelectorAll(sel)) {
  const r = b.getBoundingClientRect();
  const s = getComputedStyle(b);
  if (r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'
      && r.top < innerHeight && r.bottom > 0) out.push(b);
}
return out;
"""


def _drawer(d, which: str) -> dict:
    """Click the visible toggle of a drawer at phone width; report whether it opened."""
    from selenium.webdriver.common.action_chains import ActionChains

    toggles = d.execute_script(TOGGLES, which)
    if not toggles:
        return {"toggle": False, "opened": False}
    before = d.execute_script(DRAWER_STATE, which)
    ActionChains(d).move_to_element(toggles[0]).click().perform()
    time.sleep(0.8)
    after = d.execute_script(DRAWER_STATE, which)
    opened = bool(after.get("exists") and after["width"] > 150 and after["left"] > -5
                  and after["left"] < PHONE[0] - 150 and after["links_on_top"] > 0)
    return {"toggle": True, "opened": opened, "before": before, "after": after}


def _close_drawers(d) -> None:
    d.execute_script("""
      for (const dlg of document.querySelectorAll('dialog[open]')) dlg.close();
      for (const id of ['pst-primary-sidebar-checkbox', 'pst-secondary-sidebar-checkbox',
                        '__primary', '__secondary']) {
        const c = document.getElementById(id); if (c && c.checked) c.click();
      }
      document.body.click();""")
    time.sleep(0.3)


# --------------------------------------------------------------------------------------
# Links (checked against the files of the build, not through the browser)


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


@functools.cache
def _ids(path: pathlib.Path) -> frozenset:
    p = _Ids()
    p.feed(path.read_text(errors="replace"))
    return frozenset(p.ids)


def broken_links(book_dir: pathlib.Path, base: str, links: list[str]) -> list[str]:
    bad = []
    for href in sorted(set(links)):
        if not href.startswith(base):
            continue
        url = urllib.parse.urlsplit(href)
        rel = urllib.parse.unquote(url.path[len(urllib.parse.urlsplit(base).path):])
        target = book_dir / rel
        if target.is_dir() or rel == "":
            target = target / "index.html"
        if not target.is_file():
            bad.append(href[len(base):])
            continue
        if url.fragment and target.suffix == ".html" and url.fragment not in _ids(target):
            bad.append(href[len(base):])
    return bad


# --------------------------------------------------------------------------------------


def _console(d, base: str) -> tuple[list[str], list[str]]:
    errors, external = [], []
    for entry in d.get_log("browser"):
        msg = entry.get("message", "")
        if entry.get("level") != "SEVERE":
            continue
        if msg.startswith(base + "favicon.ico "):
            continue  # the browser's own request when a page names no icon, not the book's
        urls = re.findall(r"https?://[^\s'\"]+", msg)
        if urls and not urls[0].startswith(base):
            external.append(urls[0])
        else:
            errors.append(msg[:300])
    return errors, external


def _png(page: str) -> str:
    return page.replace("/", "__").replace(".html", ".png")


def check_book(book_dir: pathlib.Path, screenshots: pathlib.Path | None = None,
               only: list[str] | None = None, log=print) -> dict[str, dict]:
    """Measure every page; returns {page: {check: details}}."""
    book_dir = pathlib.Path(book_dir).resolve()
    todo = only or pages(book_dir)
    report: dict[str, dict] = {}
    with serve(book_dir) as base, browser() as d:
        for page in todo:
            t0 = time.monotonic()
            url = base + page
            set_viewport(d, *DESKTOP, mobile=False)
            d.get(url)
            mathjax = d.execute_async_script(WAIT_MATHJAX)
            time.sleep(0.3)
            m = d.execute_script(MEASURE_DESKTOP)
            if screenshots:
                screenshot(d, screenshots / "1400" / _png(page), True, DESKTOP, False)
            errors, external = _console(d, base)
            # phone
            set_viewport(d, *PHONE, mobile=True)
            d.get(url)
            d.execute_async_script(WAIT_MATHJAX)
            if screenshots:
                screenshot(d, screenshots / "390" / _png(page), True, PHONE, True)
            primary = _drawer(d, "primary")
            if screenshots:
                screenshot(d, screenshots / "390-menu" / _png(page), False, PHONE, True)
            _close_drawers(d)
            d.get(url)
            d.execute_async_script(WAIT_MATHJAX)
            secondary = _drawer(d, "secondary")
            if screenshots and secondary["toggle"]:
                screenshot(d, screenshots / "390-contents" / _png(page), False, PHONE, True)
            e2, x2 = _console(d, base)
            errors += e2
            external += x2
            is_notebook = (book_dir / "_sources" / page).with_suffix(".ipynb").exists()
            uncaptioned = [f for f in m["figures"] if not f["captioned"]]
            report[page] = {
                "mathjax": mathjax,
                "tex": {"count": sum(t["hits"] for t in m["tex"]) + len(m["mjxErrors"]),
                        "items": m["tex"][:20], "mathjax_errors": m["mjxErrors"]},
                "wide": {"count": len(m["wide"]), "items": m["wide"]},
                "walls": {"count": len(m["walls"]), "items": m["walls"]},
                "captions": {"count": len(uncaptioned), "figures": len(m["figures"]),
                             "items": uncaptioned},
                "console": {"count": len(errors), "items": errors},
                "external": {"count": len(set(external)), "items": sorted(set(external))},
                "links": {"count": 0, "items": broken_links(book_dir, base, m["links"])},
                "nav": {"count": 0, "primary": primary, "secondary": secondary},
                "search": {"count": len(m["searchBoxes"]), "items": m["searchBoxes"]},
                "outputs": {"count": m["outputs"], "notebook": is_notebook},
            }
            r = report[page]
            r["links"]["count"] = len(r["links"]["items"])
            r["nav"]["count"] = int(not primary["opened"]) + int(secondary["toggle"] and not secondary["opened"])
            log(f"{page:34s} " + " ".join(f"{k}={r[k]['count']}" for k in
                                            ("tex", "wide", "walls", "captions", "console",
                                             "external", "links", "nav", "search", "outputs"))
                + f"  figures={r['captions']['figures']} mathjax={mathjax} ({time.monotonic() - t0:.1f} s)")
    return report


def failures(report: dict[str, dict], page: str, check: str) -> str | None:
    """Why `check` fails on `page`, or None: the one rule pytest and the script share."""
    r = report[page][check]
    if check == "search":
        return None if r["count"] == 1 else f"{r['count']} search boxes on a desktop page: {r['items']}"
    if check == "outputs":
        if r["notebook"] and r["count"] == 0:
            return "a notebook page without any cell output: the build has no executed outputs"
        return None
    if check == "nav":
        if not r["count"]:
            return None
        return f"at 390 px the drawer does not open: primary={r['primary']} secondary={r['secondary']}"
    if r["count"]:
        return f"{r['count']} {check} problem(s): " + json.dumps(r["items"], ensure_ascii=False)[:3000]
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("book_dir", type=pathlib.Path, help="an HTML build, e.g. _build/html")
    ap.add_argument("--screenshots", type=pathlib.Path, help="folder for 1400/390 px screenshots")
    ap.add_argument("--json", type=pathlib.Path, help="write the full report here")
    ap.add_argument("--page", action="append", help="only this page (repeatable)")
    args = ap.parse_args(argv)
    if not (args.book_dir / "_static").is_dir():
        ap.error(f"{args.book_dir} is not an HTML build (no _static/)")
    report = check_book(args.book_dir, args.screenshots, args.page)
    totals = {c: sum(r[c]["count"] for r in report.values()) for c in
              ("tex", "wide", "walls", "captions", "console", "external", "links", "nav")}
    totals["figures"] = sum(r["captions"]["figures"] for r in report.values())
    totals["pages"] = len(report)
    totals["pages_with_search_not_1"] = sum(r["search"]["count"] != 1 for r in report.values())
    print("TOTAL", " ".join(f"{k}={v}" for k, v in totals.items()))
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "pages": report}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
