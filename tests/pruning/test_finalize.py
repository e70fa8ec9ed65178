"""Slicing: the sliced model equals the masked model under the same binary masks."""

import pytest
import torch

from shearing.models.decoder import Masks
from shearing.pruning.finalize import masks_report, slice_model
from tests.helpers import random_l0, tiny_pair


@pytest.mark.parametrize(
    "heads,kv,target",
    [
        (
            4,
            4,
            dict(
                hidden_size=20,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=30,
            ),
        ),  # multi-head
        (
            4,
            2,
            dict(
                hidden_size=20,
                num_hidden_layers=2,
                num_attention_heads=1,
                num_key_value_heads=1,
                intermediate_size=30,
            ),
        ),  # grouped-query
        (
            8,
            2,
            dict(
                hidden_size=24,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=7,
            ),
        ),  # GQA, heads within groups
    ],
)
def test_sliced_model_equals_masked_model_with_every_module_pruned(heads, kv, target):
    _, model = tiny_pair(num_attention_heads=heads, num_key_value_heads=kv, head_dim=8)
    l0 = random_l0(model, target)
    masks = l0.deterministic_masks()
    small = slice_model(model, masks)
    for key, value in target.items():
        assert getattr(small.shape, key) == value
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (small(ids) - model(ids, masks=masks)).abs().max().item()
    assert diff < 1e-4
    gates = {
        "layer": masks.z_layer,
        "hidden": masks.z_hidden,
        "kv_group": masks.z_kv,
        "head": masks.z_head,
        "intermediate": masks.z_intermediate,
    }
    binary = {m: (g > 0).float() for m, g in gates.items() if g is not None}
    assert small.num_params(include_embeddings=False) == l0.expected_num_params(binary).item()
    assert small.num_params(False) == small.shape.num_params(include_embeddings=False)


def test_tied_embeddings_stay_tied_after_slicing():
    _, model = tiny_pair(tie_word_embeddings=True)
    small = slice_model(model, Masks(z_hidden=(torch.arange(32) % 2).float()))
    assert small.lm_head.weight is small.model.embed_tokens.weight
    assert small.shape.hidden_size == 16


def test_rows_keeping_different_counts_are_rejected():
    _, model = tiny_pair()
    z = torch.ones(3, 48)
    z[1, :5] = 0
    with pytest.raises(ValueError, match="layers keep different numbers of intermediate"):
        slice_model(model, Masks(z_intermediate=z))


def test_masks_report_lists_kept_indices():
    z_int = torch.zeros(2, 4)
    z_int[0, [1, 3]] = 1
    z_int[1, [0, 2]] = 1
    report = masks_report(Masks(z_layer=torch.tensor([1.0, 0.0, 1.0]), z_intermediate=z_int))
    assert report["masks"] == {"z_layer": [0, 2], "z_intermediate": [[1, 3], [0, 2]]}
