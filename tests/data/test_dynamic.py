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


def test_last_proportions_are_returned_bit_for_bit(tmp_path):
    # Proportions as a run writes them, whose float sum is not exactly 1: dividing by it
    # would change a bit of each.
    written = {"a": 0.9414746821824703, "b": 0.03194898747681001, "c": 0.02657633034071963}
    total = sum(written.values())
    assert total != 1.0 and written["a"] / total != written["a"]
    line = json.dumps({"step": 10, "proportions": written})
    (tmp_path / "domain_history.jsonl").write_text(line + "\n")
    read = last_proportions(tmp_path, ["c", "a", "b"])
    assert [x.hex() for x in read] == [written[d].hex() for d in ("c", "a", "b")]


def test_last_proportions_of_domains_that_were_never_sampled(tmp_path):
    line = json.dumps({"step": 10, "proportions": {"a": 0.0, "b": 1.0}})
    (tmp_path / "domain_history.jsonl").write_text(line + "\n")
    with pytest.raises(ValueError, match="a total proportion of 0.0"):
        last_proportions(tmp_path, ["a"])
