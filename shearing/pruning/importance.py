"""Activation-based importance of every prunable unit, from a few calibration rows.

The scores follow Minitron (Muralidharan et al., arXiv 2407.14679) for width and ShortGPT
(Men et al., arXiv 2403.03853) for depth, on the dense model:

| module         | shape     | score (higher = more important)                               |
|----------------|-----------|---------------------------------------------------------------|
| `head`         | [L, K, G] | mean L2 norm of the head's attention output (o_proj's input)  |
| `kv_group`     | [L, K]    | sum of the scores of the group's query heads                  |
| `intermediate` | [L, I]    | mean |unit value| (down_proj's input)                         |
| `hidden`       | [d]       | mean |value| after every hidden-width RMSNorm, summed          |
| `layer`        | [L]       | block influence: mean over tokens of 1 - cos(input, output)   |

Means are over every token of the calibration rows. The scores feed one-shot pruning
(`shearing.commands.oneshot`: keep the top units of every row) and importance-initialised L0 gates
(`model.l0_module.init: importance`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from shearing.data.corpus import Corpus
from shearing.data.mixture import as_corpus
from shearing.models.decoder import MaskableDecoder
from shearing.pruning.modules import TABLE


def calibration_batches(
    data: str | Path | Corpus,
    rows_per_domain: int,
    batch_size: int = 4,
    split: str = "train",
    domains: list[str] | None = None,
) -> list[Tensor]:
    """The first `rows_per_domain` rows of every domain, as (b, s) int64 batches.

    Raises:
        ValueError: `rows_per_domain` is not positive or a domain has no rows.
    """
    if rows_per_domain <= 0:
        raise ValueError(f"calibration rows per domain must be positive, got {rows_per_domain}")
    corpus = as_corpus(data)
    domains = domains or list(corpus.manifest()["domains"])
    rows = []
    for domain, reader in zip(domains, corpus.split(split, domains), strict=True):
        if len(reader) == 0:
            raise ValueError(f"domain {domain!r} has no {split} rows for calibration")
        rows += [reader[i]["tokens"] for i in range(min(rows_per_domain, len(reader)))]
    ids = torch.from_numpy(np.stack(rows).astype(np.int64))
    return list(ids.split(batch_size))


@torch.no_grad()
def importance_scores(model: MaskableDecoder, batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """Importance of every unit of `model` (see the module docstring), float64 on the CPU.

    Raises:
        ValueError: `batches` is empty.
    """
    s = model.shape
    L, K, G = s.num_hidden_layers, s.num_key_value_heads, s.group_size
    head = torch.zeros(L, s.num_attention_heads, dtype=torch.float64)
    ffn = torch.zeros(L, s.intermediate_size, dtype=torch.float64)
    hidden = torch.zeros(s.hidden_size, dtype=torch.float64)
    block = torch.zeros(L, dtype=torch.float64)
    tokens = 0

    def add(total: Tensor, index, value: Tensor) -> None:
        total[index] += value.double().cpu()

    def on_heads(i):
        def hook(module, inputs):
            out = inputs[0].reshape(-1, s.num_attention_heads, s.layer_head_dim(i))
            add(head, i, out.float().norm(dim=-1).sum(0))

        return hook

    def on_units(i):
        def hook(module, inputs):
            add(ffn, i, inputs[0].reshape(-1, s.intermediate_size).float().abs().sum(0))

        return hook

    def on_norm(module, inputs, output):
        add(hidden, slice(None), output.reshape(-1, s.hidden_size).float().abs().sum(0))

    def on_layer(i):
        def hook(module, inputs, output):
            cos = F.cosine_similarity(inputs[0].float(), output.float(), dim=-1)
            add(block, i, (1.0 - cos).sum())

        return hook

    handles = [model.model.norm.register_forward_hook(on_norm)]
    for i, layer in enumerate(model.model.layers):
        handles += [
            layer.self_attn.o_proj.register_forward_pre_hook(on_heads(i)),
            layer.mlp.down_proj.register_forward_pre_hook(on_units(i)),
            layer.register_forward_hook(on_layer(i)),
        ]
        handles += [norm.register_forward_hook(on_norm) for norm in layer.hidden_norms()]
    was_training = model.training
    model.eval()
    try:
        for ids in tqdm(batches, desc="importance", unit="batch", disable=None):
            model(ids)
            tokens += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if tokens == 0:
        raise ValueError("importance scores need at least one calibration row")
    head = (head / tokens).view(L, K, G)
    return {
        "layer": block / tokens,
        "hidden": hidden / tokens,
        "head": head,
        "kv_group": head.sum(-1),
        "intermediate": ffn / tokens,
    }


def random_scores(model: MaskableDecoder, seed: int) -> dict[str, Tensor]:
    """Scores of the same shapes as `importance_scores`, uniformly random (a baseline)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        m.name: torch.rand(m.gate_shape(model.shape), generator=generator, dtype=torch.float64)
        for m in TABLE.values()
    }
