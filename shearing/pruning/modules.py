"""The table of pruning modules: every place that needs a module's facts reads them here.

| module         | gates     | a gate removes                       | kept | HF key                |
|----------------|-----------|--------------------------------------|------|-----------------------|
| `layer`        | [L]       | a decoder layer                      | L_t  | `num_hidden_layers`   |
| `hidden`       | [d]       | a hidden dimension everywhere        | d_t  | `hidden_size`         |
| `head`         | [L, K, G] | query head g of key/value group k    | G_t  | `num_attention_heads` |
| `kv_group`     | [L, K]    | a key/value head and its query heads | K_t  | `num_key_value_heads` |
| `intermediate` | [L, I]    | an FFN unit                          | I_t  | `intermediate_size`   |

(L layers, d hidden size, K key/value heads, G = H / K query heads per group, I FFN
units; `_t` the target's; "kept" is per row.) A module's gates, its importance scores and
its mask (the `Masks` field it feeds) all have the gate shape; the last dimension is the
row in which the target's count is kept. With plain multi-head attention (G = 1) a query
head *is* a key/value group, so `head` acts on the `kv_group` gates (`resolve_modules`).

This module imports only the shape (no torch): the gate code (`l0.py`), importance scores,
the config schema and conversion read it without pulling in data, training code or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shearing.models.config import DecoderShape

#: Initial gate logit: every gate starts open with probability ~0.999.
INIT_LOG_ALPHA = 5.0
#: Importance init: the logit the units outside the importance mask start at (open in at
#: most 20% of sampled masks); see `L0Module.init_from_scores`.
PRUNED_LOG_ALPHA = -3.0
#: Ways to initialise the gate logits (`model.l0_module.init`).
INITS = ("default", "importance")


@dataclass(frozen=True)
class PruningModule:
    """One row of the table (see the module docstring)."""

    name: str
    #: The Hugging Face config key of the dimension the module prunes.
    hf_key: str
    #: The `Masks` field its gates feed.
    mask_field: str
    #: Gate (and score, and mask) shape for a source shape.
    gate_shape: Callable[[DecoderShape], tuple[int, ...]]
    #: Units kept per row for a target shape.
    kept: Callable[[DecoderShape], int]

    def changes(self, source: DecoderShape, target: DecoderShape) -> bool:
        """Whether going from `source` to `target` needs this module's gates."""
        return self.kept(source) != self.kept(target)


TABLE: dict[str, PruningModule] = {
    m.name: m
    for m in (
        PruningModule(
            "layer",
            "num_hidden_layers",
            "z_layer",
            lambda s: (s.num_hidden_layers,),
            lambda t: t.num_hidden_layers,
        ),
        PruningModule(
            "hidden", "hidden_size", "z_hidden", lambda s: (s.hidden_size,), lambda t: t.hidden_size
        ),
        PruningModule(
            "head",
            "num_attention_heads",
            "z_head",
            lambda s: (s.num_hidden_layers, s.num_key_value_heads, s.group_size),
            lambda t: t.group_size,
        ),
        PruningModule(
            "kv_group",
            "num_key_value_heads",
            "z_kv",
            lambda s: (s.num_hidden_layers, s.num_key_value_heads),
            lambda t: t.num_key_value_heads,
        ),
        PruningModule(
            "intermediate",
            "intermediate_size",
            "z_intermediate",
            lambda s: (s.num_hidden_layers, s.intermediate_size),
            lambda t: t.intermediate_size,
        ),
    )
}

#: Module names, in table order.
MODULES = tuple(TABLE)
#: Target-config key that each module changes.
MODULE_KEYS = {m.name: m.hf_key for m in TABLE.values()}
#: Masks field fed by each module's gates.
MASK_FIELDS = {m.name: m.mask_field for m in TABLE.values()}


def resolve_modules(source: DecoderShape, modules: Iterable[str]) -> tuple[str, ...]:
    """Validate module names; with multi-head attention, `head` means `kv_group`.

    Raises:
        ValueError: an unknown module name.
    """
    resolved = []
    for m in modules:
        if m not in TABLE:
            raise ValueError(f"pruning_modules entry {m!r} is unknown; valid: {', '.join(MODULES)}")
        if m == "head" and source.group_size == 1:
            m = "kv_group"
        if m not in resolved:
            resolved.append(m)
    return tuple(resolved)
