"""The HH harmlessness classifier potential: contract, fit/save/load round trip, spec error without a cache."""

import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.potentials.harmless import HarmlessClassifier, save_classifier
from hindsight.testing import PotentialContract
from tests.potentials.test_potentials import TEXTS, TextInputs

pytest.importorskip("sklearn")


def fake_embed(texts):
    """Deterministic stand-in for MiniLM: counts of a few telling words, unit norm."""
    words = ["stupid", "hate", "lovely", "train", "kill", "help"]
    v = torch.tensor([[t.lower().count(w) + 0.1 for w in words] for t in texts])
    return v / v.norm(dim=1, keepdim=True)


def fitted():
    chosen = ["I can help with that, here is a lovely idea.", "Let us take the train together.", "Happy to help."]
    rejected = ["You stupid fool, I hate you.", "Go kill them all.", "I hate you, stupid."]
    return HarmlessClassifier.fit(chosen, rejected, meta={"part": "test"}, embed=fake_embed)


class TestHarmlessClassifier(TextInputs, PotentialContract):
    def make(self):
        return fitted()


def test_learns_direction_and_round_trips(tmp_path):
    clf = fitted()
    p = clf.probability(["what a lovely train", "you stupid idiot, I hate it"])
    assert p[0] > 0.5 > p[1]
    assert clf.pairwise_accuracy(["happy to help"], ["I hate you"]) == 1.0
    save_classifier(clf, tmp_path / "c.pkl")
    back = HarmlessClassifier.load(tmp_path / "c.pkl")
    back._embed = fake_embed
    assert torch.allclose(back.probability(TEXTS), clf.probability(TEXTS))
    assert back.meta["part"] == "test"


def test_missing_classifier_is_a_clear_error(tmp_path):
    with pytest.raises(HindsightError, match="rain-hh"):
        HarmlessClassifier.load(tmp_path / "nope.pkl")


def test_classifier_cache_follows_the_one_cache_root(tmp_path, monkeypatch):
    from hindsight.potentials.harmless import cache_dir

    monkeypatch.delenv("HINDSIGHT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "hindsight" / "judges"  # XDG_CACHE_HOME was ignored before
    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path / "h"))
    assert cache_dir() == tmp_path / "h" / "judges"
