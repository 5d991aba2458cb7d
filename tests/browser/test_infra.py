"""The book's build infrastructure, without a build: stream rendering and the check tree.

These run with the browser test (`make test-browser`); they need no browser.
"""

from __future__ import annotations

import json
import pathlib
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "sphinx_ext"))
sys.path.insert(0, str(ROOT / "tools"))
import book_infra  # noqa: E402
import book_tree  # noqa: E402


def stream(text, name="stdout"):
    return nbformat.from_dict({"output_type": "stream", "name": name, "text": text})


def test_a_progress_bar_flushed_in_chunks_renders_as_its_last_state():
    chunks = ["Split(train 4000)\n", "\rtrain:   0%|          | 0/50",
              "\rtrain:  40%|████      | 20/50", "\rtrain:  80%|████████  | 40/50",
              "\rtrain: 100%|██████████| 50/50\n", "accuracy 0.95\n"]
    (out,) = book_infra.coalesce_streams([stream(c) for c in chunks])
    assert out["text"] == "Split(train 4000)\ntrain: 100%|██████████| 50/50\naccuracy 0.95\n"


def test_prints_and_other_outputs_keep_their_lines_and_order():
    image = nbformat.from_dict({"output_type": "display_data", "data": {"text/plain": "fig"},
                                "metadata": {}})
    outs = book_infra.coalesce_streams([stream("a\n"), image, stream("b\n\nc\n"),
                                        stream("warn\n", "stderr")])
    assert [o["output_type"] for o in outs] == ["stream", "display_data", "stream"]
    assert outs[0]["text"] == "a\nb\n\nc\n" and outs[2]["text"] == "warn\n"


def test_backspaces_erase_one_character_and_words_survive():
    assert book_infra.render_stream_text("spinner -\b\\\b|\bdone\n") == "spinner done\n"


def test_myst_nb_renders_streams_with_book_infra():
    from myst_nb.core import render

    book_infra._patch_myst_nb()
    assert render.coalesce_streams is book_infra.coalesce_streams


def test_book_tree_refuses_missing_and_stale_executed_copies(tmp_path):
    executed = tmp_path / "executed"
    problems = book_tree.build_tree(executed, tmp_path / "tree")
    assert problems and all("no executed copy" in p for p in problems)
    for src in (ROOT / "notebooks").glob("*.ipynb"):
        nb = json.loads(src.read_text())
        nb["metadata"]["book_executed"] = {"source_sha256": "0" * 64}
        (executed / "notebooks").mkdir(parents=True, exist_ok=True)
        (executed / "notebooks" / src.name).write_text(json.dumps(nb))
    problems = book_tree.build_tree(executed, tmp_path / "tree")
    assert problems and all("stale" in p for p in problems)
    assert not (tmp_path / "tree").exists()


def test_book_tree_switches_execution_off_once():
    text = (ROOT / "_config.yml").read_text()
    out = book_tree.check_config(text)
    assert 'execute_notebooks: "off"' in out and out.count("execute_notebooks:") == 1
