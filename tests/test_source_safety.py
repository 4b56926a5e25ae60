"""The source never loads pickles from disk, never asks torch to, and never runs a model's own code."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# pickle.load( reads a file; pickle.loads of bytes this process just made (a picklability check) reads none
FORBIDDEN = ["pickle.load(", "pickle.Unpickler", "weights_only=False", "trust_remote_code=True", "allow_pickle=True"]


def sources() -> list[Path]:
    return sorted(p for d in ("src", "bench", "scripts") if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_no_unsafe_loading_in_the_source(needle):
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in sources()
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if needle in line.replace(" ", "")]
    assert not hits, f"{needle} found at {', '.join(hits)}"


def test_torch_load_always_says_weights_only():
    hits = []
    for p in sources():
        text = p.read_text(encoding="utf-8")
        start = 0
        while (i := text.find("torch.load(", start)) >= 0:
            call = text[i: text.find(")", i) + 1]
            if "weights_only=True" not in call.replace(" ", ""):
                hits.append(f"{p.relative_to(ROOT)}:{text[:i].count(chr(10)) + 1}")
            start = i + 1
    assert not hits, f"torch.load without weights_only=True at {', '.join(hits)}"
