"""The composer model: a maskable LLaMA, optionally with L0 gates, and its loss.

Training loss = next-token cross-entropy (+ the L0 Lagrangian while pruning). Training
forwards sample hard-concrete masks; evaluation uses the deterministic (final) masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from composer.models import ComposerModel
from torch import Tensor

from shearing.data.metrics import DomainCrossEntropy
from shearing.models.llama import MaskableLlama, Masks
from shearing.objectives import (
    ActivationRecorder,
    distillation_loss,
    l1_penalty,
    next_token_loss,
)
from shearing.pruning.l0 import L0Module


class ShearingLM(ComposerModel):
    """Args:
    model: the LLaMA to train or prune.
    l0: the L0 module (None: plain training).
    domains: domain names for the per-domain eval metric.
    teacher: frozen model for distillation (kept out of the state dict and optimizer).
    distill_alpha, distill_temperature: distillation weight and temperature.
    l1_stages: ProSparse L1 stages as (steps, coefficient); None = no L1 term.
    threshold_from_step: ProSparse's threshold shift: the model's FATReLU threshold (its
        shape's `fatrelu_threshold`) is in force from this step on, 0 (exactly ReLU) before.
    """

    def __init__(
        self,
        model: MaskableLlama,
        l0: L0Module | None,
        domains: Sequence[str],
        teacher: MaskableLlama | None = None,
        distill_alpha: float = 1.0,
        distill_temperature: float = 1.0,
        l1_stages: Sequence[tuple[int, float]] | None = None,
        threshold_from_step: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.l0 = l0
        self.domains = list(domains)
        self.eval_metric = DomainCrossEntropy(self.domains)
        self._teacher = [teacher] if teacher is not None else []  # a list: not a submodule
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.distill_alpha, self.distill_temperature = distill_alpha, distill_temperature
        self.l1_stages = None if l1_stages is None else [tuple(s) for s in l1_stages]
        # Activation statistics only where they mean something (L1 term, ReLU-family FFNs).
        wanted = self.l1_stages is not None or model.shape.hidden_act != "silu"
        self.recorder = ActivationRecorder(model) if wanted else None
        self.threshold_from_step = threshold_from_step
        if threshold_from_step is not None and model.shape.hidden_act != "fatrelu":
            raise ValueError("threshold_from_step needs a fatrelu model")
        self.last_activation_sparsity: Tensor | None = None
        self.set_step(0)

    def set_step(self, step: int) -> None:
        """Called before each training batch (L0 ramp and noise, L1 schedule, threshold)."""
        self.step = step
        if self.l0 is not None:
            self.l0.set_step(step)
        if self.threshold_from_step is not None:
            final = self.model.shape.fatrelu_threshold
            threshold = final if step >= self.threshold_from_step else 0.0
            for layer in self.model.model.layers:
                layer.mlp.act_fn.threshold = threshold

    def masks(self) -> Masks | None:
        if self.l0 is None:
            return None
        return self.l0.sample_masks() if self.training else self.l0.deterministic_masks()

    def forward(self, batch: dict) -> Tensor:
        return self.model(batch["input_ids"], masks=self.masks())

    def loss(self, outputs: Tensor, batch: dict) -> dict[str, Tensor] | Tensor:
        ids = batch["input_ids"]
        ce = next_token_loss(outputs, ids)
        terms = {"ce": ce}
        magnitude = None
        if self.recorder is not None:
            magnitude, self.last_activation_sparsity = self.recorder.take()
        if self.l0 is not None:
            terms["lagrangian"] = self.l0.lagrangian()[0]
        if self._teacher:
            teacher = self._teacher[0]
            if teacher.lm_head.weight.device != ids.device:
                teacher.to(ids.device)
            with torch.no_grad():
                target = teacher(ids)
            kd = distillation_loss(outputs, target, self.distill_temperature)
            terms["distillation"] = self.distill_alpha * kd
        if self.l1_stages is not None and magnitude is not None:
            terms["activation_l1"] = l1_penalty(self.l1_stages, self.step) * magnitude
        if len(terms) == 1:
            return ce
        return {"total": sum(terms.values()), **terms}

    def eval_forward(self, batch: dict, outputs: Tensor | None = None) -> Tensor:
        out = outputs if outputs is not None else self.forward(batch)
        if self.recorder is not None:
            self.recorder.take()  # evaluation activations feed no loss
        return out

    def get_metrics(self, is_train: bool = False) -> dict:
        return {} if is_train else {"DomainCrossEntropy": self.eval_metric}

    def update_metric(self, batch: dict, outputs: Tensor, metric) -> None:
        metric.update(outputs, batch["input_ids"], batch["domain_idx"])


def average_replicated_grads(model: ShearingLM) -> None:
    """Average the gradients of the L0 module over the training processes.

    Under FSDP the L0 module is not wrapped (`L0Module._fsdp_wrap`): its parameters are
    small and every rank keeps all of them, but nothing reduces their gradients, which
    depend on each rank's data. Without DDP or FSDP, or with one process, this is a no-op.
    """
    import torch.distributed as dist

    if model.l0 is None or not dist.is_available() or not dist.is_initialized():
        return
    world = dist.get_world_size()
    if world == 1:
        return
    for p in model.l0.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
