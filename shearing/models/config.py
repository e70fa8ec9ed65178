"""Typed configuration of a decoder (Llama, Mistral, Qwen, Gemma, Phi-3, OLMo 2, Granite,
SmolLM3, ...), with Hugging Face's key names.

`DecoderShape` holds what the model in `shearing.models.decoder` needs: the dimensions
pruning changes (fields) and the source config, normalised by transformers' own config
class for its `model_type` (`extra`), from which the per-family switches of
`shearing.models.families` and the per-layer settings (sliding windows, rope or NoPE) are
read. It is read from and written to a Hugging Face `config.json` dictionary; anything the
model cannot represent is a one-line `ValueError` naming the value and what is supported.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shearing.models.families import FAMILIES, Family, family_of


class Act(StrEnum):
    """FFN activations, as `hidden_act` spells them. `silu` is SwiGLU (Llama, Qwen, ...),
    `gelu_pytorch_tanh` GeGLU (Gemma); the others are the activation-sparsity variants:
    `relu` (ReluLLaMA), `fatrelu` (ProSparse's thresholded ReLU), `drelu` (Bamboo). A
    member equals its string, so configs and yaml keep plain strings."""

    SILU = "silu"
    GELU_TANH = "gelu_pytorch_tanh"
    GELU = "gelu"
    RELU = "relu"
    FATRELU = "fatrelu"
    DRELU = "drelu"


SUPPORTED_ACTIVATIONS = tuple(a.value for a in Act)
#: Activations a run can switch a model's FFN to (`model.activation`).
ACTIVATION_REPLACEMENTS = tuple(a.value for a in (Act.SILU, Act.RELU, Act.FATRELU, Act.DRELU))
#: Activations stock `transformers` classes load (the others ship modeling_shearing.py).
STOCK_ACTIVATIONS = tuple(a.value for a in (Act.SILU, Act.GELU_TANH, Act.GELU, Act.RELU))
#: Activations that are exactly zero on part of their input (sparse FFN decoding).
RELU_FAMILY = tuple(a.value for a in (Act.RELU, Act.FATRELU, Act.DRELU))
#: RoPE types (`rope_parameters.rope_type`); `default` means no scaling.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "proportional")
#: RoPE base frequency where a config gives none (transformers' `default_theta`).
DEFAULT_ROPE_THETA = 10000.0
#: Keys a Hugging Face config must have to describe a decoder.
REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)
#: Config keys holding one entry per layer: sliced with the layers pruning keeps.
PER_LAYER_KEYS = ("layer_types", "no_rope_layers", "layer_rope_theta")
#: Source config keys an export drops (they describe the source's files, not the model).
DROPPED_KEYS = ("auto_map", "_name_or_path", "quantization_config", "transformers_version")
#: Where a transformers 4 config.json keeps what transformers 5 keeps in `rope_parameters`.
TRANSFORMERS4_ROPE_KEYS = ("rope_theta", "rope_scaling")


@dataclass
class DecoderShape:
    """Shape and numerics of a decoder (Hugging Face config names).

    Attributes:
        model_type: the family (`shearing.models.families.FAMILIES`); an export writes it.
        vocab_size: V, rows of the embedding and the LM head.
        hidden_size: d, the residual stream width.
        intermediate_size: I, FFN units per layer.
        num_hidden_layers: L, decoder layers.
        num_attention_heads: H, query heads per layer.
        num_key_value_heads: K, key/value heads per layer (H must be a multiple of K).
        head_dim: hd, per-head width; kept fixed by pruning, so stored explicitly.
        rms_norm_eps: epsilon inside every RMSNorm.
        max_position_embeddings: longest sequence the RoPE config was made for.
        tie_word_embeddings: whether the LM head shares the embedding matrix.
        hidden_act: FFN activation, one of `SUPPORTED_ACTIVATIONS` (written under the
            family's key: `hidden_activation` for Gemma).
        fatrelu_threshold: T of `fatrelu` (x if x >= T else 0); ProSparse uses 0.01.
        initializer_range: std of the normal init for freshly built weights.
        extra: the source's whole config as transformers' config class normalises it
            (rope in `rope_parameters`, per-layer lists filled in), sliced with the layers.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    model_type: str = "llama"
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    hidden_act: str = Act.SILU.value
    fatrelu_threshold: float = 0.01
    initializer_range: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # --- the family's switches, read from its row and the config --------------------------

    @property
    def family(self) -> Family:
        return FAMILIES[self.model_type]

    @property
    def group_size(self) -> int:
        """G = H / K, query heads per key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def _switch(self, rule: str | bool) -> bool:
        return bool(self.extra.get(rule, False)) if isinstance(rule, str) else rule

    @property
    def qkv_bias(self) -> bool:
        return self._switch(self.family.qkv_bias)

    @property
    def o_bias(self) -> bool:
        return self._switch(self.family.o_bias)

    @property
    def mlp_bias(self) -> bool:
        return self._switch(self.family.mlp_bias)

    def setting(self, key: str, default: Any = None) -> Any:
        """A config value the shape does not hold as a field (soft-caps, multipliers, ...)."""
        value = self.extra.get(key)
        return default if value is None else value

    def layer_head_dim(self, layer: int) -> int:
        """The head width of `layer`: `head_dim`, or a per-layer one (Gemma 4's full-attention
        layers, `per_layer_config`)."""
        per_layer = (self.extra.get("per_layer_config") or {}).get(str(layer)) or {}
        return per_layer.get("head_dim") or self.head_dim

    def attention_scale(self, layer: int) -> float:
        """The factor on q.k: `head_dim ** -0.5`, Gemma's `query_pre_attn_scalar ** -0.5`,
        Granite's `attention_multiplier`, 1 for Gemma 4 (its q/k norms set the scale)."""
        if self.family.v_norm:
            return 1.0
        if self.family.multipliers:
            return float(self.setting("attention_multiplier", 1.0))
        if self.family.query_pre_attn_scalar:
            return float(self.setting("query_pre_attn_scalar", self.head_dim)) ** -0.5
        return self.layer_head_dim(layer) ** -0.5

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of `layer` (keys at most this many positions back, the
        current one included), or None for full causal attention."""
        window = self.setting("sliding_window")
        if window is None:
            return None
        types = self.extra.get("layer_types")
        if types is None:
            return window if self.family.window_every_layer else None
        return window if types[layer] == "sliding_attention" else None

    def layer_rope(self, layer: int) -> dict[str, Any] | None:
        """The rope parameters of `layer` (`rope_type`, `rope_theta`, ...), None for a NoPE
        layer (SmolLM3's `no_rope_layers`, granite_swa's `layer_rope_theta` of 0)."""
        no_rope = self.extra.get("no_rope_layers")
        if no_rope is not None and not no_rope[layer]:
            return None
        rope = rope_parameters(self.extra)
        if "rope_type" not in rope:  # one set per layer type (Gemma 3)
            rope = rope[self.extra["layer_types"][layer]]
        thetas = self.extra.get("layer_rope_theta")
        if thetas is not None:
            if not thetas[layer]:
                return None
            rope = {**rope, "rope_theta": float(thetas[layer])}
        return rope

    # --- checks, copies, counts ----------------------------------------------------------

    def validate(self) -> None:
        """Raise `ValueError` if the shape is not a decoder this model represents."""
        family_of(self.model_type)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"{self.family.activation_key}={self.hidden_act!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        for layer in range(self.num_hidden_layers):
            rope = self.layer_rope(layer) if self.extra else None
            if rope is not None and rope.get("rope_type", "default") not in SUPPORTED_ROPE_TYPES:
                raise ValueError(
                    f"rope_type {rope['rope_type']!r} is not supported; "
                    f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
                )

    def replace(self, **changes: Any) -> DecoderShape:
        """A copy with some fields changed (e.g. a pruned target shape). A change of
        `num_hidden_layers` keeps the first layers' per-layer settings; `keep_layers` says
        which layers a sliced model keeps."""
        if (
            "num_hidden_layers" in changes
            and changes["num_hidden_layers"] != self.num_hidden_layers
        ):
            return self.keep_layers(range(changes["num_hidden_layers"])).replace(**changes)
        return dataclasses.replace(self, **changes)

    def keep_layers(self, layers) -> DecoderShape:
        """This shape with only `layers` (source indices, in order): every per-layer config
        list sliced to them."""
        layers = list(layers)
        extra = copy.deepcopy(self.extra)
        for key in PER_LAYER_KEYS:
            if extra.get(key) is not None:
                extra[key] = [extra[key][i] for i in layers]
        if extra.get("per_layer_config"):  # keyed by layer index (Gemma 4)
            old = extra["per_layer_config"]
            extra["per_layer_config"] = {
                str(new): old[str(i)] for new, i in enumerate(layers) if str(i) in old
            }
        return dataclasses.replace(self, num_hidden_layers=len(layers), extra=extra)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count of the dense model of this shape.

        Args:
            include_embeddings: count the embedding and (untied) LM head matrices.
        """
        L = self.num_hidden_layers
        total = int(
            param_count(self, self.hidden_size, [self.num_attention_heads] * L,
                        [self.num_key_value_heads] * L, [self.intermediate_size] * L, [1] * L)
        )  # fmt: skip
        if include_embeddings:
            total += self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return total

    # --- Hugging Face config.json --------------------------------------------------------

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> DecoderShape:
        """Read a Hugging Face `config.json` dictionary (transformers 4 or 5 form).

        Raises:
            ValueError: the config describes a model this decoder cannot represent.
        """
        cfg = dict(hf_config)
        model_type = cfg.get("model_type") or "llama"
        family = family_of(model_type)
        if cfg.get("pretraining_tp", 1) not in (1, None):
            raise ValueError(f"pretraining_tp={cfg['pretraining_tp']} is not supported; use 1")
        missing = [k for k in REQUIRED_KEYS if cfg.get(k) is None]
        if missing:
            raise ValueError(
                f"config has no {missing[0]!r}; a decoder config needs {', '.join(REQUIRED_KEYS)}"
            )
        if "type" in (cfg.get("rope_scaling") or {}) and "rope_type" not in cfg["rope_scaling"]:
            cfg["rope_scaling"] = {**cfg["rope_scaling"], "rope_type": cfg["rope_scaling"]["type"]}
        extra = normalised(model_type, cfg)
        extra["rope_parameters"] = rope_parameters(extra)
        for key, allowed, what in family.refuse:
            if extra.get(key) not in allowed:
                raise ValueError(
                    f"{key}={extra[key]!r} is not supported ({what}); {model_type} is supported "
                    f"with {key} {' or '.join(map(str, allowed))}"
                )
        for layer, per_layer in (extra.get("per_layer_config") or {}).items():
            kv = per_layer.get("num_key_value_heads")
            if kv is not None and kv != extra.get("num_key_value_heads"):
                raise ValueError(
                    f"layer {layer} has num_key_value_heads={kv}, the others "
                    f"{extra.get('num_key_value_heads')}; per-layer key/value head counts are "
                    "not supported"
                )
        heads = extra["num_attention_heads"]
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "head_dim", "hidden_act"}
        kwargs = {k: extra[k] for k in known if extra.get(k) is not None}
        kwargs["model_type"] = model_type
        kwargs["num_key_value_heads"] = extra.get("num_key_value_heads") or heads
        act = extra.get(family.activation_key) or extra.get("hidden_act") or Act.SILU.value
        return cls(
            head_dim=extra.get("head_dim") or extra["hidden_size"] // heads,
            hidden_act=act,
            extra=extra,
            **kwargs,
        )

    def to_hf(self) -> dict[str, Any]:
        """A stock `transformers` config dictionary of the source's family for this shape.

        Keys of the source config that do not describe the shape (token ids, dtype, rope,
        windows, soft-caps) are kept, per-layer lists as sliced; the architecture is the
        family's stock class. `fatrelu_threshold` is written only for the activations that
        need the shipped modeling file.
        """
        cfg = copy.deepcopy(self.extra)
        for key in (*DROPPED_KEYS, *TRANSFORMERS4_ROPE_KEYS):
            cfg.pop(key, None)
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "hidden_act"):
                cfg[f.name] = copy.deepcopy(getattr(self, f.name))
        cfg[self.family.activation_key] = self.hidden_act
        if self.family.activation_key != "hidden_act":
            cfg.pop("hidden_act", None)
        if self.hidden_act in STOCK_ACTIVATIONS:  # only keys transformers' configs know
            cfg.pop("fatrelu_threshold", None)
        for key in PER_LAYER_KEYS:
            if cfg.get(key) is not None and len(cfg[key]) != self.num_hidden_layers:
                raise ValueError(f"{key} has {len(cfg[key])} entries for {self.num_hidden_layers}")
        cfg["architectures"] = [self.family.architecture]
        return cfg


