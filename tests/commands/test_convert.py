"""convert's logit check: the masked model's own slice passes, a wrongly sliced one does not,
and fp32 rounding that a trained model amplifies at one position is not a mismatch."""

from __future__ import annotations

import pytest
import torch

import shearing.commands.convert as convert
from shearing.models.hf_io import load_model
from shearing.pruning.finalize import slice_model
from tests.helpers import random_l0

TARGET = dict(hidden_size=24, num_attention_heads=2, num_key_value_heads=1, intermediate_size=40)


def masked_model(tiny_workspace):
    model = load_model(tiny_workspace["model"]).eval()
    l0 = random_l0(model, TARGET, modules=["hidden", "head", "intermediate"])
    return model, l0.deterministic_masks()


def test_export_writes_the_slice_of_the_masked_model(tiny_workspace, tmp_path):
    model, masks = masked_model(tiny_workspace)
    out = convert.export(model, masks, tmp_path / "out", source=tiny_workspace["model"],
                         dtype="float32")  # fmt: skip
    assert (out / "config.json").is_file()


@pytest.mark.parametrize("fault", ["hidden dimension", "FFN unit"])
def test_export_refuses_a_wrong_slice(tiny_workspace, tmp_path, monkeypatch, fault):
    model, masks = masked_model(tiny_workspace)

    def wrong(model, masks):
        small = slice_model(model, masks)
        with torch.no_grad():
            if fault == "hidden dimension":  # the embedding column of one kept dimension lost
                small.model.embed_tokens.weight[:, 0] = 0.0
            else:  # one kept FFN unit's output weights lost, in the first layer
                small.model.layers[0].mlp.down_proj.weight[:, 0] = 0.0
        return small

    monkeypatch.setattr(convert, "slice_model", wrong)
    with pytest.raises(convert.ConversionMismatch, match="sliced model vs masked model"):
        convert.export(model, masks, tmp_path / "out", source=tiny_workspace["model"],
                       dtype="float32")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_check_allows_rounding_at_one_position_but_not_a_shift_everywhere():
    torch.manual_seed(0)
    expected = torch.randn(4, 32, 50) * 10  # largest |logit| about 40
    scale = expected.abs().max().item()
    # the measured worst case: 3.1e-4 of the largest logit at one position, ~1e-6 elsewhere
    spike = expected + torch.randn_like(expected) * 1e-6 * scale
    spike[1, 15] += 3.1e-4 * scale
    convert._check(spike, expected, "rounding")
    # every logit off by 1e-4 of the largest: mean 1e-4 > 2e-5 (what a wrong unit does)
    with pytest.raises(convert.ConversionMismatch, match="shift: logits differ by up to"):
        convert._check(expected + 1e-4 * scale, expected, "shift")
    # one position off by 2% of the largest logit: > 1e-2
    jump = expected.clone()
    jump[0, 0, 0] += 0.02 * scale
    with pytest.raises(convert.ConversionMismatch, match="jump"):
        convert._check(jump, expected, "jump")
