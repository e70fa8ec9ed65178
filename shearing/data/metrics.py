"""Per-domain held-out loss as a torchmetrics metric (summed across ranks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from shearing.objectives import next_token_loss

#: composer's names of the evaluation metrics: the one the domain sampler reads (under the
#: masks a pruning run would slice to) and the one under the gates' expected values.
DOMAIN_METRIC = "DomainCrossEntropy"
EXPECTED_METRIC = "ExpectedGatesCrossEntropy"


class DomainCrossEntropy(Metric):
    """Token-weighted next-token cross-entropy, overall and per domain.

    `compute()` returns the average over every evaluated token; `per_domain()` returns
    the loss of each domain that had tokens in this evaluation (absent domains are left
    out, never NaN). Both are reduced across ranks.

    Args:
        domains: the domain names, in `domain_idx` order.
        outputs_key: with a model whose `eval_forward` returns a dict of logits, the entry
            this metric scores (composer copies metrics, so the key travels with them).
    """

    full_state_update = False

    def __init__(self, domains: Sequence[str], outputs_key: str = "logits") -> None:
        super().__init__()
        self.domains = list(domains)
        self.outputs_key = outputs_key
        self.add_state(
            "loss_sum", torch.zeros(len(domains), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "tokens", torch.zeros(len(domains), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, logits: Tensor, input_ids: Tensor, domain_idx: Tensor) -> None:
        """Add a batch: (b, s, V) logits, (b, s) ids, (b,) domain indices."""
        keep = domain_idx >= 0  # -1 marks padding rows
        logits, input_ids, domain_idx = logits[keep], input_ids[keep], domain_idx[keep]
        loss = next_token_loss(logits, input_ids, reduction="none")
        per_row = loss.sum(-1).to(torch.float64)
        self.loss_sum.index_add_(0, domain_idx, per_row)
        self.tokens.index_add_(0, domain_idx, torch.full_like(per_row, loss.shape[1]))

    def compute(self) -> Tensor:
        return self.loss_sum.sum() / self.tokens.sum().clamp(min=1)

    def per_domain(self) -> dict[str, float]:
        """{domain: loss} for the domains evaluated, reduced across ranks."""
        with self.sync_context(should_sync=self._should_sync()):
            return {
                d: float(self.loss_sum[i] / self.tokens[i])
                for i, d in enumerate(self.domains)
                if self.tokens[i] > 0
            }

    def _should_sync(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()
