"""The dynamic-batch-loading update rule against hand-computed values."""

import json
import math

import pytest

from shearing.data.dynamic import last_proportions, update_proportions

W = [0.5, 0.3, 0.2]
REF = [2.0, 1.0, 3.0]
LOSSES = {0: 2.5, 1: 0.8, 2: 3.3}  # excess: +0.5, -0.2, +0.3


def normalise(ws):
    return [w / sum(ws) for w in ws]


def test_paper_rule_clips_negative_excess_at_zero():
    expected = normalise([0.5 * math.exp(0.5), 0.3 * 1.0, 0.2 * math.exp(0.3)])
    assert update_proportions(W, LOSSES, REF) == pytest.approx(expected, abs=1e-12)


def test_without_clipping_and_with_eta():
    expected = normalise(
        [0.5 * math.exp(2 * 0.5), 0.3 * math.exp(2 * -0.2), 0.2 * math.exp(2 * 0.3)]
    )
    got = update_proportions(W, LOSSES, REF, eta=2.0, clip=False)
    assert got == pytest.approx(expected, abs=1e-12)


def test_smoothing_mixes_in_uniform():
    raw = normalise([0.5 * math.exp(0.5), 0.3, 0.2 * math.exp(0.3)])
    expected = [(1 - 0.1) * w + 0.1 / 3 for w in raw]
    assert update_proportions(W, LOSSES, REF, smoothing=0.1) == pytest.approx(expected, abs=1e-12)
    assert sum(expected) == pytest.approx(1.0)


def test_a_domain_without_loss_is_not_moved():
    expected = normalise([0.5 * math.exp(0.5), 0.3, 0.2])
    assert update_proportions(W, {0: 2.5}, REF) == pytest.approx(expected, abs=1e-12)


def test_last_proportions_of_a_history(tmp_path):
    lines = [
        {"step": 0, "proportions": {"a": 0.5, "b": 0.5}},
        {"step": 50, "proportions": {"a": 0.2, "b": 0.7, "c": 0.1}},
    ]
    (tmp_path / "domain_history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert last_proportions(tmp_path, ["b", "a"]) == pytest.approx([0.7 / 0.9, 0.2 / 0.9])
    with pytest.raises(ValueError, match="has no proportion for domain 'z'"):
        last_proportions(tmp_path, ["a", "z"])
    with pytest.raises(ValueError, match="has no domain history"):
        last_proportions(tmp_path / "nothing", ["a"])
