"""Activation importance against transformers' own activations and hand-made weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shearing.models.decoder import MaskableDecoder
from shearing.pruning.importance import calibration_batches, importance_scores, random_scores
from shearing.pruning.l0 import (
    INIT_LOG_ALPHA,
    PRUNED_LOG_ALPHA,
    L0Module,
    open_probability,
    row_ranks,
)
from tests.helpers import tiny_pair

ALL = ["layer", "hidden", "head", "kv_group", "intermediate"]


def batches(vocab=97, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, 16), generator=g) for _ in range(n)]


def test_scores_match_transformers_activations():
    ref, ours = tiny_pair(seed=3)
    data = batches()
    scores = importance_scores(ours, data)
    ids = torch.cat(data)
    captured = {}
    handles = [
        layer.mlp.down_proj.register_forward_pre_hook(
            lambda m, inputs, i=i: captured.__setitem__(("ffn", i), inputs[0])
        )
        for i, layer in enumerate(ref.model.layers)
    ] + [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda m, inputs, i=i: captured.__setitem__(("attn", i), inputs[0])
        )
        for i, layer in enumerate(ref.model.layers)
    ]
    with torch.no_grad():
        hidden = ref(ids, output_hidden_states=True).hidden_states
    for h in handles:
        h.remove()
    cfg = ref.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    for i in range(cfg.num_hidden_layers):
        ffn = captured[("ffn", i)].abs().mean((0, 1)).double()
        torch.testing.assert_close(scores["intermediate"][i], ffn, rtol=1e-4, atol=1e-7)
        heads = captured[("attn", i)].reshape(*ids.shape, -1, hd).norm(dim=-1).mean((0, 1))
        torch.testing.assert_close(
            scores["head"][i].flatten(), heads.double(), rtol=1e-4, atol=1e-7
        )
        if i + 1 < cfg.num_hidden_layers:  # the last hidden state has the final norm applied
            bi = (1 - F.cosine_similarity(hidden[i], hidden[i + 1], dim=-1)).mean().double()
            torch.testing.assert_close(scores["layer"][i], bi, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(scores["kv_group"], scores["head"].sum(-1))


def test_scores_are_deterministic_for_fixed_rows():
    _, ours = tiny_pair(seed=3)
    a, b = importance_scores(ours, batches()), importance_scores(ours, batches())
    assert all(torch.equal(a[m], b[m]) for m in a)
    c = importance_scores(ours, batches(seed=1))
    assert not torch.equal(a["intermediate"], c["intermediate"])


def zeroed_model(mha=False) -> MaskableDecoder:
    """A tiny model with one unit of every kind switched off by zeroed weights."""
    _, model = tiny_pair(seed=5, **({"num_key_value_heads": 4} if mha else {}))
    hd = model.shape.head_dim
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[7].zero_()  # FFN unit 7 of layer 1
        model.model.layers[0].self_attn.v_proj.weight[hd : 2 * hd].zero_()  # kv head 1, layer 0
        for norm in model.modules():  # hidden dimension 5 after every norm
            if type(norm).__name__ == "RMSNorm":
                norm.weight[5] = 0.0
        layer = model.model.layers[2]  # layer 2 becomes the identity
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    return model


@pytest.mark.parametrize("mha", [False, True])
def test_a_zeroed_unit_scores_lowest(mha):
    scores = importance_scores(zeroed_model(mha), batches())
    assert scores["intermediate"][1].argmin() == 7 and scores["intermediate"][1][7] == 0
    assert scores["kv_group"][0].argmin() == 1 and scores["kv_group"][0][1] == 0
    assert (scores["head"][0, 1] == 0).all()
    assert scores["hidden"].argmin() == 5 and scores["hidden"][5] == 0
    assert scores["layer"].argmin() == 2 and scores["layer"][2].abs() < 1e-6


def test_row_ranks_hand_computed():
    r = row_ranks(torch.tensor([[0.3, 0.1, 0.9], [2.0, 2.0, 1.0]]))
    assert r.tolist() == [[1, 0, 2], [1, 2, 0]]  # ties broken by position


def test_importance_init_starts_at_the_importance_mask():
    model = zeroed_model()
    scores = importance_scores(model, batches())
    s = model.shape
    target = s.replace(num_hidden_layers=2, hidden_size=24, intermediate_size=40,
                       num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    l0 = L0Module(s, target, ALL, warmup_steps=10)
    l0.init_from_scores(scores)
    masks = l0.deterministic_masks()
    assert masks.z_layer.tolist() == [1.0, 1.0, 0.0]  # the identity layer goes
    assert masks.z_hidden[5] == 0 and masks.z_intermediate[1, 7] == 0
    assert masks.z_kv[0].tolist() == [1.0, 0.0]  # the silent key/value head goes
    expected, targets = l0.expected_sparsity(), l0.target_sparsity(step=0)
    for m, a in l0.log_alpha.items():
        assert float(a.max()) == pytest.approx(INIT_LOG_ALPHA)
        kept = masks_of(l0)[m] > 0
        if (~kept).any():  # (the head module keeps both heads of the kept group)
            assert float(a.min()) == pytest.approx(PRUNED_LOG_ALPHA - 1)
            assert open_probability(a[~kept]).max() < 0.2  # mostly closed
        assert open_probability(a[kept]).min() > 0.98  # (almost) surely open
        # the target ramps from where the gates start, not from 0
        assert targets[m] == pytest.approx(float(expected[m]))
        assert l0.target_sparsity(step=10)[m] == pytest.approx(l0.specs[m].target_sparsity)
    with pytest.raises(ValueError, match="layer scores have shape"):
        l0.init_from_scores({**scores, "layer": torch.ones(5)})


def masks_of(l0):
    from shearing.pruning.modules import MASK_FIELDS

    masks = l0.deterministic_masks()
    return {m: getattr(masks, MASK_FIELDS[m]) for m in l0.log_alpha}


def test_random_scores_depend_on_the_seed_only():
    _, model = tiny_pair()
    a, b, c = random_scores(model, 1), random_scores(model, 1), random_scores(model, 2)
    assert all(torch.equal(a[m], b[m]) for m in a)
    assert not torch.equal(a["intermediate"], c["intermediate"])


def test_calibration_batches_take_the_first_train_rows(tiny_workspace):
    from shearing.data.mixture import open_domain

    got = torch.cat(calibration_batches(tiny_workspace["data"], 3, batch_size=2))
    domains = sorted(tiny_workspace["texts"])
    assert got.shape == (3 * len(domains), 32)
    for k, domain in enumerate(domains):
        rows = open_domain(tiny_workspace["data"], "train", domain)
        for j in range(3):
            assert got[3 * k + j].tolist() == rows[j]["tokens"].tolist()
    with pytest.raises(ValueError, match="must be positive, got 0"):
        calibration_batches(tiny_workspace["data"], 0)
