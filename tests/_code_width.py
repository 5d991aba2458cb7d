"""Find the code lines of reStructuredText and Markdown, for the 76-column tests.

The book's API page (book/api.md, whose reference sections Sphinx renders from
prunekit's docstrings) shows code in boxes about 76 monospace characters wide; a wider
line gets a horizontal scroll bar. tests/test_docstrings.py and tests/test_book.py use
these helpers to keep every line of code on that page within the box.
"""

from __future__ import annotations

import ast
import re

WIDTH = 76

# reST directives whose content is shown as code
_CODE_DIRECTIVE = re.compile(r"\.\. (code-block|code|sourcecode|doctest|testcode|testoutput)::")
# MyST fences: ```lang, ```{directive} args; code directives among them
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*)$")
_MYST_CODE = ("{code-block}", "{code}", "{code-cell}", "{sourcecode}")


def rst_code_lines(text: str):
    """``(index, width, line)`` of every code line of the reST ``text``.

    Code is a doctest block (from a ``>>>`` line to the next blank line: the examples
    and their expected output), a literal block (the indented lines after a paragraph
    that ends in ``::``) or the content of a ``.. code-block::`` (or similar)
    directive. ``width`` is counted from the block's own indentation, as rendered.
    """
    lines = text.splitlines()
    found = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        indent = len(lines[i]) - len(stripped)
        if stripped.startswith(">>>"):
            while i < len(lines) and lines[i].strip():
                found.append((i, len(lines[i]) - indent, lines[i]))
                i += 1
            continue
        directive = stripped.startswith(".. ")
        if (stripped.endswith("::") and not directive) or _CODE_DIRECTIVE.match(stripped):
            j, base = i + 1, None
            while j < len(lines):
                line = lines[j]
                if line.strip():
                    line_indent = len(line) - len(line.lstrip())
                    if line_indent <= indent:
                        break
                    if not (directive and base is None and line.lstrip().startswith(":")):
                        base = line_indent if base is None else base  # not a directive option
                        found.append((j, len(line) - base, line))
                j += 1
            i = j
            continue
        i += 1
    return found


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

    Fenced code blocks (```` ```python ````, ```` ```{code-block} ````, ...) count from
    the fence's indentation; the reST inside ```` ```{eval-rst} ```` counts as
    :func:`rst_code_lines` finds it; other directives are searched for fences inside.
    """
    lines = text.splitlines()
    found = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = len(opening[1]), opening[2], opening[3].strip()
        j = i + 1
        while j < len(lines) and not re.fullmatch(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*",
                                                  lines[j]):
            j += 1
        body = lines[i + 1:j]
        if info.startswith("{eval-rst}"):
            found += [(i + 1 + k, width, line) for k, width, line in rst_code_lines("\n".join(body))]
        elif info.startswith("{") and not info.startswith(_MYST_CODE):
            found += [(i + 1 + k, width, line) for k, width, line in markdown_code_lines("\n".join(body))]
        else:
            options = info.startswith("{")
            for k, line in enumerate(body):
                if options and line.lstrip().startswith(":"):
                    continue  # a directive option such as :linenos:
                options = False
                found.append((i + 1 + k, len(line) - min(indent, len(line) - len(line.lstrip())), line))
        i = j + 1
    return found