def normalised(model_type: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` as transformers' own config class for `model_type` completes it (defaults,
    `layer_types`, `rope_parameters`), as a plain dictionary.

    Raises:
        ValueError: the config class refuses it (one line).
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import CONFIG_MAPPING

    args = {k: v for k, v in cfg.items() if k != "model_type"}
    try:
        config = CONFIG_MAPPING[model_type](**args)
    except (StrictDataclassError, ValueError, TypeError) as err:
        raise ValueError(f"{model_type} config: {_first_reason(err)}") from None
    out = config.to_dict()
    out["model_type"] = model_type
    for key in ("fatrelu_threshold",):
        if key in cfg:
            out[key] = cfg[key]
    return out


def _first_reason(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return re.sub(r"^\w+Error: ", "", lines[-1]) if lines else type(err).__name__


def rope_parameters(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dictionary's RoPE settings in transformers 5's `rope_parameters` form.

    transformers 5 writes `rope_parameters` ({"rope_type": ..., "rope_theta": ...,
    scaling keys}, or one such set per layer type); configs written by transformers 4 (most
    checkpoints on the hub) have `rope_theta` and `rope_scaling` (whose type key may be the
    older `type`) instead.
    """
    given = cfg.get("rope_parameters")
    if given and "rope_type" not in given and "rope_theta" not in given:
        return {kind: rope_parameters({"rope_parameters": p}) for kind, p in given.items()}
    if given:
        rope = copy.deepcopy(dict(given))
    else:
        rope = copy.deepcopy(dict(cfg.get("rope_scaling") or {}))
        if cfg.get("rope_theta") is not None:
            rope["rope_theta"] = cfg["rope_theta"]
    if "type" in rope:
        rope.setdefault("rope_type", rope.pop("type"))
    rope.setdefault("rope_type", "default")
    rope.setdefault("rope_theta", DEFAULT_ROPE_THETA)
    rope["rope_theta"] = float(rope["rope_theta"])
    return rope


def param_count(shape: DecoderShape, d, q, kv, ffn, layers):
    """Parameters of the decoder layers and final norm (no embeddings) for widths that may
    be expected values under gates: hidden `d`, and per layer the query heads `q`, key/value
    heads `kv`, FFN units `ffn` and the probability `layers` that the layer is kept (each a
    sequence or tensor of length L). The one formula for `num_params` and for the L0
    module's expected size."""
    f = shape.family
    norms = {"pre": 2, "sandwich": 4, "post": 2}[f.norms] * d
    total = 0
    for index, (q_l, kv_l, i_l, p_l) in enumerate(zip(q, kv, ffn, layers, strict=True)):
        hd = shape.layer_head_dim(index)
        layer = d * (2 * hd * (q_l + kv_l) + 3 * i_l) + norms
        if shape.qkv_bias:
            layer = layer + hd * (q_l + 2 * kv_l)
        if shape.o_bias:
            layer = layer + d
        if shape.mlp_bias:
            layer = layer + 2 * i_l + d
        if f.qk_norm == "head":
            layer = layer + 2 * hd
        elif f.qk_norm == "all":
            layer = layer + hd * (q_l + kv_l)
        if f.sinks:
            layer = layer + q_l
        total = total + p_l * layer
    return total + d  # final norm


def export_problem(shape: DecoderShape) -> str | None:
    """Why the stock `transformers` config class of `shape.to_hf()` refuses it (one line,
    naming the class), or None.

    transformers 5's config classes validate their dimensions (LlamaConfig: `hidden_size`
    a multiple of `num_attention_heads`, even with an explicit `head_dim`), so a pruned
    shape this model runs may still have no stock config. Costs well under a millisecond.
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import CONFIG_MAPPING

    cfg = shape.to_hf()
    config_class = CONFIG_MAPPING[cfg.pop("model_type")]
    try:
        config_class(**cfg)
    except (StrictDataclassError, ValueError) as err:  # the config class's own checks
        return f"transformers' {config_class.__name__} refuses it ({_first_reason(err)})"
    return None
