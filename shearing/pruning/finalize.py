"""Slice a masked model into the dense smaller model its binary masks describe.

Under binary deterministic masks (`L0Module.deterministic_masks`) the masked model and
the sliced model compute the same function: kept units are copied, pruned ones dropped,
no gate value is folded into any weight (the original code's soft-gate folding and
double-applied hidden gate on the LM head are the mismatches this avoids).
"""

from __future__ import annotations

import torch
from torch import Tensor

from shearing.models.hf_io import model_from_state_dict
from shearing.models.llama import MaskableLlama, Masks


def _kept(gate: Tensor | None, n: int) -> Tensor:
    if gate is None:
        return torch.arange(n)
    return (gate > 0).nonzero().flatten().cpu()


def kept_units(model: MaskableLlama, masks: Masks) -> dict:
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


@torch.no_grad()
def slice_model(model: MaskableLlama, masks: Masks) -> MaskableLlama:
    """The dense model with only the units kept by binary `masks`.

    Args:
        model: the full (source-shaped) model.
        masks: binary masks, the same count kept in every row.

    Returns:
        A new `MaskableLlama` whose shape is the pruned config (head_dim unchanged).
    """
    s = model.shape
    masks.validate(s)
    kept = kept_units(model, masks)
    hd, hidden = s.head_dim, kept["hidden"]
    first = kept["per_layer"][0] if kept["per_layer"] else None
    shape = s.replace(
        hidden_size=len(hidden),
        num_hidden_layers=len(kept["layers"]),
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
    for new, (old, units) in enumerate(
        zip(kept["layers"].tolist(), kept["per_layer"], strict=True)
    ):
        p, q = f"model.layers.{old}.", f"model.layers.{new}."
        G = s.group_size
        q_heads = (units["kv_groups"][:, None] * G + units["heads"]).flatten()  # global head ids
        q_rows = _head_rows(q_heads, hd)
        kv_rows = _head_rows(units["kv_groups"], hd)
        ffn = units["intermediate"]
        out[q + "self_attn.q_proj.weight"] = src[p + "self_attn.q_proj.weight"][q_rows][:, hidden]
        out[q + "self_attn.k_proj.weight"] = src[p + "self_attn.k_proj.weight"][kv_rows][:, hidden]
        out[q + "self_attn.v_proj.weight"] = src[p + "self_attn.v_proj.weight"][kv_rows][:, hidden]
        out[q + "self_attn.o_proj.weight"] = src[p + "self_attn.o_proj.weight"][hidden][:, q_rows]
        out[q + "mlp.gate_proj.weight"] = src[p + "mlp.gate_proj.weight"][ffn][:, hidden]
        out[q + "mlp.up_proj.weight"] = src[p + "mlp.up_proj.weight"][ffn][:, hidden]
        out[q + "mlp.down_proj.weight"] = src[p + "mlp.down_proj.weight"][hidden][:, ffn]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[q + f"{norm}.weight"] = src[p + f"{norm}.weight"][hidden]
    weight = model.model.embed_tokens.weight
    return model_from_state_dict(
        shape, {k: v.clone() for k, v in out.items()}, dtype=weight.dtype, device=weight.device
    )


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
