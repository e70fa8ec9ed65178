"""The composer model: a maskable LLaMA, optionally with L0 gates, and its loss.

Training loss = ce_weight x next-token cross-entropy (+ alpha x distillation from a frozen
teacher) (+ the L0 Lagrangian while pruning) (+ the ProSparse L1 term). Training forwards
sample hard-concrete masks (the deterministic masks once the gates have settled);
evaluation uses the deterministic (final) masks, and while pruning also the gates'
expected values, so the gap between the two is measured (`ExpectedGatesCrossEntropy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from composer.models import ComposerModel
from torch import Tensor

from shearing.data.metrics import DOMAIN_METRIC, EXPECTED_METRIC, DomainCrossEntropy
from shearing.models.config import Act
from shearing.models.decoder import MaskableDecoder, Masks
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
    ce_weight: weight of the cross-entropy term (0 = pure distillation; the unweighted
        cross-entropy is still reported as `ce`).
    l1_stages: ProSparse L1 stages as (steps, coefficient); None = no L1 term.
    threshold_from_step: ProSparse's threshold shift: the model's FATReLU threshold (its
        shape's `fatrelu_threshold`) is in force from this step on, 0 (exactly ReLU) before.
    cpu_bf16: run the student's and the teacher's forwards under CPU bf16 autocast (the
        weights, gradients, optimizer state, gates and losses stay fp32): `precision:
        amp_bf16` on a CPU, where composer's own amp does not run.
    """

    def __init__(
        self,
        model: MaskableDecoder,
        l0: L0Module | None,
        domains: Sequence[str],
        teacher: MaskableDecoder | None = None,
        distill_alpha: float = 1.0,
        distill_temperature: float = 1.0,
        ce_weight: float = 1.0,
        l1_stages: Sequence[tuple[int, float]] | None = None,
        threshold_from_step: int | None = None,
        cpu_bf16: bool = False,
    ) -> None:
        super().__init__()
        self.cpu_bf16 = cpu_bf16
        self.model = model
        self.l0 = l0
        self.domains = list(domains)
        self.eval_metric = DomainCrossEntropy(self.domains)
        self.expected_metric = (
            DomainCrossEntropy(self.domains, outputs_key="expected") if l0 is not None else None
        )
        self._teacher = [teacher] if teacher is not None else []  # a list: not a submodule
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.distill_alpha, self.distill_temperature = distill_alpha, distill_temperature
        self.ce_weight = ce_weight
        self.l1_stages = None if l1_stages is None else [tuple(s) for s in l1_stages]
        # Activation statistics only where they mean something (L1 term, ReLU-family FFNs).
        wanted = self.l1_stages is not None or model.shape.hidden_act != Act.SILU
        self.recorder = ActivationRecorder(model) if wanted else None
        self.threshold_from_step = threshold_from_step
        if threshold_from_step is not None and model.shape.hidden_act != Act.FATRELU:
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

    def autocast(self):
        """CPU bf16 autocast when `cpu_bf16`, else nothing (on GPUs composer's amp)."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16)

    def forward(self, batch: dict) -> Tensor:
        masks = self.masks()
        with self.autocast():
            return self.model(batch["input_ids"], masks=masks)

    @property
    def teacher(self) -> torch.nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def set_teacher(self, teacher: torch.nn.Module) -> None:
        """Replace the teacher (e.g. by its FSDP-wrapped self); still not a submodule."""
        self._teacher = [teacher]

    def teacher_logits(self, ids: Tensor) -> Tensor:
        teacher = self._teacher[0]
        weight = next(teacher.parameters())
        if weight.device != ids.device:  # without composer's placement callback (tests)
            teacher.to(ids.device)
        with torch.no_grad(), self.autocast():
            return teacher(ids)

    def loss(self, outputs: Tensor, batch: dict) -> dict[str, Tensor] | Tensor:
        ids = batch["input_ids"]
        ce = next_token_loss(outputs, ids)
        terms = {"ce": ce}
        weights = {"ce": self.ce_weight if self._teacher else 1.0}
        magnitude = None
        if self.recorder is not None:
            magnitude, self.last_activation_sparsity = self.recorder.take()
        if self.l0 is not None and not self.l0.settled:
            terms["lagrangian"] = self.l0.lagrangian()[0]
        if self._teacher:
            kd = distillation_loss(outputs, self.teacher_logits(ids), self.distill_temperature)
            terms["distillation"] = kd
            weights["distillation"] = self.distill_alpha
        if self.l1_stages is not None and magnitude is not None:
            terms["activation_l1"] = l1_penalty(self.l1_stages, self.step) * magnitude
        if len(terms) == 1:
            return ce
        total = sum(weights.get(k, 1.0) * v for k, v in terms.items())
        return {"total": total, **terms}

    def eval_forward(self, batch: dict, outputs: Tensor | None = None) -> Tensor | dict:
        """Logits under the deterministic masks; while pruning, a dict that adds the
        logits under the gates' expected values (`L0Module.expected_masks`)."""
        out = outputs if outputs is not None else self.forward(batch)
        if self.recorder is not None:
            self.recorder.take()  # evaluation activations feed no loss
        if self.l0 is None or outputs is not None:
            return out
        masks = self.l0.expected_masks()
        with self.autocast():
            expected = self.model(batch["input_ids"], masks=masks)
        if self.recorder is not None:
            self.recorder.take()
        return {"logits": out, "expected": expected}

    def get_metrics(self, is_train: bool = False) -> dict:
        if is_train:
            return {}
        metrics = {DOMAIN_METRIC: self.eval_metric}
        if self.expected_metric is not None:
            metrics[EXPECTED_METRIC] = self.expected_metric
        return metrics

    def update_metric(self, batch: dict, outputs: Tensor | dict, metric) -> None:
        if isinstance(outputs, dict):
            outputs = outputs[metric.outputs_key]
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
