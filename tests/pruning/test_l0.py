"""Hard-concrete gates, expected size and the Lagrangian, against hand-computed values."""

import math

import pytest
import torch

from shearing.models.config import DecoderShape
from shearing.pruning import l0 as l0mod
from shearing.pruning.l0 import L0Module, open_probability, sample_gates
from shearing.pruning.modules import resolve_modules
from shearing.trainer.build import AdamWDualAscent

SOURCE = DecoderShape(
    vocab_size=50,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=4,
)
TARGET = SOURCE.replace(
    hidden_size=12,
    intermediate_size=10,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=1,
)
ALL = ["layer", "hidden", "head", "kv_group", "intermediate"]


@pytest.mark.parametrize("log_alpha", [-2.0, 0.0, 1.5])
def test_open_probability_matches_monte_carlo_sampling(log_alpha):
    torch.manual_seed(0)
    draws = sample_gates(torch.full((200_000,), log_alpha))
    assert draws.min() >= 0 and draws.max() <= 1
    empirical = (draws > 0).float().mean().item()
    closed_form = 1 / (1 + math.exp(-(log_alpha - (2 / 3) * math.log(0.1 / 1.1))))
    assert open_probability(torch.tensor(log_alpha)).item() == pytest.approx(closed_form, abs=1e-6)
    assert empirical == pytest.approx(closed_form, abs=0.005)


def test_gates_start_open():
    l0 = L0Module(SOURCE, TARGET, ALL, warmup_steps=10)
    for s in l0.expected_sparsity().values():
        assert s.item() < 0.002


def test_deterministic_masks_keep_exactly_the_target_per_row():
    torch.manual_seed(1)
    l0 = L0Module(SOURCE, TARGET, ALL, warmup_steps=10)
    with torch.no_grad():
        for a in l0.log_alpha.values():
            a.normal_()
    m = l0.deterministic_masks()
    assert set(torch.cat([g.flatten() for g in vars(m).values()]).tolist()) == {0.0, 1.0}
    assert m.z_layer.sum() == 3 and m.z_hidden.sum() == 12
    assert (m.z_kv.sum(-1) == 1).all() and (m.z_head.sum(-1) == 2).all()
    assert (m.z_intermediate.sum(-1) == 10).all()
    # the kept units are those with the largest logits
    top = l0.log_alpha["intermediate"][2].topk(10).indices
    assert set(m.z_intermediate[2].nonzero().flatten().tolist()) == set(top.tolist())


def test_target_sparsity_ramps_linearly_over_warmup():
    l0 = L0Module(SOURCE, TARGET, ALL, warmup_steps=100)
    final = {
        "layer": 1 / 4,
        "hidden": 4 / 16,
        "head": 1 - 2 / 3,
        "kv_group": 1 / 2,
        "intermediate": 14 / 24,
    }
    for step, frac in [(0, 0.0), (25, 0.25), (100, 1.0), (500, 1.0)]:
        t = l0.target_sparsity(step)
        for m, v in final.items():
            assert t[m] == pytest.approx(v * frac)


def test_expected_params_all_open_is_the_source_non_embedding_count():
    l0 = L0Module(SOURCE, TARGET, ALL, warmup_steps=10)
    ones = {m: torch.ones(spec.shape) for m, spec in l0.specs.items()}
    assert l0.expected_num_params(ones).item() == SOURCE.num_params(include_embeddings=False)


def test_expected_params_by_hand_for_fractional_gates():
    shape = DecoderShape(
        vocab_size=10,
        hidden_size=4,
        intermediate_size=3,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=2,
    )
    l0 = L0Module(shape, shape.replace(hidden_size=2), ["hidden", "head", "intermediate"], 0)
    scores = {
        "hidden": torch.tensor([1.0, 0.5, 0.5, 0.0]),
        "head": torch.tensor([[[1.0, 0.5]]]),
        "intermediate": torch.tensor([[1.0, 1.0, 0.25]]),
    }
    e_d, e_q, e_kv, e_i = 2.0, 1.5, 1.0, 2.25
    by_hand = e_d * (2 * 2 * (e_q + e_kv) + 3 * e_i) + 2 * e_d + e_d
    assert l0.expected_num_params(scores).item() == pytest.approx(by_hand)


