"""Slice a masked model into the dense smaller model its binary masks describe.

Under binary deterministic masks (`L0Module.deterministic_masks`) the masked model and
the sliced model compute the same function: kept units are copied, pruned ones dropped,
no gate value is folded into any weight (the original code's soft-gate folding and
double-applied hidden gate on the LM head are the mismatches this avoids).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shearing.models.decoder import MaskableDecoder, Masks
from shearing.models.hf_io import model_from_state_dict


def _kept(gate: Tensor | None, n: int) -> Tensor:
    if gate is None:
        return torch.arange(n)
    return (gate > 0).nonzero().flatten().cpu()


def kept_units(model: MaskableDecoder, masks: Masks) -> dict:
    """Indices of everything the binary `masks` keep.

    Returns:
        dict with `layers` [L_t], `hidden` [d_t], and per kept layer (in order)
        `kv_groups` [K_t], `heads` [K_t, G_t] (query head index within its group) and
        `intermediate` [I_t].

    Raises:
        ValueError: the masks keep a different number of units in different rows, so
            no single dense config describes the result.
    """
    s = model.shape
    L, K, G = s.num_hidden_layers, s.num_key_value_heads, s.group_size
    layers = _kept(masks.z_layer, L)
    per_layer = []
    for layer in layers.tolist():
        kv = _kept(_row(masks.z_kv, layer), K)
        heads = [_kept(_row(masks.z_head, layer, k), G) for k in kv.tolist()]
        if len({len(h) for h in heads}) != 1:
            raise ValueError(f"layer {layer} keeps different head counts in different groups")
        ffn = _kept(_row(masks.z_intermediate, layer), s.intermediate_size)
        per_layer.append({"kv_groups": kv, "heads": torch.stack(heads), "intermediate": ffn})
    for key in ("kv_groups", "heads", "intermediate"):
        if len({tuple(p[key].shape) for p in per_layer}) > 1:
            raise ValueError(f"layers keep different numbers of {key}; masks must be per-row top-k")
    return {
        "layers": layers,
        "hidden": _kept(masks.z_hidden, s.hidden_size),
        "per_layer": per_layer,
    }


def _row(gate: Tensor | None, *index: int) -> Tensor | None:
    return None if gate is None else gate[index]


#: How each per-layer parameter is sliced, by key suffix: the index set of each of its
#: dimensions ("q": query head rows, "kv": key/value head rows, "heads": query heads,
#: "ffn": FFN units, "d": hidden dimensions, None: kept whole). A key not listed is an error.
LAYER_SLICES = {
    "self_attn.q_proj.weight": ("q", "d"),
    "self_attn.k_proj.weight": ("kv", "d"),
    "self_attn.v_proj.weight": ("kv", "d"),
    "self_attn.o_proj.weight": ("d", "q"),
    "self_attn.q_proj.bias": ("q",),
    "self_attn.k_proj.bias": ("kv",),
    "self_attn.v_proj.bias": ("kv",),
    "self_attn.o_proj.bias": ("d",),
    "self_attn.sinks": ("heads",),
    "mlp.gate_proj.weight": ("ffn", "d"),
    "mlp.up_proj.weight": ("ffn", "d"),
    "mlp.down_proj.weight": ("d", "ffn"),
    "mlp.gate_proj.bias": ("ffn",),
    "mlp.up_proj.bias": ("ffn",),
    "mlp.down_proj.bias": ("d",),
    "input_layernorm.weight": ("d",),
    "post_attention_layernorm.weight": ("d",),
    "pre_feedforward_layernorm.weight": ("d",),
    "post_feedforward_layernorm.weight": ("d",),
    "layer_scalar": (None,),
}
#: q/k norms: over one head's width (kept whole) or over all heads (sliced with them).
QK_NORM_SLICES = {"head": {"q": (None,), "kv": (None,)}, "all": {"q": ("q",), "kv": ("kv",)}}


@torch.no_grad()
def slice_model(model: MaskableDecoder, masks: Masks) -> MaskableDecoder:
    """The dense model with only the units kept by binary `masks`.

    Every parameter on a pruned axis goes with its units (`LAYER_SLICES`: biases with their
    rows, norms and o/down biases with the hidden dimensions, sinks with their heads); the
    per-layer config lists (windows, NoPE) with the layers. Where the family scales the
    embeddings by `sqrt(hidden_size)` (Gemma), the sliced model's own scale is
    `sqrt(kept)`: the embedding takes the ratio, and with tied embeddings the final norm
    its inverse, so the sliced model computes what the masked one does.

    Args:
        model: the full (source-shaped) model.
        masks: binary masks, the same count kept in every row.

    Returns:
        A new `MaskableDecoder` whose shape is the pruned config (head_dim unchanged).
    """
    s = model.shape
    masks.validate(s)
    kept = kept_units(model, masks)
    hidden = kept["hidden"]
    first = kept["per_layer"][0] if kept["per_layer"] else None
    shape = s.keep_layers(kept["layers"].tolist()).replace(
        hidden_size=len(hidden),
        num_key_value_heads=len(first["kv_groups"]) if first else s.num_key_value_heads,
        num_attention_heads=first["heads"].numel() if first else s.num_attention_heads,
        intermediate_size=len(first["intermediate"]) if first else s.intermediate_size,
    )
    src = model.state_dict()
    out: dict[str, Tensor] = {
        "model.embed_tokens.weight": src["model.embed_tokens.weight"][:, hidden],
        "model.norm.weight": src["model.norm.weight"][hidden],
        "lm_head.weight": src["lm_head.weight"][:, hidden],
    }
    rules = dict(LAYER_SLICES)
    if s.family.qk_norm is not None:
        norm = QK_NORM_SLICES[s.family.qk_norm]
        rules |= {"self_attn.q_norm.weight": norm["q"], "self_attn.k_norm.weight": norm["kv"]}
    for new, (old, units) in enumerate(
        zip(kept["layers"].tolist(), kept["per_layer"], strict=True)
    ):
        G, hd = s.group_size, s.layer_head_dim(old)
        q_heads = (units["kv_groups"][:, None] * G + units["heads"]).flatten()  # global head ids
        index = {
            "q": _head_rows(q_heads, hd),
            "kv": _head_rows(units["kv_groups"], hd),
            "heads": q_heads,
            "ffn": units["intermediate"],
            "d": hidden,
        }
        prefix = f"model.layers.{old}."
        for key in [k for k in src if k.startswith(prefix)]:
            name = key[len(prefix) :]
            if name not in rules:
                raise ValueError(f"{key}: no slicing rule for this parameter")
            value = src[key]
            for dim, axis in enumerate(rules[name]):
                if axis is not None:
                    value = value.index_select(dim, index[axis].to(value.device))
            out[f"model.layers.{new}.{name}"] = value
    if s.family.embed_scale and len(hidden) != s.hidden_size:
        _fold_embed_scale(out, s, len(hidden))
    weight = model.model.embed_tokens.weight
    return model_from_state_dict(
        shape, {k: v.clone() for k, v in out.items()}, dtype=weight.dtype, device=weight.device
    )


def _fold_embed_scale(out: dict[str, Tensor], source, kept: int) -> None:
    """Gemma's stock class scales embeddings by sqrt(hidden_size) of its own config: give
    the embedding the ratio c = sqrt(d_source / d_kept), and, when the LM head shares it,
    the final norm 1 / c (its scale is 1 + w: w' = (1 + w) / c - 1)."""
    c = math.sqrt(source.hidden_size / kept)
    out["model.embed_tokens.weight"] = out["model.embed_tokens.weight"] * c
    if source.tie_word_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
        w = out["model.norm.weight"]
        out["model.norm.weight"] = (1 + w) / c - 1 if source.family.norm_offset else w / c


def _head_rows(heads: Tensor, head_dim: int) -> Tensor:
    """Row indices of the given heads in a (n_heads * head_dim)-row projection."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


def masks_report(masks: Masks, scores: dict[str, Tensor] | None = None) -> dict:
    """JSON-ready kept indices per gate row, and the gates' keep probabilities."""
    report: dict = {"masks": {}, "scores": {}}
    for name in ("z_layer", "z_hidden", "z_kv", "z_head", "z_intermediate"):
        gate = getattr(masks, name)
        if gate is not None:
            rows = gate.reshape(-1, gate.shape[-1])
            kept = [(r > 0).nonzero().flatten().tolist() for r in rows]
            report["masks"][name] = kept[0] if gate.dim() == 1 else kept
    for module, score in (scores or {}).items():
        report["scores"][module] = score.detach().cpu().tolist()
    return report
