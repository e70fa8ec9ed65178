"""Training objectives: the next-token loss, and extras for activation sparsity.

- Next-token cross-entropy (`next_token_loss`): the one loss that training, the per-domain
  eval metric and `shearing.commands.eval` compute.
- Distillation: `alpha * T^2 * KL(teacher || student)` over the vocabulary, teacher frozen.
- Progressive L1 (ProSparse): `lambda(step) * R`, R = mean |FFN unit value| over layers;
  lambda is piecewise by stage, rising within stage i from lambda_{i-1} to lambda_i as
  `lambda_{i-1} + (lambda_i - lambda_{i-1}) * sin(pi/2 * progress)`, then holding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from shearing.models.decoder import MaskableDecoder


def next_token_loss(logits: Tensor, ids: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of the logits at each position against the next token, in fp32.

    Args:
        logits: (b, s, V); ids: (b, s).
        reduction: "mean" or "sum" over the b x (s - 1) predictions, or "none": (b, s - 1).
    """
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        ids[:, 1:].flatten(),
        reduction=reduction,
    )
    return loss.view(ids.shape[0], -1) if reduction == "none" else loss


def l1_penalty(stages: Sequence[tuple[int, float]], step: int) -> float:
    """The L1 coefficient at `step` for stages of (length in steps, final coefficient)."""
    previous, start = 0.0, 0
    for steps, value in stages:
        if step < start + steps:
            progress = (step - start) / steps
            return previous + (value - previous) * math.sin(math.pi / 2 * progress)
        previous, start = value, start + steps
    return previous


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over tokens of T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    t = temperature
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1).flatten(0, -2)
    log_p_student = F.log_softmax(student.float() / t, dim=-1).flatten(0, -2)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * t * t


class ActivationRecorder:
    """Forward hooks on every FFN activation: mean |h| (differentiable) and zero fraction.

    Values stay tensors (no host sync per layer); callers convert once per step.
    """

    def __init__(self, model: MaskableDecoder) -> None:
        self.magnitudes: list[Tensor] = []
        self.zero_fractions: list[Tensor] = []
        self.handles = [
            layer.mlp.act_fn.register_forward_hook(self._record) for layer in model.model.layers
        ]

    def _record(self, module, inputs, output: Tensor) -> None:
        self.magnitudes.append(output.abs().mean())
        self.zero_fractions.append((output == 0).float().mean().detach())

    def take(self) -> tuple[Tensor | None, Tensor | None]:
        """(mean |h| over layers, mean zero fraction) of the last forward; then reset."""
        if not self.magnitudes:
            return None, None
        magnitude = torch.stack(self.magnitudes).mean()
        sparsity = torch.stack(self.zero_fractions).mean()
        self.magnitudes, self.zero_fractions = [], []
        return magnitude, sparsity
