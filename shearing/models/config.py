"""Typed configuration of a LLaMA-family decoder, with Hugging Face's key names.

`LlamaShape` holds exactly what the model in `shearing.models.llama` can represent.
It is read from and written to a Hugging Face `config.json` dictionary; anything the
model cannot represent (attention or MLP biases, an unknown rope type, another
architecture) is a one-line `ValueError` naming the value and what is supported.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

#: `model_type` values whose checkpoints this model reproduces exactly.
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
#: FFN activations. `silu` is SwiGLU; the others are the activation-sparsity variants:
#: `relu` (ReluLLaMA), `fatrelu` (ProSparse's thresholded ReLU), `drelu` (Bamboo).
SUPPORTED_ACTIVATIONS = ("silu", "relu", "fatrelu", "drelu")
#: Activations a stock `transformers` LlamaForCausalLM can load.
STOCK_ACTIVATIONS = ("silu", "relu")
#: RoPE types (`rope_parameters.rope_type`); `default` means no scaling.
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
#: RoPE base frequency where a config gives none (transformers' `default_theta`).
DEFAULT_ROPE_THETA = 10000.0
#: Keys a Hugging Face config must have to describe a LLaMA decoder.
REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
)


@dataclass
class LlamaShape:
    """Shape and numerics of a LLaMA decoder (Hugging Face `LlamaConfig` names).

    Attributes:
        vocab_size: V, rows of the embedding and the LM head.
        hidden_size: d, the residual stream width.
        intermediate_size: I, FFN units per layer.
        num_hidden_layers: L, decoder layers.
        num_attention_heads: H, query heads per layer.
        num_key_value_heads: K, key/value heads per layer (H must be a multiple of K).
        head_dim: hd, per-head width; kept fixed by pruning, so stored explicitly.
        rms_norm_eps: epsilon inside every RMSNorm.
        rope_parameters: RoPE settings as transformers 5 writes them: `rope_theta` (base
            frequency), `rope_type` in `SUPPORTED_ROPE_TYPES` and that type's keys
            (`factor`, ...). A transformers 4 config's `rope_theta` and `rope_scaling`
            keys are read into it.
        max_position_embeddings: longest sequence the RoPE config was made for.
        tie_word_embeddings: whether the LM head shares the embedding matrix.
        hidden_act: FFN activation, one of `SUPPORTED_ACTIVATIONS`.
        fatrelu_threshold: T of `fatrelu` (x if x >= T else 0); ProSparse uses 0.01.
        initializer_range: std of the normal init for freshly built weights.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_parameters: dict[str, Any] = field(
        default_factory=lambda: {"rope_type": "default", "rope_theta": DEFAULT_ROPE_THETA}
    )
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    fatrelu_threshold: float = 0.01
    initializer_range: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def group_size(self) -> int:
        """G = H / K, query heads per key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def validate(self) -> None:
        """Raise `ValueError` if the shape is not a valid LLaMA decoder."""
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
        ):
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
                f"hidden_act={self.hidden_act!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope_type {self.rope_type!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
            )

    @property
    def rope_type(self) -> str:
        """`rope_parameters.rope_type` (`default`: plain RoPE)."""
        return self.rope_parameters.get("rope_type", "default")

    @property
    def rope_theta(self) -> float:
        """`rope_parameters.rope_theta`, the RoPE base frequency."""
        return float(self.rope_parameters.get("rope_theta", DEFAULT_ROPE_THETA))

    def replace(self, **changes: Any) -> LlamaShape:
        """A copy with some fields changed (e.g. a pruned target shape)."""
        return dataclasses.replace(self, **changes)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count of the dense model of this shape.

        Args:
            include_embeddings: count the embedding and (untied) LM head matrices.
        """
        d, hd = self.hidden_size, self.head_dim
        attn = d * hd * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        mlp = 3 * d * self.intermediate_size
        per_layer = attn + mlp + 2 * d  # two RMSNorm weights
        total = self.num_hidden_layers * per_layer + d  # final norm
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return total

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> LlamaShape:
        """Read a Hugging Face `config.json` dictionary.

        Raises:
            ValueError: the config describes a model this decoder cannot represent.
        """
        cfg = dict(hf_config)
        model_type = cfg.get("model_type", "llama")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type={model_type!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)} (LLaMA architecture)"
            )
        for key in ("attention_bias", "mlp_bias"):
            if cfg.get(key):
                raise ValueError(f"{key}=True is not supported; LLaMA decoders have no biases")
        if model_type == "mistral" and cfg.get("sliding_window") is not None:
            raise ValueError(
                f"sliding_window={cfg['sliding_window']} is not supported; "
                "only full causal attention (sliding_window: null)"
            )
        if cfg.get("pretraining_tp", 1) not in (1, None):
            raise ValueError(f"pretraining_tp={cfg['pretraining_tp']} is not supported; use 1")
        required = REQUIRED_KEYS
        missing = [k for k in required if cfg.get(k) is None]
        if missing:
            raise ValueError(
                f"config has no {missing[0]!r}; a LLaMA config needs {', '.join(required)}"
            )
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "head_dim"}
        kwargs = {k: cfg[k] for k in known if k in cfg and cfg[k] is not None}
        kwargs.setdefault("num_key_value_heads", heads)
        kwargs["rope_parameters"] = rope_parameters(cfg)
        return cls(head_dim=head_dim, extra=cfg, **kwargs)

    def to_hf(self) -> dict[str, Any]:
        """A stock `transformers` `LlamaConfig` dictionary for this shape.

        Keys of the source config that do not describe the shape (token ids, dtype,
        generation settings) are kept; the architecture is always `LlamaForCausalLM`.
        `fatrelu_threshold` is written only for the activations that need the shipped
        modeling file (a stock SiLU or ReLU config holds no key transformers does not know).
        """
        cfg = copy.deepcopy(self.extra)
        for key in ("sliding_window", "auto_map", "_name_or_path", "quantization_config"):
            cfg.pop(key, None)
        for key in TRANSFORMERS4_ROPE_KEYS:  # now inside rope_parameters
            cfg.pop(key, None)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                cfg[f.name] = copy.deepcopy(getattr(self, f.name))
        if self.hidden_act in STOCK_ACTIVATIONS:  # only keys transformers' LlamaConfig knows
            cfg.pop("fatrelu_threshold", None)
        cfg.update(
            model_type="llama",
            architectures=["LlamaForCausalLM"],
            attention_bias=False,
            mlp_bias=False,
            pretraining_tp=1,
        )
        return cfg


def export_problem(shape: LlamaShape) -> str | None:
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
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = re.sub(r"^\w+Error: ", "", lines[-1]) if lines else type(err).__name__
        return f"transformers' {config_class.__name__} refuses it ({reason})"
    return None


#: Where a transformers 4 config.json keeps what transformers 5 keeps in `rope_parameters`.
TRANSFORMERS4_ROPE_KEYS = ("rope_theta", "rope_scaling")


def rope_parameters(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dictionary's RoPE settings in transformers 5's `rope_parameters` form.

    transformers 5 writes `rope_parameters` ({"rope_type": ..., "rope_theta": ...,
    scaling keys}); configs written by transformers 4 (most checkpoints on the hub) have
    `rope_theta` and `rope_scaling` (whose type key may be the older `type`) instead.
    """
    given = cfg.get("rope_parameters")
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
