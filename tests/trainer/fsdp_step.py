"""One training step of a tiny pruning model under composer's FSDP wrapping, on CPU (gloo).

Run by tests/trainer/test_fsdp.py as
`torchrun --nproc_per_node 2 tests/trainer/fsdp_step.py CONFIG OUT VARIANT...`:
composer's own `prepare_fsdp_module` wraps the model with the `fsdp_config` of CONFIG (a
real-scale yaml); composer asks for a CUDA device id there, so this process alone
answers the CPU for it. For each VARIANT in turn (one launch, one process group), rank 0
writes the structure, the loss and the full parameters after one AdamW step to
OUT/VARIANT.pt, for the test to compare with the same step without FSDP. Variants: `ce`;
`distillation`, where the model distils from a frozen teacher that `callbacks.shard_teacher`
shards as the training callback does (the file then also holds how much of it each rank
keeps); `lambda-ascent`, the multipliers by plain gradient ascent.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback

import torch
import torch.distributed as dist

#: variant -> build()'s (teacher, ascent)
VARIANTS = {"ce": (False, False), "distillation": (True, False), "lambda-ascent": (False, True)}


def main(config: str, out: str, variants: list[str]) -> None:
    dist.init_process_group("gloo")
    torch.cuda.current_device = lambda: torch.device("cpu")  # composer's device id, on CPU
    for variant in variants:
        one_step(config, f"{out}/{variant}.pt", *VARIANTS[variant])
    dist.destroy_process_group()


def one_step(config: str, out: str, teacher: bool, ascent: bool) -> None:
    from composer.distributed.dist_strategy import prepare_fsdp_module
    from composer.utils.parallelism import FSDPConfig
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from shearing.config import load_config
    from shearing.models.decoder import DecoderLayer
    from shearing.trainer.callbacks import shard_teacher
    from tests.trainer.fsdp_reference import TOKENS, build, step

    rank = dist.get_rank()
    fsdp = dict(load_config(config, ["model.path=unused", "data.path=unused"]).fsdp_config)
    model, optimizer = build(teacher, ascent)
    prepare_fsdp_module(model, optimizer, FSDPConfig(**fsdp), precision="fp32", device="cpu")
    units = [type(m.module).__name__ for m in model.modules() if isinstance(m, FSDP)]
    kept = []
    if teacher:
        full = sum(p.numel() for p in model.teacher.parameters())
        model.set_teacher(shard_teacher(model.teacher, fsdp, torch.device("cpu")))
        kept = [sum(p.numel() for p in model.teacher.parameters()), full]
        units += [f"teacher.{type(m.module).__name__}" for m in model.teacher.modules()
                  if isinstance(m, FSDP)]  # fmt: skip
    loss = step(model, optimizer, TOKENS[rank])
    losses = [None] * dist.get_world_size()
    dist.all_gather_object(losses, float(loss))
    teacher_kept = [None] * dist.get_world_size()
    dist.all_gather_object(teacher_kept, kept)
    with FSDP.summon_full_params(model.model):
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state_keys = list(model.state_dict())  # a collective under FSDP: every rank calls it
    checkpointed = sum(1 for m in model.modules() if type(m).__name__ == "CheckpointWrapper")
    if rank == 0:
        layers = sum(isinstance(m, DecoderLayer) for m in model.modules())
        torch.save(
            {"units": units, "losses": losses, "params": params,
             "checkpointed": checkpointed, "layers": layers, "teacher_kept": teacher_kept,
             "state_keys": state_keys},
            out,
        )  # fmt: skip
    # Tear down together and in order: no rank closes its connections or starts the next
    # variant while the other is still saving, and the FSDP modules (which hold the process
    # group) go before it.
    dist.barrier()
    del model, optimizer, params
    gc.collect()


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], sys.argv[3:])
    except BaseException:
        # Report the error itself, then leave without interpreter teardown: a process
        # group left alive at finalization can abort the process and bury the traceback.
        print(f"rank {os.environ.get('RANK')}:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
