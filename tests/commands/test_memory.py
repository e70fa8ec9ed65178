"""`shearing memory`: per-GPU memory of a run, on the meta device, against counts by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from shearing.commands.memory import FIELDS, estimate, recipe_run, recipes_table, saved_bytes

REPO = Path(__file__).resolve().parents[2]
LLAMA2_7B_PARAMS = 6_738_415_616  # the model card's count


def test_the_parts_that_follow_from_parameter_counts(tmp_path):
    e = estimate(recipe_run("prune_2.7b.yaml", tmp_path), gpus=8, seq_len=4096)
    assert e.params == LLAMA2_7B_PARAMS
    assert e.parts["weights"] == e.parts["gradients"] == 4 * LLAMA2_7B_PARAMS / 8  # fp32
    assert e.parts["optimizer"] == 8 * LLAMA2_7B_PARAMS / 8  # AdamW's two moments
    # the gates of the paper on Llama-2-7B: one per hidden dimension, FFN unit, head and
    # layer, and two multipliers per module; with their gradient and AdamW state
    gates = 4096 + 32 * 11008 + 32 * 32 + 32 + 2 * 4
    assert e.parts["gates"] == 16 * gates
    assert e.parts["teacher"] == 0
    # a decoder layer of Llama-2-7B: 4 attention and 3 FFN matrices and 2 norms, bf16, 2
    per_layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    assert e.parts["layers in flight"] == 2 * 2 * per_layer
    distilled = estimate(recipe_run("continue_2.7b_distill.yaml", tmp_path), 8, 4096)
    assert distilled.parts["teacher"] == 2 * LLAMA2_7B_PARAMS / 8  # bf16, sharded


def test_activations_grow_with_the_tokens_and_keep_no_score_matrix(tmp_path):
    run = recipe_run("prune_2.7b.yaml", tmp_path)
    one = saved_bytes(run, 1, 1024)
    two = saved_bytes(run, 2, 1024)
    long = saved_bytes(run, 1, 2048)
    total = [outside + sum(layers) for outside, layers in (one, two, long)]
    # twice the rows: twice the bytes (a count of weights would not double)
    assert total[1] == pytest.approx(2 * total[0], rel=1e-3)
    # the same tokens in rows twice as long: the same bytes (a score matrix is s x s)
    assert total[2] == pytest.approx(total[1], rel=1e-3)
    # the loss keeps the fp32 log-softmax over the vocabulary: 1023 x 32000 x 4 bytes
    assert one[0] >= 1023 * 32000 * 4
    # with activation checkpointing each layer keeps its bf16 input, one layer is recomputed
    e = estimate(run, gpus=8, seq_len=4096)
    outside, layers = saved_bytes(run, 4, 4096)
    assert e.parts["activations"] == outside + 32 * 4 * 4096 * 4096 * 2 + max(layers)


def test_the_cluster_guide_shows_the_recipes_table():
    page = (REPO / "docs" / "multi-gpu.md").read_text()
    assert recipes_table() in page, "regenerate it: shearing memory --recipes"
    assert all(f in page for f in FIELDS)
