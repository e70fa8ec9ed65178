"""The decoder families the maskable decoder reproduces, as data: one row per `model_type`.

Each field says what a family does differently from Llama, by the Hugging Face config key
or checkpoint layout it comes from. Values a config sets (windows, soft-caps, multipliers,
biases switched by `attention_bias`, per-layer rope and NoPE lists) are read from the config
itself (`shearing.models.config.DecoderShape.from_hf`); a row holds only what the family's
modeling code fixes.

| family      | differs from Llama in                                                      |
|-------------|----------------------------------------------------------------------------|
| mistral     | `sliding_window` on every layer                                            |
| ministral3  | + query scaling by position (`rope_parameters.llama_4_scaling_beta`)       |
| qwen2       | q/k/v biases always (no o_proj bias); per-layer windows (`layer_types`)    |
| qwen3       | q/k RMSNorm per head; per-layer windows                                    |
| gemma2      | weights `1 + w` norms, sandwich norms, `sqrt(d)` embedding scale,          |
|             | `hidden_activation`, `query_pre_attn_scalar`, attention/final soft-caps    |
| gemma3_text | gemma2's, + q/k norms per head, rope per layer type                        |
| phi3        | fused `qkv_proj` / `gate_up_proj`, window on every layer, partial rotary   |
| olmo2       | norms after the blocks only, q/k RMSNorm over all heads together           |
| granite     | embedding / attention / residual multipliers, `logits_scaling`             |
| granite_swa | granite's, + per-layer windows, rope theta per layer (0: NoPE), attention  |
|             | sinks per query head                                                       |
| smollm3     | NoPE layers (`no_rope_layers`), per-layer windows                          |
| gemma4_text | gemma3's norms and scale, plain-weight norms, a value norm, attention scale |
|             | 1, a `layer_scalar` per layer, per-layer head widths (`per_layer_config`),  |
|             | "proportional" rope on full-attention layers; dense configurations only    |
| internlm3   | exported as transformers exports it: `LlamaForCausalLM` of model_type      |
|             | internlm3 (one switch, `bias`, for every projection)                       |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """What one decoder family's modeling code fixes (see the module docstring)."""

    #: The stock `transformers` class a checkpoint of this family names (`architectures`).
    architecture: str
    #: Config key of the FFN activation (Gemma: `hidden_activation`).
    activation_key: str = "hidden_act"
    #: "pre": a norm before each block (Llama); "sandwich": before and after each block
    #: (Gemma 2/3: input, post_attention, pre_feedforward, post_feedforward); "post": after
    #: each block only (OLMo 2: post_attention, post_feedforward).
    norms: str = "pre"
    #: Norm weights are stored as `w` and scale by `1 + w` (Gemma).
    norm_offset: bool = False
    #: Embeddings are multiplied by `sqrt(hidden_size)` (Gemma).
    embed_scale: bool = False
    #: None; "head": RMSNorm over each head's `head_dim` (Qwen3, Gemma 3); "all": RMSNorm
    #: over all query (key) heads together (OLMo 2).
    qk_norm: str | None = None
    #: q/k/v biases: a config key that switches them, or always (True) / never (False).
    qkv_bias: str | bool = "attention_bias"
    #: o_proj bias, likewise.
    o_bias: str | bool = "attention_bias"
    #: gate/up/down biases, likewise.
    mlp_bias: str | bool = "mlp_bias"
    #: Checkpoint keys `qkv_proj` and `gate_up_proj` hold the projections fused (Phi-3).
    fused: bool = False
    #: Granite's scalar multipliers (`embedding_multiplier`, `attention_multiplier` as the
    #: attention scale, `residual_multiplier`, `logits_scaling`).
    multipliers: bool = False
    #: A learnt sink logit per query head (`self_attn.sinks`, granite_swa).
    sinks: bool = False
    #: The window applies to every layer (no `layer_types` in the config).
    window_every_layer: bool = False
    #: The attention scale is `query_pre_attn_scalar ** -0.5` (Gemma).
    query_pre_attn_scalar: bool = False
    #: Queries scaled by `1 + beta * log(1 + floor(position / original_max))` (Ministral 3).
    llama4_query_scale: bool = False
    #: Values RMS-normed per head without a weight; q.k unscaled (Gemma 4).
    v_norm: bool = False
    #: A stored scalar (`layer_scalar`) multiplies each layer's output stream (Gemma 4).
    layer_scalar: bool = False
    #: The config class forces the last layer to full attention (Gemma 4): layers are not
    #: pruned, since the kept last layer could be a sliding one.
    fixed_layers: bool = False
    #: Config options the decoder does not represent: (key, the values it takes, what the
    #: other values mean).
    refuse: tuple[tuple[str, tuple, str], ...] = ()


