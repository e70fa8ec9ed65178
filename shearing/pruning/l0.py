"""Hard-concrete L0 gates and the Lagrangian that pushes them toward a target shape.

Implements Sheared-LLaMA's targeted structured pruning (Xia et al., arXiv 2310.06694),
with hard-concrete gates from Louizos, Welling and Kingma (2018) over CoFi pruning's units
extended to grouped-query attention: the modules of `shearing.pruning.modules.TABLE` (layers,
hidden dimensions, query heads within key/value groups, key/value groups, FFN units).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shearing.models.config import DecoderShape, param_count
from shearing.models.decoder import Masks
from shearing.pruning.modules import (
    INIT_LOG_ALPHA,
    MASK_FIELDS,
    PRUNED_LOG_ALPHA,
    TABLE,
    resolve_modules,
)

#: Hard-concrete constants (Louizos et al. 2018): temperature, stretch limits, clamp eps.
BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
EPS = 1e-6
#: Spread of the initial gate logits around INIT_LOG_ALPHA (`pruning.modules`, with the
#: other initial values the config names). Importance init (`init_from_scores`): the units
#: the target keeps in each row start in [kept - 1, kept] (open), the others in
#: [pruned - 1, pruned], each group ordered by score; by default kept = INIT_LOG_ALPHA and
#: pruned = PRUNED_LOG_ALPHA; `model.l0_module.init_kept_logit` and `init_pruned_logit`
#: choose others.
INIT_LOG_ALPHA_STD = 0.01


@dataclass(frozen=True)
class GateSpec:
    """Shape of one module's gates and how many are kept in every row at the end."""

    shape: tuple[int, ...]
    keep: int  # kept per row (the last dimension is the row)

    @property
    def target_sparsity(self) -> float:
        return 1.0 - self.keep / self.shape[-1]


def gate_specs(source: DecoderShape, target: DecoderShape, modules: Iterable[str]) -> dict:
    """Gate shapes and kept counts for `modules` (already resolved), from the module table."""
    return {m: GateSpec(TABLE[m].gate_shape(source), TABLE[m].kept(target)) for m in modules}


