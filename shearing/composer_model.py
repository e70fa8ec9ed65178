"""The composer model: a maskable LLaMA, optionally with L0 gates, and its loss.

Training loss = next-token cross-entropy (+ the L0 Lagrangian while pruning). Training
forwards sample hard-concrete masks; evaluation uses the deterministic (final) masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from composer.models import ComposerModel
from torch import Tensor, nn

from shearing.data.metrics import DomainCrossEntropy
from shearing.models.llama import DecoderLayer, MaskableLlama, Masks
from shearing.pruning.l0 import L0Module


class ShearingLM(ComposerModel):
    """Args:
    model: the LLaMA to train or prune.
    l0: the L0 module (None: plain training).
    domains: domain names for the per-domain eval metric.
    """

    def __init__(self, model: MaskableLlama, l0: L0Module | None, domains: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.l0 = l0
        self.domains = list(domains)
        self.eval_metric = DomainCrossEntropy(self.domains)

    def masks(self) -> Masks | None:
        if self.l0 is None:
            return None
        return self.l0.sample_masks() if self.training else self.l0.deterministic_masks()

    def forward(self, batch: dict) -> Tensor:
        return self.model(batch["input_ids"], masks=self.masks())

    def loss(self, outputs: Tensor, batch: dict) -> dict[str, Tensor] | Tensor:
        ids = batch["input_ids"]
        ce = F.cross_entropy(outputs[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        if self.l0 is None:
            return ce
        lagrangian, _ = self.l0.lagrangian()
        return {"total": ce + lagrangian, "ce": ce, "lagrangian": lagrangian}

    def eval_forward(self, batch: dict, outputs: Tensor | None = None) -> Tensor:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        return {} if is_train else {"DomainCrossEntropy": self.eval_metric}

    def update_metric(self, batch: dict, outputs: Tensor, metric) -> None:
        metric.update(outputs, batch["input_ids"], batch["domain_idx"])

    # FSDP: shard and checkpoint one decoder layer at a time.
    def fsdp_wrap_fn(self, module: nn.Module) -> bool:
        return isinstance(module, DecoderLayer)

    def activation_checkpointing_fn(self, module: nn.Module) -> bool:
        return isinstance(module, DecoderLayer)