LLAMA = Family("LlamaForCausalLM")
GEMMA = dict(activation_key="hidden_activation", norms="sandwich", norm_offset=True,
             embed_scale=True, qkv_bias="attention_bias", o_bias="attention_bias",
             mlp_bias=False, query_pre_attn_scalar=True)  # fmt: skip

FAMILIES: dict[str, Family] = {
    "llama": LLAMA,
    "internlm3": LLAMA,
    "mistral": Family(
        "MistralForCausalLM", qkv_bias=False, o_bias=False, mlp_bias=False, window_every_layer=True
    ),  # fmt: skip
    "ministral3": Family(
        "Ministral3ForCausalLM",
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
        window_every_layer=True,
        llama4_query_scale=True,
    ),  # fmt: skip
    "qwen2": Family("Qwen2ForCausalLM", qkv_bias=True, o_bias=False, mlp_bias=False),
    "qwen3": Family("Qwen3ForCausalLM", qk_norm="head", mlp_bias=False),
    "gemma2": Family("Gemma2ForCausalLM", **GEMMA),
    "gemma3_text": Family("Gemma3ForCausalLM", qk_norm="head", **GEMMA),
    "phi3": Family(
        "Phi3ForCausalLM",
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
        fused=True,
        window_every_layer=True,
    ),  # fmt: skip
    "olmo2": Family("Olmo2ForCausalLM", norms="post", qk_norm="all", mlp_bias=False),
    "granite": Family("GraniteForCausalLM", multipliers=True),
    "granite_swa": Family("GraniteSWAForCausalLM", multipliers=True, sinks=True),
    "smollm3": Family("SmolLM3ForCausalLM"),
    "gemma4_text": Family(
        "Gemma4ForCausalLM",
        **{**GEMMA, "norm_offset": False, "query_pre_attn_scalar": False},
        qk_norm="head",
        v_norm=True,
        layer_scalar=True,
        fixed_layers=True,
        refuse=(
            ("hidden_size_per_layer_input", (0, None), "per-layer input embeddings"),
            ("num_kv_shared_layers", (0, None), "key/value states shared between layers"),
            ("enable_moe_block", (False, None), "mixture-of-experts blocks"),
            ("use_double_wide_mlp", (False, None), "double-width FFN layers"),
            ("attention_k_eq_v", (False, None), "values that are the keys"),
            ("use_bidirectional_attention", (None,), "bidirectional attention"),
        ),
    ),  # fmt: skip
}

#: Families of decoders this model cannot represent, with what is missing.
REFUSED: dict[str, str] = {
    **dict.fromkeys(
        (
            "mixtral",
            "qwen2_moe",
            "qwen3_moe",
            "olmoe",
            "granitemoe",
            "granitemoeshared",
            "granitemoe_swa",
            "deepseek_v2",
            "deepseek_v3",
            "mistral4",
            "mistral_large4",
            "qwen3_5_moe",
            "glm4_moe",
            "llama4",
            "dbrx",
            "jamba",
            "solar_open",
        ),
        "a mixture-of-experts model (routed expert FFNs)",
    ),  # fmt: skip
    **dict.fromkeys(
        (
            "qwen3_5",
            "qwen3_next",
            "olmo_hybrid",
            "nemotron_h",
            "granitemoehybrid",
            "mamba",
            "mamba2",
            "falcon_h1",
            "zamba2",
            "recurrent_gemma",
            "rwkv",
        ),
        "a model with linear-attention or state-space layers",
    ),  # fmt: skip
    **dict.fromkeys(
        (
            "gemma3",
            "gemma4",
            "mistral3",
            "qwen2_vl",
            "qwen2_5_vl",
            "qwen3_vl",
            "llava",
            "idefics3",
            "smolvlm",
            "gemma3n",
            "paligemma",
        ),
        "a multimodal model (its text decoder alone, e.g. gemma3_text, can be pruned)",
    ),  # fmt: skip
    **dict.fromkeys(
        ("t5", "mt5", "bart", "mbart", "pegasus", "marian", "whisper", "umt5"),
        "an encoder-decoder model",
    ),
}


def family_of(model_type: str) -> Family:
    """The row for `model_type`.

    Raises:
        ValueError: a model_type the decoder does not reproduce, naming what is missing.
    """
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    why = REFUSED.get(model_type, "not a decoder family this model reproduces")
    raise ValueError(
        f"model_type={model_type!r} is not supported ({why}); supported: {', '.join(FAMILIES)}"
    )
