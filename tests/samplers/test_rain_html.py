"""The HTML view of a RAIN search: self-contained, one element per tree node, opened in headless Chromium."""

import html
import json
import re
import shutil
import subprocess

import pytest

from hindsight.potentials.self_eval import PotentialEvaluator
from hindsight.samplers.rain import Rain
from hindsight.samplers.rain_html import count_nodes, tree_html

from .test_rain import Prefers, cfg, fake_embed


@pytest.fixture(scope="module")
def tree(toy):
    res = Rain(toy, PotentialEvaluator(Prefers("abc")), cfg(max_tokens=5, candidates=4, top_k=4, max_iters=6),
               embed=fake_embed, use_chat=False).run("c")
    t = res.tree_json()
    assert len(t["steps"]) >= 2 and count_nodes(t["root"]) > 10
    return t


def committed_text(page: str) -> str:
    m = re.search(r'<div class="answer" id="committed-text">(.*?)</div>', page, re.S)
    return html.unescape(m.group(1))


def test_page_is_self_contained_and_shows_every_node(tree):
    page = tree_html(tree)
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\(", page)  # nothing fetched from anywhere
    assert page.count('<li class="node') == count_nodes(tree["root"])
    assert page.count('<li class="node committed"') == len(tree["steps"]) + 1  # the root and every commit
    assert committed_text(page) == tree["text"]
    assert page.count('<h3 class="commit">') == len(tree["steps"])
    for i, step in enumerate(tree["steps"]):
        assert f"commit {i}: {step['iterations']} iterations" in page
    assert page.count('<tr class="cand chosen">') == len(tree["steps"])


def test_text_is_escaped(tree):
    t = json.loads(json.dumps(tree))
    t["text"] = "<script>alert(1)</script> & more"
    page = tree_html(t)
    assert "<script>alert" not in page and committed_text(page) == t["text"]


def browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_chromium_renders_the_page(tree, tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium) to render the page")
    f = tmp_path / "tree.html"
    f.write_text(tree_html(tree), encoding="utf-8")
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    n = count_nodes(tree["root"])
    # the inline script ran in the browser and counted the rendered node elements
    assert re.search(r'<span id="node-count">(\d+)</span>', dom).group(1) == str(n)
    assert dom.count('class="node') == n
    assert committed_text(dom) == tree["text"]
