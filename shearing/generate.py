"""Greedy decoding with a key/value cache."""

from __future__ import annotations

import torch
from torch import Tensor

from shearing.models.llama import KVCache, MaskableLlama


@torch.no_grad()
def greedy_generate(
    model: MaskableLlama,
    input_ids: Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> Tensor:
    """Append up to `max_new_tokens` argmax tokens to each row of (b, s) `input_ids`.

    Stops early once every row has produced `eos_token_id`. Returns (b, s + n) ids.
    """
    cache = KVCache(model.shape.num_hidden_layers)
    out = input_ids
    next_input = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = model(next_input, cache=cache)
        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (b, 1)
        out = torch.cat([out, next_token], dim=1)
        next_input = next_token
        if eos_token_id is not None:
            done |= next_token.squeeze(1) == eos_token_id
            if bool(done.all()):
                break
    return out
