"""Plain-text tables for the reports readers print (sparsity, compression)."""

from __future__ import annotations


def format_table(header, lines, *, right=frozenset()) -> str:
    """Header, rule, body, rule, last line (the total); columns in ``right`` right-aligned."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(fmt(header))
    body = [fmt(line) for line in lines]
    return "\n".join([fmt(header), rule, *body[:-1], rule, body[-1]])
