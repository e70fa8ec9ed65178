"""The tiny model, data and training step shared by the FSDP test and its reference."""

from __future__ import annotations

import torch

from shearing.pruning.l0 import L0Module
from shearing.trainer.build import AdamWDualAscent
from shearing.trainer.model import ShearingLM, average_replicated_grads
from tests.helpers import tiny_pair

#: One batch of token ids per rank (the reference runs both in one process).
TOKENS = [
    torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(rank))
    for rank in range(2)
]
STEP = 3


def build(teacher: bool = False, ascent: bool = False) -> tuple[ShearingLM, torch.optim.Optimizer]:
    """The tiny pruning model and its optimizer; with `teacher`, distilling (with half
    the cross-entropy) from another random model of the source's shape; with `ascent`, the
    multipliers by plain gradient ascent (`optimizer.lambda_ascent_lr`)."""
    _, model = tiny_pair()
    source = model.shape
    target = source.replace(
        hidden_size=24,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_hidden_layers=2,
        intermediate_size=32,
    )
    modules = ["layer", "hidden", "head", "kv_group", "intermediate"]
    l0 = L0Module(source, target, modules, warmup_steps=4, seed=0)
    with torch.no_grad():
        for lam in l0.lambda_parameters():
            lam.fill_(0.5)  # a Lagrangian term with a gradient
    frozen = tiny_pair(seed=1)[1] if teacher else None
    lm = ShearingLM(model.train(), l0, ["a"], teacher=frozen, ce_weight=0.5)
    groups = [
        {"params": list(lm.model.parameters()), "lr": 1e-2},
        {"params": l0.gate_parameters(), "lr": 1e-1},
        {"params": l0.lambda_parameters(), "lr": 1e-1, "maximize": True, "plain_ascent": ascent},
    ]
    return lm, (AdamWDualAscent if ascent else torch.optim.AdamW)(groups)


def step(model: ShearingLM, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> torch.Tensor:
    """One step as composer takes it: forward, loss, backward, L0 grad sync, AdamW."""
    model.set_step(STEP)
    batch = {"input_ids": ids}
    loss = model.loss(model(batch), batch)["total"]
    loss.backward()
    average_replicated_grads(model)
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()
