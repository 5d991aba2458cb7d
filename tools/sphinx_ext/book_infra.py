"""Sphinx extension for the pruning book: how outputs and pages are rendered.

Enabled in _config.yml (``sphinx.local_extensions``). It does four things:

1. **One final line per progress bar.** A text progress bar (tqdm) redraws itself by
   writing ``"\\r" + bar`` again and again to stdout; Jupyter and Colab show the redraws
   in place. The kernel sends them to the notebook in chunks (one stream output per
   flush), and myst-nb's ``nb_merge_streams`` joins those chunks with a newline between
   each (``myst_nb.core.utils.coalesce_streams`` strips every chunk and appends
   ``"\\n"``), so every flush became its own line in the rendered book: a wall of half
   finished bars. :func:`coalesce_streams` below joins the chunks as a terminal would
   (plain concatenation) and then keeps, on every line, only the text after the last
   carriage return, which is what the reader saw last. It replaces myst-nb's function
   for the HTML and the LaTeX/PDF builds alike.

2. **No duplicated inline scripts.** sphinx-thebe 0.3 registers its configuration
   script (``const THEBE_JS_URL = ...``) once per read phase; Jupyter Book's build adds
   it twice (once with filename ``None``, once with ``''``), so every page raised
   ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` in the browser
   console. Identical scripts are emitted once.
3. **Author–year labels in the bibliography.** The text cites "Han et al. (2015)"
   (``bibtex_reference_style: author_year``), but pybtex's styles label the list
   ``[1]`` or ``[HPTD15]``, so a reader looking up a citation found a label that matched
   nothing in the text. The ``authoryear`` style (``bibtex_default_style``) is pybtex's
   ``plain`` (sorted by author, year, title) with labels in the citations' own form,
   "Han et al., 2015", suffixed a, b, ... where two works would share one.
4. **Figures numbered per chapter.** Sphinx numbers figures through the whole book when
   the table of contents is not section-numbered (chapter 5's first figure was "Fig. 23").
   The chapters carry their number in their file name (``05_comparison``, ``01b_lottery``),
   so each chapter's figures are renumbered "Fig. 5.1", "Fig. 5.2", ... in page order;
   links ({numref}) and captions use the same numbers.
"""

from __future__ import annotations

import re

_CARRIAGE_RETURN = re.compile(r"[^\n]*\r(?=[^\r\n])")
_BACKSPACE = re.compile("[^\n\x08]\x08")  # a character erased by a backspace


def render_stream_text(text: str) -> str:
    """What a terminal shows for ``text``: ``\\r`` returns to the line start, ``\\b`` erases.

    >>> render_stream_text("train:  10%\\rtrain:  50%\\rtrain: 100%\\ndone\\n")
    'train: 100%\\ndone\\n'
    """
    text = text.replace("\r\n", "\n")
    previous = None
    while previous != text:
        previous, text = text, _BACKSPACE.sub("", text)
    text = _CARRIAGE_RETURN.sub("", text)
    return text.replace("\r", "")


def coalesce_streams(outputs):
    """Merge each cell's stream outputs per stream name, as a terminal would show them.

    Same contract as ``myst_nb.core.utils.coalesce_streams`` (which it replaces): stream
    outputs with the same name become one output, at the position of the first; other
    outputs keep their order; stdout is placed before an adjacent stderr.
    """
    if not outputs:
        return []
    new_outputs = []
    streams = {}
    for output in outputs:
        if output["output_type"] == "stream":
            name = output["name"]
            if name in streams:
                streams[name]["text"] += output["text"]
            else:
                output["text"] = str(output["text"])
                new_outputs.append(output)
                streams[name] = output
        else:
            new_outputs.append(output)
    for output in streams.values():
        output["text"] = render_stream_text(output["text"]).rstrip() + "\n"
    for i, output in enumerate(new_outputs):
        if (output["output_type"] == "stream" and output["name"] == "stderr"
                and i + 1 < len(new_outputs)
                and new_outputs[i + 1]["output_type"] == "stream"
                and new_outputs[i + 1]["name"] == "stdout"):
            new_outputs.insert(i, new_outputs.pop(i + 1))
    return new_outputs


def _patch_myst_nb() -> None:
    from myst_nb.core import render

    if not hasattr(render, "coalesce_streams"):
        raise RuntimeError(
            "book_infra: myst_nb.core.render.coalesce_streams is gone (myst-nb changed); "
            "update tools/sphinx_ext/book_infra.py so progress bars render as one line.")
    render.coalesce_streams = coalesce_streams


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # an inline script is registered once with filename None and once with '' (sphinx-thebe)
        key = (str(getattr(js, "filename", js) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    scripts[:] = unique


def _author_year_style():
    from pybtex.style.formatting.plain import Style as PlainStyle
    from pybtex.style.labels import BaseLabelStyle

    def surname(person) -> str:
        return re.sub(r"[{}]", "", " ".join(person.prelast_names + person.last_names))

    def label(entry) -> str:
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        if not people:
            who = entry.fields.get("organization", entry.key)
        elif len(people) == 1:
            who = surname(people[0])
        elif len(people) == 2:
            who = f"{surname(people[0])} and {surname(people[1])}"
        else:
            who = f"{surname(people[0])} et al."
        return f"{who}, {entry.fields.get('year', 'n.d.')}"

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            entries = list(sorted_entries)
            labels = [label(e) for e in entries]
            seen: dict = {}
            for lab in labels:
                seen[lab] = seen.get(lab, 0) + 1
            count: dict = {}
            for lab in labels:
                if seen[lab] > 1:
                    count[lab] = count.get(lab, 0) + 1
                    yield lab + "abcdefghijklmnopqrstuvwxyz"[count[lab] - 1]
                else:
                    yield lab

    class AuthorYearStyle(PlainStyle):
        default_label_style = AuthorYearLabels

    return AuthorYearStyle


_CHAPTER = re.compile(r"(?:^|/)(\d+)([a-z]?)_[^/]*$")


def _number_figures_by_chapter(app, env):
    """Rewrite Sphinx's book-wide figure numbers as (chapter, n) within each chapter page."""
    for docname, types in env.toc_fignumbers.items():
        match = _CHAPTER.search(docname)
        if not match:
            continue
        chapter = f"{int(match.group(1))}{match.group(2)}"
        for ids in types.values():
            # the last number counts figures in page order (also after a renumbering)
            for n, key in enumerate(sorted(ids, key=lambda k: ids[k][-1]), 1):
                ids[key] = (chapter, n)
    return []


def setup(app):
    from pybtex.plugin import register_plugin

    app.connect("env-get-updated", _number_figures_by_chapter, priority=900)
    register_plugin("pybtex.style.formatting", "authoryear", _author_year_style(), force=True)
    _patch_myst_nb()
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
