"""Report objects show the same table as text (``print``) and as HTML (Jupyter, the book).

A reader who prints a report in a terminal and one who leaves it as a notebook cell's last
line must see the same numbers; the HTML must be a real table (the book's pages render it
to the column width instead of a fixed-width text block that runs off the page).
"""

from __future__ import annotations

import html.parser

import pytest
import torch
from torch import nn

import prunekit as pk


class Cells(html.parser.HTMLParser):
    """Rows of a rendered table (header, body and footer), as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self.sections, self.align, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("thead", "tbody", "tfoot"):
            self.section = tag
        elif tag == "tr":
            self.rows.append([])
            self.sections.append(self.section)
            self.align.append([])
        elif tag in ("td", "th"):
            self._cell = ""
            self.align[-1].append(dict(attrs).get("style", ""))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None


def parse(report):
    p = Cells()
    p.feed(report._repr_html_())
    return p


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def reports():
    model = pk.prune(mlp(), 0.5)
    x = torch.randn(8, 12)
    _, info = pk.kmeans_mask(torch.randn(200), 0.5, n_clusters=4, return_info=True)
    scan = pk.sensitivity_scan(mlp(), lambda m: float(m(x).detach().sum()), [0.25, 0.5], method="l1")
    return {
        "sparsity": pk.sparsity_report(model),
        "compression": pk.compression_report(model),
        "kmeans": info,
        "sensitivity": scan,
        "models": pk.compare_models(mlp(), model, x, repeats=2, warmup=1),
    }


@pytest.fixture(scope="module")
def all_reports():
    return reports()


@pytest.mark.parametrize("name", ["sparsity", "compression", "kmeans", "sensitivity", "models"])
def test_html_and_text_show_the_same_cells(all_reports, name):
    report = all_reports[name]
    table = report._table()
    parsed = parse(report)
    assert parsed.rows == [list(table.header), *map(list, table.rows)]
    text = str(report)
    assert text == repr(report)
    for row in table.rows:
        for cell in row:
            assert cell in text
    # numeric columns are right-aligned in both
    for styles in parsed.align:
        for i, style in enumerate(styles):
            assert ("right" in style) == (i in table.right)


def test_the_total_row_is_the_footer(all_reports):
    parsed = parse(all_reports["sparsity"])
    assert parsed.sections[0] == "thead" and parsed.sections[-1] == "tfoot"
    assert parsed.rows[-1][0] == "total"
    assert set(parsed.sections[1:-1]) == {"tbody"}


def test_sparsity_report_html_matches_the_weights():
    model = pk.prune(mlp(), 0.5)
    rows = parse(pk.sparsity_report(model)).rows
    zeros = [int((m.weight == 0).sum()) for m in model if isinstance(m, nn.Linear)]
    assert [int(r[4].replace(",", "")) for r in rows[1:-1]] == zeros
    assert rows[-1][5] == "50.00%"


def test_notes_and_titles_survive_in_html(all_reports):
    page = all_reports["sparsity"]._repr_html_()
    assert "not counted (dense): biases 20" in page
    assert "dense metric" in all_reports["sensitivity"]._repr_html_()


def test_cells_are_escaped():
    table = pk._table.Table(("layer", "n"), (("<script>&", "1"),), frozenset({1}), total=False)
    page = table.html()
    assert "<script>" not in page and "&lt;script&gt;&amp;" in page
    assert table.text().splitlines()[-1] == "<script>&  1"


def test_lottery_tickets_render_as_html():
    from prunekit.lottery import LotteryRound, LotteryTickets

    rounds = [LotteryRound(0, 0.0, 0.0, {}, 0.9), LotteryRound(1, 0.2, 0.2, {}, 0.85)]
    tickets = LotteryTickets(rounds, 0.2, "layer", mlp())
    rows = parse(tickets).rows
    assert rows == [["round", "requested", "achieved", "metric"], ["0", "0.00%", "0.00%", "0.9"],
                    ["1", "20.00%", "20.00%", "0.85"]]
    assert str(tickets).startswith("lottery tickets: 1 rounds of 20% (layer scope)")


def test_attention_output_projection_is_reported_as_linear():
    """torch's MHA out_proj is an internal Linear subclass; the report names it Linear."""
    mha = nn.MultiheadAttention(8, 2)
    pk.prune(mha, 0.5)
    kinds = {r.layer: r.kind for r in pk.sparsity_report(mha).rows}
    assert kinds["out_proj"] == "Linear"
    assert "NonDynamically" not in pk.sparsity_report(mha)._repr_html_()
