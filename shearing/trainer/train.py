"""Pruning, continued pretraining and sparsification with composer.

    composer train.py yaml/prune_smollm2.yaml [key=value ...]   # all local GPUs / processes
    python train.py yaml/prune_smollm2.yaml [key=value ...]     # one process
    shearing train yaml/prune_smollm2.yaml [key=value ...]      # the same, installed command

Overrides use OmegaConf dot-list syntax (`max_duration=12ba save_folder=/tmp/run`).
This file only wires: config -> resolved run (shearing.run) -> model, data, optimizer,
schedule, callbacks (shearing.trainer.build, shearing.trainer.callbacks) -> composer's Trainer.fit.
"""

from __future__ import annotations

import logging
import sys

from composer import Trainer
from composer.utils import dist, reproducibility

from shearing import cli
from shearing.checkpoints import install_composer_validation
from shearing.config import load_config, to_yaml
from shearing.files import write_text_atomic
from shearing.run import recorded, resolve, target_line
from shearing.trainer.build import build_dataloaders, build_model, build_optimizer, build_scheduler
from shearing.trainer.callbacks import (
    DomainEvalLogger,
    JSONLinesLogger,
    ReplicatedGradSync,
    TeacherPlacement,
    TrainingStateCallback,
    WeightGradClipping,
)
from shearing.trainer.dynamic import DynamicLoadingCallback
from shearing.trainer.folder import discard_overwritten, prepare_save_folder
from shearing.trainer.parts import SECTIONS, build_parts


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ready: dict = {}

    def setup() -> None:  # every refusal here is one line, before or while weights load
        cfg = load_config(argv[0], argv[1:])
        run = resolve(cfg, world_size=dist.get_world_size())
        level = cfg.python_log_level.upper()
        logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("shearing").setLevel(level)
        ready["parts"] = {k: build_parts(k, getattr(cfg, k)) for k in SECTIONS}
        ready["folder"] = prepare_save_folder(run)
        install_composer_validation()  # composer's autoresume load checks files first
        reproducibility.seed_all(cfg.seed)
        ready["model"] = build_model(run)
        ready["run"] = run

    code = cli.run(setup)
    if code:
        return code
    run, cfg, save_folder, model = ready["run"], ready["run"].cfg, ready["folder"], ready["model"]
    parts = ready["parts"]
    if target_line(run) and dist.get_global_rank() == 0:
        print(target_line(run), flush=True)
    train_loader, eval_loader = build_dataloaders(run)
    optimizer = build_optimizer(run, model)
    scheduler = build_scheduler(run, optimizer)

    d, steps = cfg.data, run.steps
    callbacks = [
        DomainEvalLogger(),
        DynamicLoadingCallback(
            train_loader.dataset,
            run.data.reference_losses,
            steps.update_interval,
            eta=d.eta,
            smoothing=d.smoothing,
            clip=d.clip_delta,
            update_type=d.update_type,
            history_dir=save_folder,
        ),
        TrainingStateCallback(),
    ]
    if model.teacher is not None:
        callbacks.append(TeacherPlacement(dict(cfg.fsdp_config) if cfg.fsdp_config else None))
    if cfg.fsdp_config:
        callbacks.append(ReplicatedGradSync())
    if cfg.max_grad_norm is not None:
        callbacks.append(WeightGradClipping(cfg.max_grad_norm))

    callbacks += parts["callbacks"]
    loggers = [] if save_folder is None else [JSONLinesLogger(save_folder / "metrics.jsonl")]
    loggers += parts["loggers"]
    trainer = Trainer(
        loggers=loggers,
        algorithms=parts["algorithms"],
        model=model,
        run_name=cfg.run_name,
        seed=cfg.seed,
        train_dataloader=train_loader,
        eval_dataloader=eval_loader,
        eval_interval=f"{steps.eval_interval}ba",
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=f"{steps.total}ba",
        optimizers=optimizer,
        schedulers=scheduler,
        step_schedulers_every_batch=True,
        device_train_microbatch_size=(
            cfg.device_train_microbatch_size or cfg.global_train_batch_size // dist.get_world_size()
        ),
        precision="fp32" if model.cpu_bf16 else cfg.precision,
        parallelism_config={"fsdp": dict(cfg.fsdp_config)} if cfg.fsdp_config else None,
        callbacks=callbacks,
        save_folder=None if save_folder is None else str(save_folder),
        save_interval=f"{steps.save_interval}ba",
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        autoresume=cfg.autoresume,
        load_path=cfg.load_path,
        load_weights_only=cfg.load_weights_only,
        save_overwrite=cfg.save_overwrite,
        dist_timeout=cfg.dist_timeout,
        python_log_level=cfg.python_log_level.lower(),
        progress_bar=cfg.progress_bar,
        log_to_console=cfg.log_to_console,
        console_log_interval=f"{steps.console_log_interval}ba",
    )
    done = int(trainer.state.timestamp.batch.value)
    if done >= steps.total:  # autoresume of a finished run: nothing to train or write
        print(f"{save_folder} already holds the finished run ({done} of {steps.total} steps)")
        trainer.close()
        return 0
    # Records only once composer has accepted the folder (and resumed, if it does).
    if save_folder is not None and dist.get_global_rank() == 0:
        write_text_atomic(save_folder / "config.yaml", to_yaml(recorded(run)))
    if cfg.eval_first and done == 0:
        trainer.eval()
    trainer.fit()
    trainer.close()
    if save_folder is not None and dist.get_global_rank() == 0:
        discard_overwritten(save_folder)  # the replaced run, now that its successor is whole
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
