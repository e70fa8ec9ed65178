"""Memory a training run needs on each GPU, worked out on the meta device (no weights, no GPU).

    shearing memory --config yaml/prune_2.7b.yaml model.path=/models/Llama-2-7b-hf [--gpus 8]
    shearing memory --config yaml/prune_2.7b.yaml --source Llama-2-7b-hf
    shearing memory --recipes            # every real-scale recipe from its published source

Per GPU, for composer's FSDP FULL_SHARD over `--gpus` GPUs with `precision: amp_bf16` (what
the recipes use; without `fsdp_config` nothing is sharded):

- weights: the fp32 master copy of the trained model, 4 B per parameter, sharded;
- gradients: fp32, 4 B per parameter, sharded;
- optimizer: AdamW's two fp32 moments, 8 B per parameter, sharded;
- gates: the L0 module (gate logits, Lagrange multipliers) with their gradients and AdamW
  state, 16 B per parameter, on every GPU (it is not sharded);
- teacher: the frozen distillation teacher in `distillation.teacher_dtype`, sharded;
- layers in flight: the bf16 copies of two decoder layers FSDP has gathered at a time
  (`limit_all_gathers`);
- activations: what autograd keeps for the backward of one micro-batch
  (`device_train_microbatch_size` x `--seq-len` tokens), counted on the meta device: the
  bytes of every tensor saved for backward in a bf16 forward and the loss, each storage
  once, the weights not. Attention is counted as a fused kernel (FlashAttention, CUDA's
  SDPA) keeps it: q, k, v, the output and a float32 log-sum-exp, no score matrix (families
  whose attention needs the scores, soft-capped or with sinks, keep them). With
  activation checkpointing each layer keeps only its input, and the largest layer's saved
  tensors come back while it is recomputed.

Not counted: the CUDA context and allocator slack (~1-3 GB), communication buffers and the
dataloader's pinned memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from shearing.cli import run as run_command
from shearing.config import ConfigError, load_config
from shearing.models.decoder import Attention, DecoderLayer, MaskableDecoder
from shearing.models.published import PUBLISHED, RECIPES
from shearing.objectives import distillation_loss, next_token_loss
from shearing.run import Run, build_l0, resolve

GB = 1e9
YAML = Path(__file__).resolve().parents[2] / "yaml"
FIELDS = ("weights", "gradients", "optimizer", "gates", "teacher", "layers in flight",
          "activations")  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU of each part (`FIELDS`), and what they were worked out for."""

    parts: dict[str, float]
    params: int
    gpus: int
    micro_batch: int
    seq_len: int

    @property
    def total(self) -> float:
        return sum(self.parts.values())


