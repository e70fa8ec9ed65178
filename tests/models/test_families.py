"""Every family of `shearing.models.families` against transformers' own class, on a tiny
random config built by transformers' own config class: the state dict loads strictly, the
full logits agree, and under random binary masks the masked model equals the model sliced
to the kept units, which exports as a stock checkpoint of the family that transformers
loads strictly with the same logits.

Sequences are 32 tokens and every window 8, so each sliding window is exercised. Weights are
perturbed from transformers' initialisation (norms, biases and sinks off their identity
values) so that no parameter is tested at a value that hides it. Tolerance: 2e-5 on logits
of magnitude ~1, fp32 sums over at most 48 terms per projection and the order of
operations differing from transformers' (about 1e-6 seen; an error in any switch is
larger than 1e-3).
"""

from __future__ import annotations

import pytest
import torch
import transformers

from shearing.models.config import DecoderShape
from shearing.models.families import FAMILIES
from shearing.models.gguf_io import GGUF_ARCHS
from shearing.models.hf_io import load_model, model_from_state_dict, save_pretrained
from shearing.pruning.finalize import slice_model
from tests.helpers import random_l0

ATOL = 2e-5
SEQ, WINDOW = 32, 8
BASE = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
    rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip
ROPE = {"rope_type": "default", "rope_theta": 10000.0}

#: model_type -> the tiny config's keys beyond BASE: each family's own switches set.
CONFIGS = {
    "llama": dict(attention_bias=True, mlp_bias=True),
    "internlm3": dict(attention_bias=True, mlp_bias=True),
    "mistral": dict(sliding_window=WINDOW),
    "ministral3": dict(
        sliding_window=WINDOW,
        rope_parameters={
            **ROPE,
            "llama_4_scaling_beta": 0.5,
            "original_max_position_embeddings": WINDOW,
        },
    ),  # fmt: skip
    "qwen2": dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen3": dict(
        use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2, attention_bias=True
    ),  # fmt: skip
    "gemma2": dict(
        sliding_window=WINDOW,
        query_pre_attn_scalar=16,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        tie_word_embeddings=True,
    ),  # fmt: skip
    "gemma3_text": dict(
        sliding_window=WINDOW,
        query_pre_attn_scalar=8,
        tie_word_embeddings=True,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "sliding_attention": ROPE,
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
        },
    ),  # fmt: skip
    "phi3": dict(sliding_window=WINDOW, rope_parameters={**ROPE, "partial_rotary_factor": 0.5}),
    "olmo2": dict(),
    "granite": dict(
        embedding_multiplier=3.0,
        attention_multiplier=0.2,
        residual_multiplier=0.5,
        logits_scaling=4.0,
        attention_bias=True,
        mlp_bias=True,
    ),  # fmt: skip
    "granite_swa": dict(
        embedding_multiplier=3.0,
        attention_multiplier=0.2,
        residual_multiplier=0.5,
        logits_scaling=4.0,
        sliding_window=WINDOW,
        tie_word_embeddings=False,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        layer_rope_theta=[10000.0, 0, 500000.0],
    ),  # fmt: skip
    "smollm3": dict(
        use_sliding_window=True,
        sliding_window=WINDOW,
        no_rope_layers=[1, 0, 1],
        tie_word_embeddings=True,
    ),  # fmt: skip
    # a dense configuration: wider heads on the full-attention layers, proportional rope there
    "gemma4_text": dict(
        sliding_window=WINDOW,
        global_head_dim=16,
        hidden_size_per_layer_input=0,
        layer_types=["sliding_attention", "full_attention", "full_attention"],
        final_logit_softcapping=3.0,
        tie_word_embeddings=True,
    ),  # fmt: skip
}
#: What pruning changes in the slicing tests (every module: layers, hidden, kv, heads, FFN).
TARGET = dict(num_hidden_layers=2, hidden_size=24, num_key_value_heads=1,
              num_attention_heads=2, intermediate_size=32)  # fmt: skip


def target_of(model_type: str) -> dict:
    """TARGET, with all layers kept where the family keeps them (Gemma 4)."""
    if FAMILIES[model_type].fixed_layers:
        return {**TARGET, "num_hidden_layers": BASE["num_hidden_layers"]}
    return TARGET


def test_every_family_has_a_config_here():
    assert set(CONFIGS) == set(FAMILIES)


def reference(model_type: str, seed: int = 0, **overrides):
    """transformers' model of the family, weights perturbed off their initial values."""
    config = transformers.AutoConfig.for_model(
        model_type, **{**BASE, **CONFIGS[model_type], **overrides}
    )
    torch.manual_seed(seed)
    ref = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    stored = set(ref.state_dict())
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in ref.named_buffers():  # stored buffers too (Gemma 4's layer_scalar)
            if name in stored and b.is_floating_point():
                b.add_(torch.randn_like(b) * 0.1)
    return ref


def ours_of(ref) -> DecoderShape:
    shape = DecoderShape.from_hf(ref.config.to_dict())
    return model_from_state_dict(shape, dict(ref.state_dict())).eval()