def open_probability(log_alpha: Tensor) -> Tensor:
    """P(gate != 0) = 1 - Q(0) = sigmoid(log_alpha - beta * log(-gamma / zeta))."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def stretch(s: Tensor) -> Tensor:
    """Hard concrete's stretch of a (0, 1) value to (gamma, zeta), clamped to [0, 1]."""
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def sample_gates(log_alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One hard-concrete draw: stretched, clamped sigmoid of logistic noise."""
    u = torch.empty_like(log_alpha).uniform_(EPS, 1 - EPS, generator=generator)
    return stretch(torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA))


def top_k_mask(scores: Tensor, keep: int) -> Tensor:
    """Binary mask keeping the `keep` largest scores of every row (last dimension)."""
    idx = scores.topk(keep, dim=-1).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


class L0Module(nn.Module):
    """Gate logits, Lagrange multipliers, expected size and the Lagrangian penalty.

    Args:
        source: the shape being pruned.
        target: the shape to reach (Hugging Face config names).
        pruning_modules: names from `modules.MODULES`; every dimension that differs between
            `source` and `target` must be covered.
        warmup_steps: target sparsity ramps linearly from 0 over this many steps.
        seed: gate noise is a pure function of (seed, step, draw within the step), so a
            resumed run samples exactly the gates the uninterrupted run would have, and
            every rank samples the same gates.
        settle_from: from this step on the masks are fixed (`settled`): training uses the
            deterministic masks, the Lagrangian is not applied and the gates stop learning,
            so the weights adapt to the model that conversion slices. None = never.
    """

    #: composer's FSDP leaves this module unwrapped: its few parameters stay whole on every
    #: rank (FSDP would shard them, and its methods are not called through `forward`);
    #: `composer_model.average_replicated_grads` reduces their gradients.
    _fsdp_wrap = False

    def __init__(
        self,
        source: DecoderShape,
        target: DecoderShape,
        pruning_modules: Iterable[str],
        warmup_steps: int,
        seed: int = 0,
        settle_from: int | None = None,
    ) -> None:
        super().__init__()
        self.source, self.target = source, target
        self.modules_ = resolve_modules(source, pruning_modules)
        self.specs = gate_specs(source, target, self.modules_)
        self.warmup_steps = warmup_steps
        self.log_alpha = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(spec.shape)) for m, spec in self.specs.items()}
        )
        # One-element vectors, not scalars: FSDP cannot shard 0-dimensional parameters.
        self.lambda1 = nn.ParameterDict({m: nn.Parameter(torch.zeros(1)) for m in self.specs})
        self.lambda2 = nn.ParameterDict({m: nn.Parameter(torch.zeros(1)) for m in self.specs})
        self.seed = seed
        self.settle_from = settle_from
        #: Expected sparsity the target ramps from, per module (0 unless initialised
        #: from scores).
        self.ramp_from: dict[str, float] = {}
        self.step = 0
        self._draws = 0
        self.reset_parameters()

    def set_step(self, step: int) -> None:
        """Called by the training loop before each batch (target ramp, gate noise)."""
        self.step, self._draws = step, 0

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for log_alpha in self.log_alpha.values():
            log_alpha.normal_(INIT_LOG_ALPHA, INIT_LOG_ALPHA_STD)
        for lam in (*self.lambda1.values(), *self.lambda2.values()):
            lam.zero_()

    @torch.no_grad()
    def init_from_scores(
        self,
        scores: dict[str, Tensor],
        pruned_logit: float = PRUNED_LOG_ALPHA,
        kept_logit: float = INIT_LOG_ALPHA,
    ) -> None:
        """Start at the mask that `scores` (e.g. `importance_scores`) choose.

        In every row the `keep` top-scored units start open (logits in [kept_logit - 1,
        kept_logit]; the higher, the rarer a sampled mask scales a kept unit below 1) and
        the rest mostly closed (logits in [pruned_logit - 1, pruned_logit]; the lower, the
        rarer a sampled mask opens a pruned unit, and the less its gate learns), both
        ordered by score, so `deterministic_masks` is the one-shot mask of `scores` and
        training starts near it; the target sparsity then ramps from the gates' initial
        expected sparsity instead of from 0, so the Lagrangian does not reopen what the
        scores closed.

        Raises:
            ValueError: a module's scores are missing or have the wrong shape.
        """
        for m, log_alpha in self.log_alpha.items():
            score = scores.get(m)
            if score is None or tuple(score.shape) != tuple(log_alpha.shape):
                got = None if score is None else tuple(score.shape)
                raise ValueError(f"{m} scores have shape {got}, gates {tuple(log_alpha.shape)}")
            n, keep = log_alpha.shape[-1], self.specs[m].keep
            rank = row_ranks(score.cpu()).to(log_alpha)
            kept = rank >= n - keep
            # position within its group, in [0, 1], the best unit of each group at 1
            within = torch.where(kept, 1 - (n - 1 - rank) / max(keep - 1, 1),
                                 rank / max(n - keep - 1, 1))  # fmt: skip
            top = torch.where(kept, kept_logit, pruned_logit)
            log_alpha.copy_(top - 1.0 + within)
        self.ramp_from = {m: float(s) for m, s in self.expected_sparsity().items()}

    @property
    def settled(self) -> bool:
        """Whether the masks are fixed at this step (see `settle_from`)."""
        return self.settle_from is not None and self.step >= self.settle_from

    def gate_parameters(self) -> list[nn.Parameter]:
        return list(self.log_alpha.values())

    def lambda_parameters(self) -> list[nn.Parameter]:
        return [*self.lambda1.values(), *self.lambda2.values()]

    def _masks(self, gates: dict[str, Tensor]) -> Masks:
        return Masks(**{MASK_FIELDS[m]: z for m, z in gates.items()})

    def sample_masks(self) -> Masks:
        """Training masks: one hard-concrete draw per gate (one draw per forward pass);
        the deterministic masks once `settled`."""
        if self.settled:
            return self.deterministic_masks()
        first = next(iter(self.log_alpha.values()))
        generator = torch.Generator(device=first.device)
        generator.manual_seed(hash((self.seed, self.step, self._draws)) & 0x7FFFFFFFFFFFFFFF)
        self._draws += 1
        return self._masks({m: sample_gates(a, generator) for m, a in self.log_alpha.items()})

    @torch.no_grad()
    def deterministic_masks(self) -> Masks:
        """Binary masks keeping exactly the target count per row (largest logits)."""
        return self._masks(
            {m: top_k_mask(a, self.specs[m].keep) for m, a in self.log_alpha.items()}
        )

    @torch.no_grad()
    def expected_masks(self) -> Masks:
        """The gates without noise: Louizos et al.'s test-time estimate
        `clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`, soft values in [0, 1].

        What the gates have learned, as opposed to the binary target-sized cut of
        `deterministic_masks`: the loss under each, on held-out rows, shows whether the
        gates settled (`eval/settle/*`).
        """
        return self._masks({m: stretch(torch.sigmoid(a)) for m, a in self.log_alpha.items()})

    def scores(self) -> dict[str, Tensor]:
        """Per-unit probability of being kept (expected gate score)."""
        return {m: open_probability(a) for m, a in self.log_alpha.items()}

    def expected_sparsity(self) -> dict[str, Tensor]:
        """Expected fraction of pruned units per module (averaged over rows)."""
        return {m: 1.0 - p.mean() for m, p in self.scores().items()}

    def target_sparsity(self, step: int | None = None) -> dict[str, float]:
        """Target sparsity per module, ramped linearly over `warmup_steps`."""
        step = self.step if step is None else step
        ramp = 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)
        out = {}
        for m, spec in self.specs.items():
            start = self.ramp_from.get(m, 0.0)
            out[m] = start + (spec.target_sparsity - start) * ramp
        return out

    def expected_num_params(self, scores: dict[str, Tensor] | None = None) -> Tensor:
        """Expected non-embedding parameter count (incl. norms) under independent gates.

        With binary `scores` (e.g. deterministic masks) it is the sliced model's count.
        """
        s = self.scores() if scores is None else scores
        src = self.source
        L, K, G = src.num_hidden_layers, src.num_key_value_heads, src.group_size
        ones = next(iter(s.values())).new_ones
        p_layer = s.get("layer", ones(L))
        e_d = s["hidden"].sum() if "hidden" in s else ones(()) * src.hidden_size
        p_kv = s.get("kv_group", ones(L, K))
        p_head = s.get("head", ones(L, K, G))
        e_q = (p_kv * p_head.sum(-1)).sum(-1)  # (L,)
        e_kv = p_kv.sum(-1)
        e_i = s["intermediate"].sum(-1) if "intermediate" in s else ones(L) * src.intermediate_size
        return param_count(src, e_d, e_q, e_kv, e_i, p_layer)

    def lagrangian(self) -> tuple[Tensor, dict[str, Tensor]]:
        """`sum_m lambda1_m (s_m - t_m) + lambda2_m (s_m - t_m)^2` and per-module values."""
        expected = self.expected_sparsity()
        targets = self.target_sparsity()
        total = 0.0
        for m, s in expected.items():
            gap = s - targets[m]
            total = total + self.lambda1[m][0] * gap + self.lambda2[m][0] * gap * gap
        return total, expected

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the lambdas became one-element vectors hold scalars.
        for key, value in state_dict.items():
            if key.startswith((prefix + "lambda1.", prefix + "lambda2.")) and value.dim() == 0:
                state_dict[key] = value.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """Expected/target sparsity, lambdas and expected size, for logging."""
        out: dict[str, float] = {}
        targets = self.target_sparsity()
        for m, s in self.expected_sparsity().items():
            out[f"l0/expected_sparsity/{m}"] = float(s)
            out[f"l0/target_sparsity/{m}"] = targets[m]
            out[f"l0/lambda1/{m}"] = float(self.lambda1[m])
            out[f"l0/lambda2/{m}"] = float(self.lambda2[m])
        out["l0/expected_params"] = float(self.expected_num_params())
        out["l0/settled"] = float(self.settled)
        out["l0/target_params"] = float(self.target.num_params(include_embeddings=False))
        return out


def row_ranks(scores: Tensor) -> Tensor:
    """Rank of each score within its row (last dimension): 0 = lowest, n - 1 = highest.

    Ties are broken by position (a stable sort), so every row is a permutation.
    """
    n = scores.shape[-1]
    order = scores.argsort(dim=-1, stable=True)
    return torch.empty_like(order).scatter_(-1, order, torch.arange(n).expand_as(order))