class _FusedAttention(torch.autograd.Function):
    """What a fused attention kernel keeps for its backward: q, k, v, the output and one
    float32 log-sum-exp per query and head."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the estimate only goes forward
        raise NotImplementedError


def _fused_attend(original):
    def attend(self, q, k, v, cuda):
        if self.softcap is not None or hasattr(self, "sinks"):  # needs the scores
            return original(self, q, k, v, cuda)
        return _FusedAttention.apply(q, k, v)  # grouped k, v are not repeated on GPUs

    return attend


def saved_bytes(run: Run, micro_batch: int, seq_len: int) -> tuple[float, list[float]]:
    """Bytes kept for backward by one micro-batch's bf16 forward and loss on the meta
    device: (outside the decoder layers, [each layer])."""
    with torch.device("meta"):
        model = MaskableDecoder(run.source).to(torch.bfloat16)
        l0 = build_l0(run)
        teacher = None if run.teacher is None else MaskableDecoder(run.teacher)
    if teacher is not None:
        teacher.to(getattr(torch, run.cfg.distillation.teacher_dtype)).requires_grad_(False)
    weights = {id(p) for p in model.parameters()}
    counted: set = set()
    layers = [0.0] * run.source.num_hidden_layers
    outside = [0.0]
    where: list[int | None] = [None]

    def pack(t: torch.Tensor):
        base = t._base if t._base is not None else t
        storage = t.untyped_storage()
        key = storage._cdata
        if id(base) in weights or key in counted:
            return t
        counted.add(key)
        if where[0] is None:
            outside[0] += storage.nbytes()
        else:
            layers[where[0]] += storage.nbytes()
        return t

    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: where.__setitem__(0, i))
        layer.register_forward_hook(lambda m, a, o: where.__setitem__(0, None))
    ids = torch.zeros(micro_batch, seq_len, dtype=torch.long, device="meta")
    masks = None
    if l0 is not None:  # the gates' shapes and their multiplications, as training samples them
        masks = l0._masks({m: torch.sigmoid(a) for m, a in l0.log_alpha.items()})
    with (
        mock.patch.object(Attention, "_attend", _fused_attend(Attention._attend)),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        logits = model(ids, masks=masks)
        loss = next_token_loss(logits, ids)
        if teacher is not None:
            with torch.no_grad():
                target = teacher(ids)
            loss = loss + distillation_loss(logits, target)
    assert all(isinstance(m, DecoderLayer) for m in model.model.layers)
    return outside[0], layers


def estimate(run: Run, gpus: int, seq_len: int) -> Estimate:
    """Bytes per GPU of each part of `run` (see the module docstring)."""
    cfg = run.cfg
    fsdp = cfg.fsdp_config or {}
    shards = gpus if fsdp.get("sharding_strategy", "FULL_SHARD") != "NO_SHARD" and fsdp else 1
    with torch.device("meta"):
        source = MaskableDecoder(run.source)
        l0 = build_l0(run)
    params = sum(p.numel() for p in source.parameters())
    gates = 0 if l0 is None else sum(p.numel() for p in l0.parameters())
    teacher = 0
    if run.teacher is not None:
        with torch.device("meta"):
            teacher = sum(p.numel() for p in MaskableDecoder(run.teacher).parameters())
        teacher *= torch.finfo(getattr(torch, cfg.distillation.teacher_dtype)).bits // 8
    per_layer = max(sum(p.numel() for p in layer.parameters()) for layer in source.model.layers)
    micro = cfg.device_train_microbatch_size or cfg.global_train_batch_size // gpus
    outside, layers = saved_bytes(run, micro, seq_len)
    if fsdp.get("activation_checkpointing"):
        kept = len(layers) * micro * seq_len * run.source.hidden_size * 2  # each layer's input
        activations = outside + kept + max(layers)
    else:
        activations = outside + sum(layers)
    parts = {
        "weights": 4 * params / shards,
        "gradients": 4 * params / shards,
        "optimizer": 8 * params / shards,
        "gates": 16 * gates,
        "teacher": teacher / shards,
        "layers in flight": 2 * 2 * per_layer if fsdp else 0,
        "activations": activations,
    }
    return Estimate(parts, params, gpus, micro, seq_len)


def table(rows: list[tuple[str, Estimate]], gpu_gb: float) -> str:
    """A markdown table: one row per run, GB per GPU (10^9 bytes)."""
    head = ["run", "GPUs", "micro-batch x seq", *FIELDS, "total", f"fits {gpu_gb:g} GB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in rows:
        cells = [name, str(e.gpus), f"{e.micro_batch} x {e.seq_len}"]
        cells += [f"{e.parts[f] / GB:.1f}" for f in FIELDS] + [f"{e.total / GB:.1f}"]
        cells.append("yes" if e.total <= gpu_gb * GB else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recipe_run(name: str, root: Path, overrides: list[str] | None = None) -> Run:
    """A real-scale recipe resolved against its published source (config.json in `root`)."""
    source, teacher, _ = RECIPES[name]
    args = [f"model.path={_published(source, root)}", "data.path=unused"]
    if teacher is not None and teacher != source:
        args.append(f"distillation.teacher_path={_published(teacher, root)}")
    return resolve(load_config(YAML / name, args + list(overrides or [])), with_data=False)


def _published(name: str, root: Path) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(PUBLISHED[name]))
    return folder


def recipes_table(seq_len: int = 4096, gpu_gb: float = 80) -> str:
    """Every real-scale recipe, from its published source, on its GPUs."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (_, _, gpus) in RECIPES.items():
            rows.append((name, estimate(recipe_run(name, Path(tmp)), gpus, seq_len)))
    return table(rows, gpu_gb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shearing memory",
        description=__doc__.split("\n\n")[0],
        epilog="output: a table of GB per GPU (10^9 bytes): weights, gradients, optimizer, "
        "gates, teacher, layers in flight, activations, total, and whether it fits --gpu-gb "
        "(the parts: docs/multi-gpu.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="a training recipe (yaml/*.yaml)")
    parser.add_argument("--source", choices=sorted(PUBLISHED),
                        help="a published model's config instead of model.path")  # fmt: skip
    parser.add_argument("--recipes", action="store_true", help="every real-scale recipe")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the run shards over")
    parser.add_argument("--seq-len", type=int, default=4096, help="tokens per row")
    parser.add_argument("--gpu-gb", type=float, default=80, help="memory of one GPU, in GB")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)

    def body() -> None:
        if args.gpus < 1 or args.seq_len < 2:
            raise ValueError(f"--gpus {args.gpus} and --seq-len {args.seq_len} must be >= 1, 2")
        if args.recipes:
            print(recipes_table(args.seq_len, args.gpu_gb))
            return
        if args.config is None:
            raise ConfigError("give --config (a recipe) or --recipes")
        with tempfile.TemporaryDirectory() as tmp:
            extra = [f"model.path={_published(args.source, Path(tmp))}"] if args.source else []
            cfg = load_config(args.config, [*extra, "data.path=unused", *args.overrides])
            run = resolve(cfg, with_data=False)
            rows = [(Path(args.config).name, estimate(run, args.gpus, args.seq_len))]
        print(table(rows, args.gpu_gb))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
