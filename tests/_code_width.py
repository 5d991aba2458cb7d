"""Find the code lines of reStructuredText and Markdown, for the 76-column tests.

The book's API page (book/api.md, whose reference sections Sphinx renders from
prunekit's docstrings) shows code in boxes about 76 monospace characters wide; a wider
line gets a horizontal scroll bar. tests/test_docstrings.py and tests/test_book.py use
these helpers to keep every line of code on that page within the box.
"""

from __future__ import annotations

import ast

WIDTH = 76

# MyST code directives (their content is code, unlike an admonition's)
_MYST_CODE = ("{code-block}", "{code}", "{code-cell}", "{sourcecode}")

def rst_code_lines(text: str):
    """``(index, width, line)`` of every code line of the reST ``text``, as docutils parses it.

    Code is a doctest block (the examples and their expected output), a literal block
    (after a paragraph ending in ``::``) or a ``.. code-block::``; ``width`` is the line's
    length as rendered (the block's own indentation removed), ``index`` the 0-based line
    of ``text`` where the block starts. Sphinx's roles and directives, which plain
    docutils does not know, are not code: docutils quotes them in its (silenced) error
    messages, which are skipped.
    """
    from docutils import nodes
    from docutils.core import publish_doctree

    tree = publish_doctree(text, settings_overrides={"report_level": 5, "halt_level": 5})
    found = []
    for block in tree.findall(lambda n: isinstance(n, (nodes.literal_block, nodes.doctest_block))):
        if any(isinstance(a, nodes.system_message) for a in _ancestors(block)):
            continue
        start = max((block.line or 1) - len(block.astext().splitlines()), 0)
        found += [(start, len(line), line) for line in block.astext().splitlines()]
    return found


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def docstrings(source: str):
    """``(name, lineno, text)`` of every docstring in the Python ``source``.

    Module, class and function docstrings, and the attribute docstrings that Sphinx's
    ``autodata`` shows (a string right after an assignment). ``text`` is dedented as
    ``ast.get_docstring`` gives it (and as Sphinx renders it); ``lineno`` is the line
    of the source file that holds its first line.
    """
    tree = ast.parse(source)
    nodes = [(tree, "module docstring")]
    nodes += [(n, n.name) for n in ast.walk(tree)
              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    for node, name in nodes:
        text = ast.get_docstring(node)
        if text:
            yield name, _first_line(node.body[0].value), text
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for assign, expr in zip(body, body[1:]):
            if (isinstance(assign, (ast.Assign, ast.AnnAssign)) and isinstance(expr, ast.Expr)
                    and isinstance(expr.value, ast.Constant) and isinstance(expr.value.value, str)):
                target = assign.targets[0] if isinstance(assign, ast.Assign) else assign.target
                name = ast.unparse(target)
                yield name, _first_line(expr.value), ast.get_docstring(
                    ast.Module(body=[expr], type_ignores=[]))


def _first_line(constant: ast.Constant) -> int:
    """The file line of a docstring's first non-blank line (what ``cleandoc`` keeps)."""
    raw = constant.value.expandtabs().split("\n")
    skipped = next((k for k, line in enumerate(raw) if line.strip()), 0)
    return constant.lineno + skipped


def markdown_code_lines(text: str):
    """``(index, width, line)`` of every code line of the MyST Markdown ``text``.

    Fenced code blocks, as markdown-it (MyST's parser) finds them; the reST inside
    ```` ```{eval-rst} ```` counts as :func:`rst_code_lines` finds it, and other directives
    (```` ```{admonition} ````, ...) are searched for fences inside.
    """
    from markdown_it import MarkdownIt

    found = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence":
            continue
        first = token.map[0] + 1
        info, body = token.info.strip(), token.content
        if info.startswith("{eval-rst}"):
            found += [(first + k, width, line) for k, width, line in rst_code_lines(body)]
        elif info.startswith("{") and not info.startswith(_MYST_CODE):
            found += [(first + k, width, line) for k, width, line in markdown_code_lines(body)]
        else:
            lines = body.splitlines()
            if info.startswith("{"):  # a code directive's options (:linenos:) are not code
                while lines and lines[0].lstrip().startswith(":"):
                    lines.pop(0)
                    first += 1
            found += [(first + k, len(line), line) for k, line in enumerate(lines)]
    return found
