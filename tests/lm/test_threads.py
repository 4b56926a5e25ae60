"""The torch thread policy: an explicit HINDSIGHT_THREADS, else OMP_NUM_THREADS untouched, else idle cores."""

import pytest

from hindsight.errors import HindsightError
from hindsight.lm.threads import idle_cores, thread_count


def test_explicit_setting_wins():
    assert thread_count({"HINDSIGHT_THREADS": "3", "OMP_NUM_THREADS": "1"}) == 3


def test_omp_num_threads_is_left_to_torch():
    assert thread_count({"OMP_NUM_THREADS": "2"}) is None


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_bad_explicit_setting_is_one_sentence(value):
    with pytest.raises(HindsightError, match="HINDSIGHT_THREADS"):
        thread_count({"HINDSIGHT_THREADS": value})


@pytest.mark.parametrize("cores,load,want", [(8, 0.0, 8), (8, 6.2, 2), (2, 5.0, 1), (4, 1.4, 3)])
def test_idle_cores(cores, load, want):
    assert idle_cores(cores, load) == want
