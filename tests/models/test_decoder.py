"""The maskable LLaMA against transformers' LlamaForCausalLM, densely and under masks."""

import pytest
import torch
import transformers
from torch import nn

from shearing.models.decoder import KVCache, Masks, RMSNorm
from shearing.models.hf_io import load_model
from tests.helpers import tiny_hf_config, tiny_pair

ATOL = 1e-4


def logits_of(model, ids, **kwargs):
    with torch.no_grad():
        out = model(ids, **kwargs)
    return out.logits if hasattr(out, "logits") else out


def assert_max_abs_diff(a, b, atol=ATOL):
    assert (a - b).abs().max().item() < atol


def random_ids(batch=2, seq=24, vocab=97, seed=1):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_attention_heads=4, num_key_value_heads=4),  # multi-head, untied
        dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),  # GQA, tied
        dict(num_key_value_heads=1, rope_parameters={**LLAMA3_ROPE, "rope_theta": 5e5}),
        dict(
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
            rms_norm_eps=1e-5,
        ),  # fmt: skip
        dict(head_dim=16),  # head_dim != hidden / heads
    ],
    ids=["mha", "gqa-tied", "llama3-rope", "linear-rope", "wide-heads"],
)
def test_logits_equal_transformers(overrides):
    ref, ours = tiny_pair(**overrides)
    ids = random_ids(seq=40)
    assert_max_abs_diff(logits_of(ours, ids), logits_of(ref, ids))


def test_state_dict_keys_equal_transformers():
    ref, ours = tiny_pair(tie_word_embeddings=True)
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    assert ours.lm_head.weight is ours.model.embed_tokens.weight


def test_real_smollm2_logits_equal_transformers(smollm2_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    ours = load_model(smollm2_dir)
    sentence = (
        "The Eiffel Tower was completed in 1889 and is now one of the most visited monuments."
    )
    ids = tok(sentence, return_tensors="pt").input_ids
    assert_max_abs_diff(logits_of(ours, ids), logits_of(ref.eval(), ids))


def full_masks(shape):
    L, K, G = shape.num_hidden_layers, shape.num_key_value_heads, shape.group_size
    return Masks(
        z_layer=torch.ones(L),
        z_hidden=torch.ones(shape.hidden_size),
        z_kv=torch.ones(L, K),
        z_head=torch.ones(L, K, G),
        z_intermediate=torch.ones(L, shape.intermediate_size),
    )


def test_all_ones_masks_give_exactly_the_dense_output():
    _, ours = tiny_pair()
    ids = random_ids()
    assert torch.equal(logits_of(ours, ids, masks=full_masks(ours.shape)), logits_of(ours, ids))


def test_zero_head_equals_zeroing_its_o_proj_columns():
    ref, ours = tiny_pair()  # H=4, K=2, G=2
    layer, kv, g = 1, 1, 0
    masks = full_masks(ours.shape)
    masks.z_head[layer, kv, g] = 0.0
    hd, G = ours.shape.head_dim, ours.shape.group_size
    head = kv * G + g
    with torch.no_grad():
        ref.model.layers[layer].self_attn.o_proj.weight[:, head * hd : (head + 1) * hd] = 0.0
    ids = random_ids()
    assert_max_abs_diff(logits_of(ours, ids, masks=masks), logits_of(ref, ids))


def test_zero_kv_group_equals_zeroing_all_its_query_heads():
    ref, ours = tiny_pair()
    layer, kv = 2, 0
    masks = Masks(z_kv=torch.ones(3, 2))
    masks.z_kv[layer, kv] = 0.0
    hd, G = ours.shape.head_dim, ours.shape.group_size
    with torch.no_grad():
        ref.model.layers[layer].self_attn.o_proj.weight[:, kv * G * hd : (kv + 1) * G * hd] = 0.0
    ids = random_ids()
    assert_max_abs_diff(logits_of(ours, ids, masks=masks), logits_of(ref, ids))


def test_zero_intermediate_unit_equals_zeroing_its_down_proj_column():
    ref, ours = tiny_pair()
    masks = Masks(z_intermediate=torch.ones(3, 48))
    masks.z_intermediate[0, [3, 17]] = 0.0
    with torch.no_grad():
        ref.model.layers[0].mlp.down_proj.weight[:, [3, 17]] = 0.0
    ids = random_ids()
    assert_max_abs_diff(logits_of(ours, ids, masks=masks), logits_of(ref, ids))


def test_zero_layer_equals_skipping_it():
    ref, ours = tiny_pair()
    masks = Masks(z_layer=torch.tensor([1.0, 0.0, 1.0]))
    ref.model.layers = nn.ModuleList([ref.model.layers[0], ref.model.layers[2]])
    ref.config.num_hidden_layers = 2
    ids = random_ids()
    assert_max_abs_diff(logits_of(ours, ids, masks=masks), logits_of(ref, ids, use_cache=False))


def test_binary_hidden_mask_equals_a_transformers_model_without_those_dimensions():
    ref, ours = tiny_pair(num_attention_heads=4, num_key_value_heads=2)
    # 20 of 32 dimensions (transformers 5's LlamaConfig needs a multiple of the 4 heads)
    keep = torch.tensor([i for i in range(32) if i % 8 not in (1, 3, 6)])
    masks = Masks(z_hidden=torch.zeros(32).index_fill_(0, keep, 1.0))
    small_cfg = tiny_hf_config(hidden_size=len(keep), head_dim=8)
    small = transformers.LlamaForCausalLM(small_cfg).eval()
    sliced = {}
    for key, w in ref.state_dict().items():
        if key.endswith(("embed_tokens.weight", "lm_head.weight", "proj.weight")) and (
            "o_proj" not in key and "down_proj" not in key
        ):
            w = w[:, keep]  # input side is hidden
        elif key.endswith(("o_proj.weight", "down_proj.weight")):
            w = w[keep, :]  # output side is hidden
        elif key.endswith("norm.weight"):
            w = w[keep]
        sliced[key] = w
    small.load_state_dict(sliced, strict=True)
    ids = random_ids()
    assert_max_abs_diff(logits_of(ours, ids, masks=masks), logits_of(small, ids))


def test_masked_rmsnorm_normalises_over_kept_dimensions():
    torch.manual_seed(0)
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0, 3.0]))
    x = torch.randn(2, 3, 6)
    z = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.5])
    n_kept = 4  # entries with z > 0
    rms = torch.sqrt((x**2).sum(-1, keepdim=True) / n_kept + 1e-5)
    expected = x / rms * norm.weight * z
    torch.testing.assert_close(norm(x, z), expected, rtol=1e-6, atol=1e-6)


def test_masks_with_a_wrong_shape_are_rejected():
    _, ours = tiny_pair()
    with pytest.raises(
        ValueError, match=r"z_head has shape \(3, 2\); this model needs \(3, 2, 2\)"
    ):
        Masks(z_head=torch.ones(3, 2)).validate(ours.shape)


def test_incremental_decoding_with_cache_equals_full_forward():
    _, ours = tiny_pair()
    ids = random_ids(batch=1, seq=12)
    full = logits_of(ours, ids)
    cache = KVCache(ours.shape.num_hidden_layers)
    parts = [logits_of(ours, ids[:, :5], cache=cache)]  # prefill
    parts.append(logits_of(ours, ids[:, 5:8], cache=cache))  # a chunk after the cache
    parts += [logits_of(ours, ids[:, i : i + 1], cache=cache) for i in range(8, 12)]
    assert_max_abs_diff(torch.cat(parts, dim=1), full, atol=1e-5)
