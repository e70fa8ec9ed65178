"""Composer checkpoint -> stock Hugging Face model (`scripts/convert_to_hf.sh`).

    shearing convert CHECKPOINT OUT_DIR [--config CONFIG] [--dtype D] [--force]
                               [--gguf f32|f16|bf16|q8_0]

CHECKPOINT is a composer `*.pt` file or a run folder (then its latest checkpoint). For a
pruning run, the deterministic masks are applied and the weights sliced into a dense
model of exactly the target shape; for a plain run the weights are written as they are.
The run's `config.yaml` (next to the checkpoint, or `--config`) names the source model,
whose config and tokenizer are reused.

Before anything is moved into OUT_DIR, the written model is reloaded with
`transformers.AutoModelForCausalLM` (strictly) and its logits are compared with the
masked model's on a few random sequences; a mismatch fails loudly. The final masks and
their keep probabilities are written next to the model as `pruning_masks.json`, and
`shearing_run.json` records the unpruned source the model descends from (the default
distillation teacher of a run that continues from it), the checkpoint, and, for a pruning
run, the held-out loss of the masked model under its deterministic masks and under its
expected gates at its last evaluation (also printed: how far the gates had settled).
With `--gguf TYPE` the written model is also saved as `OUT_DIR/model-TYPE.gguf`
(`shearing.models.gguf_io`: llama.cpp's architecture of the family, with its tokenizer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from shearing.checkpoints import complete_checkpoints, load_state
from shearing.cli import CommandFailed, Stages, run
from shearing.config import KEYS as K
from shearing.config import load_config
from shearing.files import check_replaceable, check_separate, staged_output
from shearing.models.config import STOCK_ACTIVATIONS
from shearing.models.decoder import MaskableDecoder, Masks
from shearing.models.gguf_io import GGUF_TYPES, write_gguf
from shearing.models.hf_io import model_from_state_dict, write_pretrained
from shearing.pruning.finalize import masks_report, slice_model
from shearing.pruning.l0 import L0Module
from shearing.pruning.modules import MODULE_KEYS
from shearing.records import METRICS_FILE, SETTLE_KINDS, SETTLE_PREFIX
from shearing.run import PROVENANCE, Run, build_l0, provenance, resolve

CHECK_SEQS = 4
CHECK_LEN = 32
#: Logits must agree, relative to max(1, max |logit|), within CHECK_MAX_RTOL at every
#: position and CHECK_MEAN_RTOL on average. fp32 rounding differs between the masked model
#: (sums over every hidden dimension, the pruned ones zero) and the sliced one, and a
#: trained model amplifies it at a few positions: after 48 pruning steps of SmolLM2-135M,
#: 3.1e-4 at the worst of 128 positions, 8e-7 on average (in float64: 1.5e-12). A slicing
#: error (a wrong unit, head or layer) moves the logits at every position.
CHECK_MAX_RTOL = 1e-2
CHECK_MEAN_RTOL = 2e-5
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ConversionError(ValueError):
    """The conversion cannot proceed with its input (checkpoint, config)."""


class ConversionMismatch(CommandFailed):
    """The converted model does not reproduce the checkpoint's logits."""


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file `path` names: a `.pt` file or a run folder's latest checkpoint.

    In a run folder, a checkpoint left incomplete by an interrupted write is skipped with a
    warning and the latest complete one is used.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        found = complete_checkpoints(p)
        if found:
            return found[-1]
    raise ConversionError(
        f"{str(path)!r} is not a composer checkpoint file or a run folder with one"
    )


def checkpoint_step(state: dict) -> int | None:
    """The training step a composer checkpoint was written at (None if it does not say)."""
    try:
        return int(state["state"]["timestamp"]["Timestamp"]["batch"])
    except (KeyError, TypeError, ValueError):
        return None


