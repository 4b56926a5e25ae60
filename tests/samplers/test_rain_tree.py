"""RAIN's tree rules on hand-built trees: PUCT, min-max normalisation, root priors, backup, sibling sharing."""

import math

import pytest
import torch

from hindsight.samplers.rain_tree import (MinMax, Node, backup, best_child, child_priors, mean_pairwise_cosine,
                                          puct_scores, select_child)


def tree():
    root = Node(tokens=[], n=4.0, w=0.0)
    specs = [(0.5, 2.0, 1.0), (0.3, 1.0, -0.5), (0.2, 0.0, 0.0)]  # raw prior, n, w
    for p, n, w in specs:
        root.children.append(Node(tokens=[len(root.children)], prior=p, parent=root, depth=1, n=n, w=w))
    return root


def test_minmax_starts_at_the_value_range_and_only_widens():
    mm = MinMax()
    assert (mm.lo, mm.hi) == (-1.0, 1.0)  # values live in [-1, 1]: nothing seen yet is not "no range"
    assert mm.normalise(0.3) == pytest.approx(0.65)
    for v in (0.01, 0.02):  # tiny differences are not blown up to the whole [0, 1]
        mm.update(v)
    assert (mm.lo, mm.hi) == (-1.0, 1.0)
    assert mm.normalise(0.02) - mm.normalise(0.01) == pytest.approx(0.005)
    mm.update(-3.0)
    assert mm.normalise(-3.0) == 0.0 and mm.normalise(1.0) == 1.0
    assert mm.normalise(-1.0) == pytest.approx(0.5)


def test_puct_matches_formula_by_hand():
    root = tree()
    mm = MinMax()
    scores = puct_scores(root, mm, c=2.0)
    # q = 0.5, -0.5 -> normalised over [-1, 1]: 0.75, 0.25; the unvisited child's q term is 0
    expect = [0.75 + 2 * 0.5 * 2 / 3, 0.25 + 2 * 0.3 * 2 / 2, 0.0 + 2 * 0.2 * 2 / 1]
    assert scores == pytest.approx(expect)
    assert select_child(root, mm, c=2.0) is root.children[0]
    # with a huge exploration constant the prior/visit term decides: the unvisited child wins
    assert select_child(root, mm, c=100.0) is root.children[2]


def test_puct_picks_an_unvisited_high_prior_child():
    root = Node(tokens=[], n=3.0, w=0.0)
    for p, n, w in [(0.1, 2.0, 0.0), (0.8, 0.0, 0.0), (0.1, 1.0, 1.0)]:
        root.children.append(Node(tokens=[len(root.children)], prior=p, parent=root, depth=1, n=n, w=w))
    mm = MinMax()
    # visited: 0.5 + 2*0.1*sqrt(3)/3 = 0.62 and 1.0 + 2*0.1*sqrt(3)/2 = 1.17; unvisited: 0 + 2*0.8*sqrt(3) = 2.77
    assert select_child(root, mm, c=2.0) is root.children[1]
    root.children[1].prior = 0.05  # a low-prior unvisited child competes on its prior alone (0.69) and loses
    assert select_child(root, mm, c=2.0) is root.children[2]
    # and an unvisited child is not given the neutral 0.5 that an unvisited q = 0 would normalise to
    assert puct_scores(root, mm, c=2.0)[1] == pytest.approx(2 * (0.05 / 0.25) * math.sqrt(3))


def test_root_priors_mix_with_uniform():
    root = tree()
    for ch in root.children:
        ch.prior *= 10  # raw priors need not sum to one
    p = child_priors(root, 0.75)
    assert p == pytest.approx([0.75 * 0.5 + 0.25 / 3, 0.75 * 0.3 + 0.25 / 3, 0.75 * 0.2 + 0.25 / 3])
    assert sum(p) == pytest.approx(1.0)


def test_best_child_is_most_visited_then_highest_value():
    root = tree()
    assert best_child(root) is root.children[0]
    root.children[1].n, root.children[1].w = 2.0, 1.8  # same visits, higher value
    assert best_child(root) is root.children[1]


def _unit(v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_backup_running_means_up_to_stop_and_sibling_sharing():
    top = Node(tokens=[], n=10.0, w=1.0)
    root = Node(tokens=[1], parent=top, n=3.0, w=0.3)
    top.children = [root]
    a = Node(tokens=[2], parent=root, depth=1, n=1.0, w=0.5, embedding=_unit([1.0, 0.0]))
    twin = Node(tokens=[3], parent=root, depth=1, n=1.0, w=-1.0, embedding=_unit([1.0, 0.01]))
    other = Node(tokens=[4], parent=root, depth=1, n=2.0, w=0.0, embedding=_unit([0.0, 1.0]))
    root.children = [a, twin, other]
    mm = MinMax()
    backup(a, 1.0, mm, stop=root, sim_threshold=0.95, sim_weight=0.2)
    assert (a.n, a.w) == (2.0, 1.5)
    assert (root.n, root.w) == (4.0, 1.3)
    assert (top.n, top.w) == (10.0, 1.0)  # above the current node: untouched
    assert twin.n == pytest.approx(1.2) and twin.w == pytest.approx(-1.0 + 0.2)
    assert (other.n, other.w) == (2.0, 0.0)  # dissimilar sibling: untouched
    assert (mm.lo, mm.hi) == (-1.0, 1.0)  # every q stayed inside the initial range


def test_mean_pairwise_cosine():
    nodes = [Node(tokens=[i], embedding=_unit(v)) for i, v in enumerate([[1, 0], [1, 0], [0, 1]])]
    assert mean_pairwise_cosine(nodes[:2]) == pytest.approx(1.0)
    assert mean_pairwise_cosine(nodes) == pytest.approx((1 + 0 + 0) * 2 / 6)
    assert mean_pairwise_cosine(nodes[:1]) == 0.0


def test_tree_json_and_path_tokens():
    root = tree()
    grand = Node(tokens=[7, 8], parent=root.children[1], depth=2)
    root.children[1].children.append(grand)
    assert grand.path_tokens() == [1, 7, 8]
    assert grand.path_tokens(stop=root.children[1]) == [7, 8]
    js = root.to_json({id(root), id(root.children[1])})
    assert js["children"][1]["committed"] and not js["children"][0]["committed"]
    assert js["children"][1]["children"][0]["tokens"] == [7, 8]
    assert math.isclose(js["children"][0]["value"], 0.5)