def ids(seed: int = 1):
    return torch.randint(0, 97, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def logits(model, x, **kwargs):
    with torch.no_grad():
        out = model(x, **kwargs)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_logits_equal_transformers(model_type):
    ref = reference(model_type)
    ours = ours_of(ref)
    assert ours.shape.model_type == model_type
    assert sorted(ours.state_dict()) == sorted(
        transformers_keys_as_ours(ref, ours.shape)
    )  # every parameter of transformers' model, under our (unfused) names
    x = ids()
    torch.testing.assert_close(logits(ours, x), logits(ref, x), atol=ATOL, rtol=0)
    assert ours.num_params() == ref.num_parameters()
    assert ours.shape.num_params() == ref.num_parameters()


def transformers_keys_as_ours(ref, shape) -> list[str]:
    from shearing.models.hf_io import unfused

    return list(unfused(shape, dict(ref.state_dict())))


@pytest.mark.parametrize("model_type", [m for m in CONFIGS if CONFIGS[m].get("sliding_window")])
def test_the_window_matters(model_type):
    """The same weights with a window longer than the sequence give other logits past the
    window: the test above would catch a window left out."""
    ref = reference(model_type)
    ours = ours_of(ref)
    config = dict(ref.config.to_dict(), sliding_window=10 * SEQ)
    wide = model_from_state_dict(DecoderShape.from_hf(config), dict(ref.state_dict())).eval()
    x = ids()
    near = (logits(ours, x) - logits(wide, x)).abs()
    assert near[:, :WINDOW].max() < ATOL  # within the window: the same
    assert near[:, WINDOW + 1 :].max() > 1e-3


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_masked_equals_sliced_and_the_export_loads_in_transformers(model_type, tmp_path):
    ours = ours_of(reference(model_type))
    masks = random_l0(ours, target_of(model_type), seed=3).deterministic_masks()
    small = slice_model(ours, masks)
    for key, value in target_of(model_type).items():
        assert getattr(small.shape, key) == value
    x = ids(seed=2)
    masked = logits(ours, x, masks=masks)
    torch.testing.assert_close(logits(small, x), masked, atol=ATOL, rtol=0)
    save_pretrained(small, tmp_path / "out")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info
    assert type(hf).__name__ == FAMILIES[model_type].architecture
    assert hf.config.model_type == model_type
    torch.testing.assert_close(logits(hf.eval(), x), masked, atol=ATOL, rtol=0)
    again = load_model(tmp_path / "out")
    torch.testing.assert_close(logits(again, x), masked, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "model_type,why",
    [
        ("mixtral", "a mixture-of-experts model"),
        ("qwen3_moe", "a mixture-of-experts model"),
        ("mistral4", "a mixture-of-experts model"),
        ("solar_open", "a mixture-of-experts model"),
        ("qwen3_5", "a model with linear-attention or state-space layers"),
        ("olmo_hybrid", "a model with linear-attention or state-space layers"),
        ("nemotron_h", "a model with linear-attention or state-space layers"),
        ("gemma3", "a multimodal model"),
        ("gemma4", "a multimodal model"),
        ("t5", "an encoder-decoder model"),
        ("bert", "not a decoder family this model reproduces"),
    ],
)
def test_other_architectures_are_one_line_naming_the_type_and_the_supported(model_type, why):
    with pytest.raises(ValueError) as err:
        DecoderShape.from_hf({**BASE, "model_type": model_type})
    message = str(err.value)
    assert message.startswith(f"model_type={model_type!r} is not supported ({why}")
    assert message.endswith("supported: " + ", ".join(FAMILIES)) and "\n" not in message


@pytest.mark.parametrize(
    "option,value,what",
    [
        ("hidden_size_per_layer_input", 16, "per-layer input embeddings"),
        ("num_kv_shared_layers", 1, "key/value states shared between layers"),
        ("attention_k_eq_v", True, "values that are the keys"),
    ],
)
def test_gemma4_options_the_decoder_lacks_are_one_line(option, value, what):
    config = {**BASE, **CONFIGS["gemma4_text"], "model_type": "gemma4_text", option: value}
    with pytest.raises(ValueError) as err:
        DecoderShape.from_hf(config)
    assert str(err.value).startswith(f"{option}={value!r} is not supported ({what})")


def test_a_checkpoint_with_a_key_the_family_lacks_is_refused_naming_it():
    ref = reference("mistral")  # no biases anywhere
    state = dict(ref.state_dict())
    state["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(BASE["hidden_size"])
    shape = DecoderShape.from_hf(ref.config.to_dict())
    with pytest.raises(ValueError, match="checkpoint key 'model.layers.0.self_attn.o_proj.bias'"):
        model_from_state_dict(shape, state)


@pytest.mark.parametrize("model_type", [m for m in CONFIGS if m not in GGUF_ARCHS])
def test_gguf_export_of_another_family_is_one_line(model_type, tmp_path):
    from shearing.models.gguf_io import GGUFExportError, write_gguf

    save_pretrained(ours_of(reference(model_type)), tmp_path / "hf")
    with pytest.raises(GGUFExportError, match=f"is a {model_type} model; GGUF export writes"):
        write_gguf(tmp_path / "hf", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_gemma4_layers_are_not_pruned_one_line():
    from shearing.config import ConfigError, L0Config
    from shearing.run import target_shape

    shape = ours_of(reference("gemma4_text")).shape
    l0 = L0Config(target_model={"num_hidden_layers": 2, "hidden_size": 24})
    with pytest.raises(ConfigError) as err:
        target_shape(shape, l0)
    assert "gemma4_text keeps all 3 layers" in str(err.value) and "\n" not in str(err.value)
    target = target_shape(shape, L0Config(target_model={"hidden_size": 24}))
    assert (target.num_hidden_layers, target.hidden_size) == (3, 24)


def test_the_shipped_modeling_file_serves_every_familys_class():
    from shearing.export import modeling_shearing

    classes = {f.architecture for f in FAMILIES.values()}
    assert set(modeling_shearing.ARCHITECTURES) == classes
    for name in classes:
        assert issubclass(
            getattr(modeling_shearing, f"Shearing{name}"), getattr(transformers, name)
        )