def settle_losses(folder: Path, step: int | None) -> dict | None:
    """The last `eval/settle/*` record of a run's metrics.jsonl at or before `step`:
    {"step", "deterministic", "expected", "gap"}, or None (no such record)."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return None
    found = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interruption
        if SETTLE_PREFIX + "gap" in record and (step is None or (record["step"] or 0) <= step):
            found = {"step": record["step"]} | {k: record[SETTLE_PREFIX + k] for k in SETTLE_KINDS}
    return found


def load_checkpoint(ckpt: Path, run: Run) -> tuple[MaskableDecoder, L0Module | None]:
    """Rebuild the model (and L0 module) of a run from its checkpoint, on the CPU."""
    model, l0, _ = _load(ckpt, run)
    return model, l0


def _load(ckpt: Path, run: Run) -> tuple[MaskableDecoder, L0Module | None, int | None]:
    state = load_state(ckpt)
    try:
        weights = state["state"]["model"]
    except (KeyError, TypeError):
        raise ConversionError(f"{ckpt} is not a composer checkpoint (no state.model)") from None
    model_state = {k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.")}
    if not model_state:
        raise ConversionError(f"{ckpt} holds no model weights (a sharded FSDP checkpoint?)")
    # the run's model with its final activation (a scheduled threshold shift included)
    model = model_from_state_dict(run.source, model_state)
    l0 = build_l0(run)
    if l0 is None:
        return model, None, checkpoint_step(state)
    l0_state = {k[len("l0.") :]: v for k, v in weights.items() if k.startswith("l0.")}
    l0.load_state_dict(l0_state, strict=True)
    return model, l0, checkpoint_step(state)


@torch.no_grad()
def convert(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    config: str | Path | None = None,
    dtype: str | None = None,
    force: bool = False,
    gguf: str | None = None,
) -> Path:
    """Convert a checkpoint; see the module docstring. With `gguf` (a `GGUF_TYPES` name)
    the written model is also saved as `OUT_DIR/model-TYPE.gguf`.

    Raises:
        ConversionError: a missing checkpoint or config.
        ConversionMismatch: the written model's logits differ from the checkpoint's.
        OutputError: OUT_DIR is a file, overlaps an input, or is not empty without `force`.
        CheckpointError: the checkpoint is incomplete or holds more than tensors and data.
    """
    out = Path(out_dir).expanduser()
    check_replaceable(out, force, "OUT_DIR")
    check_separate(out, "OUT_DIR", {"CHECKPOINT": checkpoint, "--config": config})
    ckpt = find_checkpoint(checkpoint)
    cfg_path = Path(config) if config else ckpt.parent / "config.yaml"
    if not cfg_path.is_file():
        raise ConversionError(f"no run config at {cfg_path}; pass --config")
    run = resolve(load_config(cfg_path), with_data=False)
    check_separate(out, "OUT_DIR", {f"{K.model.path} of the run": run.model_path})
    stage = Stages("convert")
    stage(f"loading {ckpt}")
    model, l0, step = _load(ckpt, run)
    src = run.source_config
    dtype = dtype or str(src.get("dtype") or src.get("torch_dtype") or "float32")
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r} is not supported; use {', '.join(DTYPES)}")
    masks = l0.deterministic_masks() if l0 is not None else None
    scores = l0.scores() if l0 is not None else None
    record = provenance(run, checkpoint=str(ckpt.resolve()), step=step)
    if l0 is not None:
        settle = settle_losses(ckpt.parent, step)
        record["settle"] = settle
        print(settle_report(settle, step), flush=True)
    stage(f"slicing, writing and checking {out} against the checkpoint and transformers")
    out = export(
        model, masks, out, source=run.model_path, dtype=dtype, scores=scores, provenance=record
    )
    if gguf:
        stage(f"writing {out / f'model-{gguf}.gguf'}")
        write_gguf(out, out / f"model-{gguf}.gguf", gguf)
    stage("done")
    return out


def settle_report(settle: dict | None, step: int | None) -> str:
    """One line: the masked model's held-out loss under its deterministic masks (what is
    sliced) and under its expected gates, at the run's last evaluation."""
    if settle is None:
        return "settle: the run logged no evaluation of its masks (eval/settle/* in metrics.jsonl)"
    at = f"step {settle['step']}" + ("" if settle["step"] == step else f" of {step}")
    return (
        f"settle ({at}, held-out loss averaged over domains): {settle['deterministic']:.3f} "
        f"under the final deterministic masks (the model written), {settle['expected']:.3f} "
        f"under the expected gates; gap {settle['gap']:+.3f} nats"
    )


