"""The tables prunekit's reports show: plain text for ``print``, HTML for Jupyter.

Every report object (sparsity, compression, comparison, sensitivity, k-means info, model
comparison, lottery tickets) builds one :class:`Table` and gets both renderings from it, so
that what a terminal prints and what a notebook (or the book) shows are the same numbers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """A report's table: cells already formatted as strings.

    Attributes:
        header: the column names.
        rows: one tuple of cell strings per row.
        right: indices of the right-aligned (numeric) columns.
        total: the last row is a total, set off by a rule (text) or a ``<tfoot>`` (HTML).
        title: a line above the table.
        notes: lines below it.
    """

    header: tuple
    rows: tuple
    right: frozenset = frozenset()
    total: bool = True
    title: str = ""
    notes: tuple = ()

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.header)]

        def fmt(cells):
            return "  ".join(c.rjust(w) if i in self.right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(fmt(self.header))
        body = [fmt(r) for r in self.rows]
        if self.total and body:
            body = [*body[:-1], rule, body[-1]]
        return "\n".join([*([self.title] if self.title else []), fmt(self.header), rule, *body,
                          *self.notes])

    def html(self) -> str:
        # class "dataframe": the book's theme and Jupyter style it as they style pandas
        # tables (light and dark); the padding is inline so that it holds everywhere.
        def cells(row, tag):
            return "".join(
                f'<{tag} style="text-align: {"right" if i in self.right else "left"}; '
                f'padding: 0.2em 0.4em">{html.escape(c)}</{tag}>'
                for i, c in enumerate(row))

        body = [f"<tr>{cells(r, 'td')}</tr>" for r in self.rows]
        foot = ""
        if self.total and body:
            foot = f"<tfoot>{body.pop()}</tfoot>"
        parts = ['<div class="prunekit-table">']
        if self.title:
            parts.append(f"<p>{html.escape(self.title)}</p>")
        parts.append(f'<table class="dataframe"><thead>'
                     f"<tr>{cells(self.header, 'th')}</tr></thead>"
                     f"<tbody>{''.join(body)}</tbody>{foot}</table>")
        parts += [f"<p>{html.escape(n)}</p>" for n in self.notes]
        parts.append("</div>")
        return "".join(parts)


class TableRepr:
    """Mixin for a report with a ``_table()``: ``print`` gives text, Jupyter an HTML table.

    A dataclass using it must pass ``repr=False``, or the generated ``__repr__`` hides it.
    """

    def _table(self) -> Table:  # pragma: no cover - every report defines it
        raise NotImplementedError

    def __str__(self) -> str:
        return self._table().text()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self._table().html()
