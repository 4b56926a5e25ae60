"""One self-contained HTML page that shows a RAIN search: what each commit chose among which candidates.

Input is :meth:`hindsight.samplers.rain.RainResult.tree_json`. The page has no external resources (inline CSS
and one inline script that counts the nodes, so a browser test can tell the page was rendered). Sections:

- the prompt and the committed response (``#committed-text``), with totals;
- per commit: the candidates the search weighed (text, visits, value, prior), the chosen one highlighted, and
  the iterations spent;
- the whole tree as nested lists, one ``.node`` element per node (committed path open and highlighted).
"""

from __future__ import annotations

import html
import json
from typing import Any

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
.answer{background:#eef6ee;border-left:4px solid #2a7a2a;padding:.5em .8em;white-space:pre-wrap}
.prompt{background:#f3f3f8;border-left:4px solid #556;padding:.5em .8em;white-space:pre-wrap}
table{border-collapse:collapse;margin:.3em 0 1em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td.t,th.t{text-align:left;font-family:ui-monospace,monospace;white-space:pre}
tr.chosen td{background:#ffe9a8;font-weight:600}
.bar{display:inline-block;height:.7em;background:#79a;vertical-align:middle}
ul{list-style:none;padding-left:1.2em;border-left:1px dotted #bbb;margin:0}
.node>details>summary,.node>span{font-family:ui-monospace,monospace;white-space:pre}
.node.committed>details>summary,.node.committed>span{background:#ffe9a8;font-weight:600}
.stats{color:#666;font-family:system-ui,sans-serif;font-weight:400;margin-left:.6em}
"""

SCRIPT = """
document.getElementById('node-count').textContent =
  String(document.querySelectorAll('.node').length);
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _shown(text: str) -> str:
    """A token set's text with its whitespace visible (a leading space matters)."""
    return _esc(json.dumps(text, ensure_ascii=False)[1:-1] or "∅")


def _value(node: dict[str, Any]) -> str:
    """The mean value, or a dash for a node never visited (it has none yet)."""
    return f'{node["value"]:+.3f}' if node["visits"] > 0 else "–"


def _stats(node: dict[str, Any]) -> str:
    return (f'<span class="stats">visits {node["visits"]:g} · value {_value(node)} · '
            f'prior {node["prior"]:.3g}{" · end" if node.get("terminal") else ""}</span>')


def _attrs(node: dict[str, Any]) -> str:
    cls = "node committed" if node.get("committed") else "node"
    return (f'class="{cls}" data-visits="{node["visits"]}" data-value="{node["value"]}" '
            f'data-prior="{node["prior"]}"')


def _tree(node: dict[str, Any], label: str | None = None) -> str:
    """A node and its subtree: nested lists, open along the committed path."""
    text = label if label is not None else _shown(node["text"])
    if not node["children"]:
        return f'<li {_attrs(node)}><span>{text}{_stats(node)}</span></li>'
    kids = "".join(_tree(c) for c in node["children"])
    opened = " open" if node.get("committed") else ""
    return (f'<li {_attrs(node)}><details{opened}><summary>{text}{_stats(node)}</summary>'
            f'<ul>{kids}</ul></details></li>')


def _commits(root: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    """One table per commit: the current node's children, the committed one highlighted."""
    out, node, i = [], root, 0
    while True:
        chosen = next((c for c in node["children"] if c.get("committed")), None)
        if chosen is None:
            break
        iters = steps[i]["iterations"] if i < len(steps) else None
        most = max((c["visits"] for c in node["children"]), default=1) or 1
        rows = []
        for c in sorted(node["children"], key=lambda c: -c["visits"]):
            width = int(80 * c["visits"] / most)
            rows.append(f'<tr class="cand{" chosen" if c is chosen else ""}"><td class="t">{_shown(c["text"])}</td>'
                        f'<td><span class="bar" style="width:{width}px"></span> {c["visits"]:g}</td>'
                        f'<td>{_value(c)}</td><td>{c["prior"]:.3g}</td><td>{len(c["children"])}</td></tr>')
        spent = f"{iters} iterations" if iters is not None else "iterations unknown"
        out.append(f'<h3 class="commit">commit {i}: {spent}, {len(node["children"])} candidates, chose '
                   f'<code>{_shown(chosen["text"])}</code></h3><table><tr><th class="t">candidate</th>'
                   f'<th>visits</th><th>value</th><th>prior</th><th>children</th></tr>{"".join(rows)}</table>')
        node, i = chosen, i + 1
    return "".join(out)


def count_nodes(node: dict[str, Any]) -> int:
    """Nodes in a tree JSON (the root included)."""
    return 1 + sum(count_nodes(c) for c in node["children"])


def tree_html(tree: dict[str, Any], title: str = "RAIN search") -> str:
    """The page for ``RainResult.tree_json()`` (a dict with prompt, text, steps and root)."""
    root, steps = tree["root"], tree.get("steps", [])
    iters = sum(s["iterations"] for s in steps)
    meta = tree.get("evaluator", "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{CSS}</style></head>
<body><h1>{_esc(title)}</h1>
<p>value: {_esc(str(meta))} · {len(steps)} commits · {iters} iterations ·
<span id="node-count">?</span> nodes in the tree (<span id="node-count-json">{count_nodes(root)}</span> in its JSON)</p>
<h2>Prompt</h2><div class="prompt">{_esc(tree["prompt"])}</div>
<h2>Committed response</h2><div class="answer" id="committed-text">{_esc(tree["text"])}</div>
<h2>Commits</h2>{_commits(root, steps)}
<h2>Whole tree</h2><ul>{_tree(root, label="(start of the response)")}</ul>
<script>{SCRIPT}</script></body></html>
"""