@torch.no_grad()
def export(
    model: MaskableDecoder,
    masks: Masks | None,
    out: Path,
    *,
    source: Path,
    dtype: str,
    scores: dict[str, torch.Tensor] | None = None,
    provenance: dict | None = None,
) -> Path:
    """Slice `model` by binary `masks` (if any) and write it to `out`, checked.

    The sliced model must reproduce the masked model's logits, and the written directory,
    reloaded strictly by transformers, the sliced model's; only then is `out` replaced.
    With masks, `pruning_masks.json` records them (and the gates' `scores`);
    `provenance` (if given) is written as `shearing_run.json`.
    """
    model.eval()
    final = slice_model(model, masks) if masks is not None else model
    ids = torch.randint(
        0,
        model.shape.vocab_size,
        (CHECK_SEQS, CHECK_LEN),
        generator=torch.Generator().manual_seed(0),
    )
    _check(final(ids), model(ids, masks=masks), "sliced model vs masked model")

    with staged_output(out, force=True, flag="OUT_DIR") as tmp:
        write_pretrained(final, tmp, source=source, dtype=DTYPES[dtype])
        if masks is not None:
            report = masks_report(masks, scores)
            report["target"] = {k: getattr(final.shape, k) for k in MODULE_KEYS.values()}
            (tmp / "pruning_masks.json").write_text(json.dumps(report) + "\n")
        if provenance is not None:
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        _check_with_transformers(tmp, final, ids, DTYPES[dtype])
    return out


def _check(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Raise ConversionMismatch unless the logits agree (see CHECK_MAX_RTOL)."""
    diff = (actual.float() - expected.float()).abs()
    scale = max(1.0, expected.float().abs().max().item())
    worst, mean = diff.max().item(), diff.mean().item()
    if not (worst <= CHECK_MAX_RTOL * scale and mean <= CHECK_MEAN_RTOL * scale):
        raise ConversionMismatch(
            f"{what}: logits differ by up to {worst:.3g} (mean {mean:.3g}); allowed up to "
            f"{CHECK_MAX_RTOL * scale:.3g} (mean {CHECK_MEAN_RTOL * scale:.3g})"
        )


def _check_with_transformers(path: Path, final: MaskableDecoder, ids: torch.Tensor, dtype) -> None:
    """Reload `path` strictly with transformers; its logits must equal `final`'s (same rounding)."""
    from transformers import AutoModelForCausalLM

    remote = final.shape.hidden_act not in STOCK_ACTIVATIONS  # ships modeling_shearing.py
    hf, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True, trust_remote_code=remote
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ConversionMismatch(f"transformers reports loading problems: {problems}")
    rounded = model_from_state_dict(
        final.shape, {k: v.to(dtype).float() for k, v in final.state_dict().items()}
    )
    _check(hf.eval()(ids).logits, rounded(ids), "transformers reload vs converted model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/convert_to_hf.sh",
        description=__doc__.split("\n\n")[0],
        epilog="output: OUT_DIR, a stock Hugging Face model of the run's final shape "
        "(config.json, safetensors, the tokenizer, pruning_masks.json, shearing_run.json), "
        "checked against the masked model before it is moved into place; with --gguf also "
        "OUT_DIR/model-TYPE.gguf. Never written over without --force.",
    )
    parser.add_argument("checkpoint", help="composer .pt file or run folder")
    parser.add_argument("out_dir", help="output Hugging Face directory")
    parser.add_argument("--config", help="run config (default: config.yaml next to the checkpoint)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="weights dtype (default: source's)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument(
        "--gguf", choices=GGUF_TYPES, help="also write OUT_DIR/model-TYPE.gguf for llama.cpp"
    )
    args = parser.parse_args(argv)

    def body() -> None:
        out = convert(
            args.checkpoint, args.out_dir, config=args.config, dtype=args.dtype,
            force=args.force, gguf=args.gguf,
        )  # fmt: skip
        print(out)

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
