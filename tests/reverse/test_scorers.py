import pytest
import torch

from hindsight.errors import HindsightError
from hindsight.reverse.models import ReverseModel
from hindsight.reverse.scorers import PROMPTS, make_scorer

QUERIES = ["what is a cat?", "name a color.", "why?"]
RESPONSES = ["a cat is a small animal that purrs.", "blue", "because the sky is blue, and so on."]


def _sum(lm, ctx, tgt):
    return float(lm.score([ctx], [tgt])[0].double().sum())


def test_ba_scoring_equals_scoring_the_reversed_sequence(tiny):
    sc = make_scorer("trlm-ba", tiny, task="answer", reverse_lm=tiny)
    s = sc.score(QUERIES, RESPONSES)
    for i, (q, a) in enumerate(zip(QUERIES, RESPONSES)):
        want = _sum(tiny, tiny.encode(a)[::-1], tiny.encode(q)[::-1])
        assert float(s.total[i]) == pytest.approx(want, abs=1e-4)
        assert int(s.tokens[i]) == len(tiny.encode(q))
    # and it differs from the forward reading, so the reversal is not a no-op
    fwd = _sum(tiny, tiny.encode(RESPONSES[0]), tiny.encode(QUERIES[0]))
    assert abs(float(s.total[0]) - fwd) > 1e-3


def test_foba_uses_the_direction_tag_both_ways(tiny):
    model = ReverseModel(tiny, "foba", forward_tag="fwd:", reverse_tag="rev:")
    rev = make_scorer("trlm-foba", tiny, reverse_lm=model).score(QUERIES[:1], RESPONSES[:1])
    fwd = make_scorer("trlm-foba", tiny, reverse_lm=model, direction="forward").score(QUERIES[:1], RESPONSES[:1])
    assert not hasattr(tiny, "direction_tags")  # nothing is stored on the (shared) language model
    q, a = tiny.encode(QUERIES[0]), tiny.encode(RESPONSES[0])
    assert float(rev.total[0]) == pytest.approx(_sum(tiny, tiny.encode("rev:") + a[::-1], q[::-1]), abs=1e-4)
    assert float(fwd.total[0]) == pytest.approx(_sum(tiny, tiny.encode("fwd:") + q, a), abs=1e-4)
    with pytest.raises(HindsightError):
        make_scorer("trlm-foba", tiny, reverse_lm=tiny, direction="sideways")


@pytest.mark.parametrize("name", ["self", "forward", "trlm-fo", "trlm-ba"])
@pytest.mark.parametrize("task", sorted(PROMPTS))
def test_batched_scoring_equals_single(tiny, name, task):
    sc = make_scorer(name, tiny, task=task, reverse_lm=tiny)
    batched = sc.score(QUERIES, RESPONSES)
    for i in range(len(QUERIES)):
        single = sc.score([QUERIES[i]], [RESPONSES[i]])
        assert float(single.total[0]) == pytest.approx(float(batched.total[i]), abs=1e-4)
        assert int(single.tokens[0]) == int(batched.tokens[i])
    assert torch.allclose(batched.mean, batched.total / batched.tokens)


def test_scorer_directions_follow_the_templates(tiny):
    """TRLM-Fo scores the query (its token count is the query's), forward scores the response."""
    fo = make_scorer("trlm-fo", tiny, task="retrieval").score(["ab"], ["a long passage"])
    fw = make_scorer("forward", tiny, task="retrieval").score(["ab"], ["a long passage"])
    assert int(fo.tokens[0]) == len(tiny.encode(" ab"))
    assert int(fw.tokens[0]) == len(tiny.encode(" a long passage"))


def test_scorer_errors(tiny):
    with pytest.raises(HindsightError, match="Unknown scorer"):
        make_scorer("best", tiny)
    with pytest.raises(HindsightError, match="reverse_model"):
        make_scorer("trlm-ba", tiny)
    with pytest.raises(HindsightError, match="Unknown scoring task"):
        make_scorer("forward", tiny, task="poetry")
    with pytest.raises(HindsightError, match="trlm-foba"):
        make_scorer("trlm-ba", tiny, reverse_lm=ReverseModel(tiny, "foba"))
    with pytest.raises(HindsightError):
        make_scorer("forward", tiny).score(["a"], ["b", "c"])


def test_long_contexts_keep_the_tokens_nearest_the_scored_text(tiny):
    """A context longer than the model's window is cut from the far end, not refused."""
    long_answer = "the answer is long. " * 20  # 400 characters; tiny's context is 256
    sc = make_scorer("trlm-ba", tiny, reverse_lm=tiny)
    got = sc.score(["why?"], [long_answer])
    q, a = tiny.encode("why?")[::-1], tiny.encode(long_answer)[::-1]
    want = _sum(tiny, a[-(tiny.max_length - len(q)):], q)
    assert float(got.total[0]) == pytest.approx(want, abs=1e-4)
    with pytest.raises(HindsightError, match="context"):
        make_scorer("forward", tiny).score(["q"], ["x" * 300])