def test_lagrangian_by_hand():
    l0 = L0Module(SOURCE, TARGET, ["layer", "hidden"], warmup_steps=10)
    l0.step = 5  # half way: targets are half of the final ones
    with torch.no_grad():
        l0.log_alpha["layer"].fill_(0.0)
        l0.log_alpha["hidden"].fill_(1.0)
        l0.lambda1["layer"].fill_(0.3)
        l0.lambda2["layer"].fill_(2.0)
        l0.lambda1["hidden"].fill_(-0.5)
        l0.lambda2["hidden"].fill_(1.0)
    shift = (2 / 3) * math.log(0.1 / 1.1)
    s_layer = 1 - 1 / (1 + math.exp(-(0.0 - shift)))
    s_hidden = 1 - 1 / (1 + math.exp(-(1.0 - shift)))
    g_layer, g_hidden = s_layer - 0.125, s_hidden - 0.125
    by_hand = 0.3 * g_layer + 2.0 * g_layer**2 - 0.5 * g_hidden + 1.0 * g_hidden**2
    value, _ = l0.lagrangian()
    assert value.item() == pytest.approx(by_hand, rel=1e-5)


def test_lambda_ascent_moves_against_the_constraint_gap():
    l0 = L0Module(SOURCE, TARGET, ["layer"], warmup_steps=0)  # target sparsity 0.25, s ~ 0
    opt = torch.optim.AdamW(
        [{"params": l0.lambda_parameters(), "lr": 0.1, "weight_decay": 0.0, "maximize": True}]
    )
    l0.lagrangian()[0].backward()
    opt.step()
    # gap = s - t < 0: ascent lowers lambda1 (which then pushes gates toward closing)
    assert l0.lambda1["layer"].item() < 0
    assert l0.lambda2["layer"].item() > 0


def test_plain_lambda_ascent_steps_by_the_gap_and_leaves_adamw_groups_as_they_were():
    """`optimizer.lambda_ascent_lr`: lambda1 += lr * (s - t), lambda2 += lr * (s - t)^2."""
    l0 = L0Module(SOURCE, TARGET, ["layer"], warmup_steps=0)  # target sparsity 1 - 3/4
    with torch.no_grad():
        l0.log_alpha["layer"].fill_(1.0)
        l0.lambda1["layer"].fill_(0.2)
        l0.lambda2["layer"].fill_(0.1)
    reference = L0Module(SOURCE, TARGET, ["layer"], warmup_steps=0)
    reference.load_state_dict(l0.state_dict())
    gates = {"weight_decay": 0.0, "lr": 0.5}
    opt = AdamWDualAscent([
        {"params": l0.gate_parameters(), **gates},
        {"params": l0.lambda_parameters(), "lr": 2.0, "weight_decay": 0.0, "maximize": True,
         "plain_ascent": True},
    ])  # fmt: skip
    stock = torch.optim.AdamW([{"params": reference.gate_parameters(), **gates}])
    for module, optimizer in ((l0, opt), (reference, stock)):
        module.lagrangian()[0].backward()
        optimizer.step()
    shift = (2 / 3) * math.log(0.1 / 1.1)
    gap = (1 - 1 / (1 + math.exp(-(1.0 - shift)))) - 0.25  # expected sparsity - target
    assert l0.lambda1["layer"].item() == pytest.approx(0.2 + 2.0 * gap, rel=1e-6)
    assert l0.lambda2["layer"].item() == pytest.approx(0.1 + 2.0 * gap**2, rel=1e-6)
    assert all(opt.state[p].keys() == {"step"} for p in l0.lambda_parameters())  # no moments
    # the gate logits took the same AdamW step as under torch's own optimizer
    assert torch.equal(l0.log_alpha["layer"], reference.log_alpha["layer"])


def test_multi_head_head_pruning_uses_kv_group_gates():
    mha = SOURCE.replace(num_key_value_heads=6)
    assert resolve_modules(mha, ["head", "layer"]) == ("kv_group", "layer")
    assert resolve_modules(SOURCE, ["head"]) == ("head",)
    with pytest.raises(ValueError, match="pruning_modules entry 'heads' is unknown; valid: layer"):
        resolve_modules(SOURCE, ["heads"])


def test_hard_concrete_constants_are_the_published_ones():
    assert (l0mod.BETA, l0mod.GAMMA, l0mod.ZETA) == (2 / 3, -0.1, 1.1)
