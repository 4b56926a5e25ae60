from functools import lru_cache

import pytest

from hindsight.errors import HindsightError
from hindsight.potentials.infill import Infill
from hindsight.potentials.spec import parse_potential
from hindsight.testing import PotentialContract


@lru_cache(maxsize=1)
def _infill():
    from hindsight.lm.toy import tiny_model

    lm = tiny_model()
    return Infill(lm, lm.encode("once upon"), " a time")


class TestInfillContract(PotentialContract):
    def make(self):
        return _infill()

    def inputs(self):
        texts = [" there", " a", "", " the end."]
        return texts, [[] for _ in texts]


def test_infill_equals_plain_scoring_of_the_suffix(tiny):
    prompt = tiny.encode("hello")
    pot = parse_potential("infill: world*", lm=tiny, prompt_ids=prompt)  # '*' is part of the suffix
    x = tiny.encode(" big")
    eos = tiny.eos_token_ids[0]
    got = pot.log_phi([" big", " big"], [x, x + [eos]])
    want = float(tiny.score([prompt + x], [tiny.encode(" world*")])[0].sum())
    assert got[0] == pytest.approx(want, abs=1e-4) and got[1] == pytest.approx(want, abs=1e-4)


def test_infill_needs_a_model_and_a_suffix(tiny):
    with pytest.raises(HindsightError, match="model and a prompt"):
        parse_potential("infill:x")
    with pytest.raises(HindsightError, match="suffix"):
        parse_potential("infill:", lm=tiny, prompt_ids=[1])
