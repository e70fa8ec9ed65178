"""Every bad input in docs/bad-inputs.md: the exact one-line error, and nothing on disk changed.

Each row runs a command's real `main()` in-process with the bad argument, then checks that
the command failed, printed exactly the expected `error: ...` line (argparse's own errors:
usage, then that line), and that no file under the workspace, the test folder or the
repository's yaml/ changed, appeared or disappeared (hidden ones included).

`python tests/test_bad_inputs.py` prints the table of docs/bad-inputs.md from these rows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


#: A maker of a file or folder a row needs: (its path, the row's context) -> None.
Maker = Callable[[Path, dict], None]


@dataclass(frozen=True)
class Row:
    """A bad input: command, arguments ({ws}, {tmp}, {run}... are filled in) and error."""

    command: str
    what: str
    args: tuple[str, ...]
    error: str
    #: Files to make first: path under {tmp} -> its maker (a function below).
    setup: dict[str, Maker] = field(default_factory=dict)
    #: Environment variables for the call (filled in like the arguments).
    env: dict[str, str] = field(default_factory=dict)


def _train_main(argv):
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _main(module_name):
    def run(argv):
        return importlib.import_module(module_name).main(argv)

    return run


COMMANDS = {
    "train.py": _train_main,
    "tokenize.py": _main("shearing.data.prep"),
    "convert_to_hf.sh": _main("shearing.commands.convert"),
    "shearing eval": _main("shearing.commands.eval"),
    "shearing sparsity": _main("shearing.commands.sparsity"),
    "shearing generate": _main("shearing.commands.generate"),
    "shearing oneshot": _main("shearing.commands.oneshot"),
}

#: The supported model types, as the refusal of another architecture lists them.
FAMILY_LIST = (
    "llama, internlm3, mistral, ministral3, qwen2, qwen3, gemma2, gemma3_text, phi3, olmo2, "
    "granite, granite_swa, smollm3, gemma4_text"
)
TINY = ("yaml/tiny_prune.yaml", "model.path={model}", "data.path={data}")


# --- files the rows need -------------------------------------------------------------


class Evil:
    """Unpickled by a full `torch.load`, this creates the file MARKER: code from a checkpoint."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def text(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user data\n")


def another_manifest(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"another": "corpus"}\n')


def cut_off_upload(path: Path, ctx: dict) -> None:
    """A shard in the object store under the prefix named by `path`'s name, no manifest."""
    ctx["s3"].client().put_object(Bucket="corpora", Key=f"{path.name}/train/a/shard.00000.mds")


def run_in_store(path: Path, ctx: dict) -> None:
    """A run's config in the object store, under runs/ + `path`'s name."""
    client = ctx["s3"].client()
    if "runs" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket="runs")
    client.put_object(Bucket="runs", Key=f"{path.name}/config.yaml", Body=b"seed: 1\n")


def recipe_missing_base(path: Path, ctx: dict) -> None:
    path.write_text("base: [nope.yaml]\nmax_duration: 5ba\n")


def bad_yaml(path: Path, ctx: dict) -> None:
    path.write_text("model:\n  path: [unclosed\n x: : :\n")


def full(path: Path, ctx: dict) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("user data\n")


def empty_dir(path: Path, ctx: dict) -> None:
    path.mkdir()


def config_of(model_type: str):
    """A maker of a config.json of another architecture, no weights."""

    def make(path: Path, ctx: dict) -> None:
        path.mkdir()
        shape = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
                 "num_hidden_layers": 2, "num_attention_heads": 4}  # fmt: skip
        config = {"model_type": model_type, **shape}
        (path / "config.json").write_text(json.dumps(config))

    return make


def bad_config_json(path: Path, ctx: dict) -> None:
    path.mkdir()
    (path / "config.json").write_text("")


def truncated_safetensors(path: Path, ctx: dict) -> None:
    shutil.copytree(ctx["model"], path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:7])


def latin1_jsonl(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9 \xff"}\n')


def plain_as_gz(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"text": "not compressed"}\n')


def truncated_gz(path: Path, ctx: dict) -> None:
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(b'{"text": "a b c d e f g"}\n' * 200)
    path.write_bytes(data[: len(data) // 2])


def not_json(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text: not json\n")


def no_text(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"content": "no text field"}\n')


def random_checkpoint(path: Path, ctx: dict) -> None:
    path.mkdir()
    (path / "ep0-ba2-rank0.pt").write_bytes(bytes(range(256)) * 64)
    shutil.copy2(ctx["run"] / "config.yaml", path / "config.yaml")


def truncated_checkpoint(path: Path, ctx: dict) -> None:
    path.mkdir()
    whole = sorted(ctx["run"].glob("ep*-ba*-rank0.pt"))[-1].read_bytes()
    (path / "ep0-ba2-rank0.pt").write_bytes(whole[: len(whole) // 2])
    shutil.copy2(ctx["run"] / "config.yaml", path / "config.yaml")


def evil_run(path: Path, ctx: dict) -> None:
    import torch

    path.mkdir()
    Evil.marker = ctx["tmp"] / "PWNED"
    torch.save({"state": {"model": Evil()}}, path / "ep0-ba2-rank0.pt")
    (path / "latest-rank0.pt").symlink_to("ep0-ba2-rank0.pt")
    shutil.copy2(ctx["run"] / "config.yaml", path / "config.yaml")


def weights_only_file(path: Path, ctx: dict) -> None:
    import torch

    path.mkdir()
    torch.save({"weights": torch.zeros(3)}, path / "ep0-ba2-rank0.pt")
    shutil.copy2(ctx["run"] / "config.yaml", path / "config.yaml")


def other_corpus_position(path: Path, ctx: dict) -> None:
    """A finished run's record, from another corpus."""
    path.mkdir()
    record = json.loads((ctx["run"] / "data_position.json").read_text())
    record["train_rows"]["alpha"] = 7
    (path / "data_position.json").write_text(json.dumps(record))


def partial_position(path: Path, ctx: dict) -> None:
    """A finished run's record, one domain's size deleted."""
    path.mkdir()
    record = json.loads((ctx["run"] / "data_position.json").read_text())
    del record["train_rows"]["alpha"]
    (path / "data_position.json").write_text(json.dumps(record))


def remove(path: Path, ctx: dict) -> None:
    path.unlink()


def bad_gguf(path: Path, ctx: dict) -> None:
    path.write_bytes(b"GGUF" + bytes(20))


def no_eval_corpus(path: Path, ctx: dict) -> None:
    from shearing.data.prep import main as tokenize_main

    args = ["--input", str(ctx["corpus"]), "--output", str(path), "--tokenizer"]
    assert tokenize_main([*args, str(ctx["tokenizer"]), "--seq-len", "32", "--eval-seqs", "0"]) == 0


# --- the tables: one per command, each row a call with named fields ---------------------
#: Each command's own arguments, before a row's `args` (a row may replace them: `base=`).
TOKENIZE_BASE = ("--input", "{corpus}", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}")
MODEL_BASE = ("--model", "{model}", "--data", "{data}")


def _row(command: str, base: tuple, what: str, args: tuple, error: str, setup, env=None) -> Row:
    return Row(command, what, (*base, *args), error, dict(setup or {}), dict(env or {}))


def train(*, what: str, error: str, args=(), setup=None, base: tuple = TINY, env=None) -> Row:
    return _row("train.py", base, what, args, error, setup, env)


def tokenize(*, what, error, args=(), setup=None, base=TOKENIZE_BASE, env=None) -> Row:
    return _row("tokenize.py", base, what, args, error, setup, env)


def convert(*, what, error, args=(), setup=None) -> Row:
    return _row("convert_to_hf.sh", (), what, args, error, setup)


def evaluate(*, what, error, args=(), setup=None, base=MODEL_BASE) -> Row:
    return _row("shearing eval", base, what, args, error, setup)


def sparsity(*, what, error, args=(), setup=None, base=MODEL_BASE) -> Row:
    return _row("shearing sparsity", base, what, args, error, setup)


def generate(*, what, error, args=(), setup=None, base=MODEL_BASE) -> Row:
    return _row("shearing generate", base, what, args, error, setup)


def oneshot(*, what, error, args=(), setup=None, config="yaml/tiny_prune.yaml") -> Row:
    base = ("--config", config, "--method", "random", "--out", "{tmp}/out")
    return _row("shearing oneshot", base, what, (*args, "model.path={model}", "data.path={data}"),
                error, setup)  # fmt: skip


TRAIN_ROWS = [
    train(
        what="config file that does not exist",
        base=("yaml/nope.yaml",),
        error="error: config file 'yaml/nope.yaml' does not exist",
    ),
    train(
        what="config file that is not YAML",
        base=("{tmp}/bad.yaml",),
        setup={"bad.yaml": bad_yaml},
        error=(
            "error: config file '{tmp}/bad.yaml' is not valid YAML (while parsing a flow sequence)"
        ),
    ),
    train(
        what="recipe whose base file does not exist",
        base=("{tmp}/recipe.yaml",),
        setup={"recipe.yaml": recipe_missing_base},
        error="error: base 'nope.yaml' named by {tmp}/recipe.yaml does not exist ({tmp}/nope.yaml)",
    ),
    train(
        what="unknown top-level key",
        args=("bogus=1",),
        error="error: unknown config key 'bogus'",
    ),
    train(
        what="unknown nested key",
        args=("model.l0_module.bogus=1",),
        error="error: unknown config key 'model.l0_module.bogus'",
    ),
    train(
        what="composer logger that is not known",
        args=("loggers.weights_and_biases.project=p",),
        error=(
            "error: loggers.weights_and_biases is not known; use one of wandb, tensorboard, "
            "mlflow, file, inmemory, in_memory_logger, comet_ml, neptune, slack, "
            "remote_uploader_downloader or an import path package.module:Class"
        ),
    ),
    train(
        what="composer callback argument it does not take",
        args=("callbacks.lr_monitor.window=5",),
        error=(
            "error: callbacks.lr_monitor: got an unexpected keyword argument 'window'; its "
            "arguments are none"
        ),
    ),
    train(
        what="composer section that is not a mapping",
        args=("callbacks=[lr_monitor]",),
        error="error: config key 'callbacks' must be a mapping, not ['lr_monitor']",
    ),
    train(
        what="load_path that is not a file",
        args=("load_path={tmp}/nope.pt",),
        error=(
            "error: load_path='{tmp}/nope.pt' is not a checkpoint file (a local path or an "
            "object-store URI such as s3://bucket/ep1-ba100-rank0.pt)"
        ),
    ),
    train(
        what="python log level that is not a level",
        args=("python_log_level=loud",),
        error=(
            "error: python_log_level='loud' is not valid; use debug, info, warning, error, critical"
        ),
    ),
    train(
        what="save_overwrite with autoresume",
        args=("save_overwrite=true", "autoresume=true", "run_name=r", "save_folder={tmp}/run"),
        error=(
            "error: save_overwrite=true with autoresume=true: autoresume continues the run in "
            "save_folder, save_overwrite replaces it; keep one"
        ),
    ),
    train(
        what="duration in a unit composer does not define",
        args=("model.l0_module.lagrangian_warmup_steps=3days",),
        error=(
            "error: model.l0_module.lagrangian_warmup_steps='3days' is not a duration; use N or "
            "Nba (steps), Nsp, Ntok or X.Ydur"
        ),
    ),
    train(
        what="wrong type",
        args=("seed=abc",),
        error=(
            "error: config key 'seed': Value 'abc' of type 'str' could not be converted to Integer"
        ),
    ),
    train(
        what="required key left empty",
        base=("yaml/tiny_prune.yaml", "data.path={data}"),
        error="error: config key 'model.path' is required and has no value",
    ),
    train(
        what="no corpus",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        error=(
            "error: the corpus is not set: give data.path (a local folder) or data.remote with "
            "data.local (object storage and this node's cache folder)"
        ),
    ),
    train(
        what="two corpora",
        args=("data.remote=s3://bucket/corpus", "data.local={tmp}/cache"),
        error="error: data.path and data.remote are both set; a run reads one corpus: keep one",
    ),
    train(
        what="remote corpus without a cache",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote=s3://bucket/corpus",),
        error=(
            "error: data.remote='s3://bucket/corpus' needs data.local: the folder on each node "
            "that caches its shards"
        ),
    ),
    train(
        what="cache without a remote corpus",
        args=("data.local={tmp}/cache",),
        error=(
            "error: data.local is set without data.remote; it caches a remote corpus (a local "
            "data.path is read in place): remove it"
        ),
    ),
    train(
        what="cache limit not a size",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote=s3://bucket/corpus", "data.local={tmp}/cache", "data.cache_limit=lots"),
        error=(
            "error: data.cache_limit='lots' is not valid; give a positive size: bytes, or a "
            'number with kb, mb, gb or tb ("500gb")'
        ),
    ),
    train(
        what="remote corpus without a manifest",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote=s3://corpora/nothing", "data.local={tmp}/cache"),
        error=(
            "error: data.remote 's3://corpora/nothing' has no manifest.json (not a corpus "
            "written by data_prep/tokenize.py --output s3://corpora/nothing)"
        ),
    ),
    train(
        what="remote corpus unreachable",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote={remote}", "data.local={tmp}/cache"),
        env={"S3_ENDPOINT_URL": "http://127.0.0.1:9"},  # nothing listens on port 9
        error=(
            "error: data.remote 's3://corpora/tiny' cannot be read: Could not connect to the "
            'endpoint URL: "http://127.0.0.1:9/corpora/tiny/manifest.json"'
        ),
    ),
    train(
        what="cache folder not writable",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote={remote}", "data.local=/sys/shearing-cache"),
        error=(
            "error: data.local '/sys/shearing-cache' cannot be written (it is read-only here); "
            "choose a folder this node can write"
        ),
    ),
    train(
        what="cache folder of another corpus",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote={remote}", "data.local={tmp}/cache"),
        setup={"cache/manifest.json": another_manifest},
        error=(
            "error: data.local '{tmp}/cache' caches another corpus than data.remote "
            "'s3://corpora/tiny' (their manifest.json differ); empty it or choose another folder"
        ),
    ),
    train(
        what="save folder in object storage unreachable",
        args=("save_folder=s3://runs/new",),
        env={"S3_ENDPOINT_URL": "http://127.0.0.1:9"},
        error=(
            "error: save_folder 's3://runs/new' cannot be reached (Could not connect to the "
            'endpoint URL: "http://127.0.0.1:9/runs?list-type=2&prefix=new%2F&encoding-type=url")'
        ),
    ),
    train(
        what="save_overwrite of a run in object storage",
        args=("save_folder=s3://runs/held", "save_overwrite=true"),
        setup={"held": run_in_store},
        error=(
            "error: save_overwrite=true with save_folder 's3://runs/held', which holds a run: a "
            "run in object storage is not replaced in place, object by object; choose a new "
            "folder"
        ),
    ),
    train(
        what="no download attempts",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
        args=("data.remote=s3://bucket/corpus", "data.local={tmp}/cache", "data.download_retry=0"),
        error=(
            "error: data.download_retry=0 and data.download_timeout=60.0 must be at least 1 "
            "attempt and a positive number of seconds"
        ),
    ),
    train(
        what="zero steps",
        args=("max_duration=0ba",),
        error="error: max_duration=0ba must be at least 1 step",
    ),
    train(
        what="negative steps",
        args=("max_duration=-2ba",),
        error="error: max_duration=-2ba must be at least 1 step",
    ),
    train(
        what="epochs on an endless train set",
        args=("max_duration=1ep",),
        error=(
            "error: max_duration='1ep': epochs are not defined (training draws from an endless "
            "mixture of domains); use N or Nba (steps), Nsp or Ntok"
        ),
    ),
    train(
        what="not a duration",
        args=("max_duration=soon",),
        error="error: max_duration='soon' is not a duration; use N or Nba (steps), Nsp or Ntok",
    ),
    train(
        what="no batch",
        args=("global_train_batch_size=0",),
        error="error: global_train_batch_size=0 must be positive",
    ),
    train(
        what="microbatch that does not divide the batch",
        args=("global_train_batch_size=3", "device_train_microbatch_size=2"),
        error=(
            "error: device_train_microbatch_size=2 must be a positive divisor of the per-device "
            "batch 3 (global_train_batch_size=3 over 1 process(es))"
        ),
    ),
    train(
        what="zero microbatch",
        args=("device_train_microbatch_size=0",),
        error=(
            "error: device_train_microbatch_size=0 must be a positive divisor of the per-device "
            "batch 4 (global_train_batch_size=4 over 1 process(es))"
        ),
    ),
    train(
        what="zero eval interval",
        args=("eval_interval=0ba",),
        error="error: eval_interval=0ba must be at least 1 step",
    ),
    train(
        what="eval interval in epochs",
        args=("eval_interval=1ep",),
        error=(
            "error: eval_interval='1ep': epochs are not defined (training draws from an endless "
            "mixture of domains); use N or Nba (steps), Nsp, Ntok or X.Ydur"
        ),
    ),
    train(
        what="zero save interval",
        args=("save_interval=0ba",),
        error="error: save_interval=0ba must be at least 1 step",
    ),
    train(
        what="zero console interval",
        args=("console_log_interval=0ba",),
        error="error: console_log_interval=0ba must be at least 1 step",
    ),
    train(
        what="unknown precision",
        args=("precision=fp8",),
        error="error: precision='fp8' is not valid; use fp32, amp_bf16, amp_fp16",
    ),
    train(
        what="warmup longer than the run",
        args=("scheduler.t_warmup=999ba",),
        error="error: scheduler.t_warmup=999ba is longer than the run (300 steps)",
    ),
    train(
        what="negative warmup",
        args=("scheduler.t_warmup=-1ba",),
        error="error: scheduler.t_warmup=-1ba must not be negative",
    ),
    train(
        what="negative schedule start",
        args=("scheduler.t_start=-1ba",),
        error="error: scheduler.t_start=-1ba must not be negative",
    ),
    train(
        what="run begins after its schedule ends",
        args=("scheduler.t_start=100ba", "scheduler.t_max=100ba"),
        error=(
            "error: scheduler.t_max=100ba must be longer than scheduler.t_start (100 steps): the "
            "run would begin after its schedule ended"
        ),
    ),
    train(
        what="warmup longer than a shared schedule",
        args=("scheduler.t_warmup=50ba", "scheduler.t_max=40ba"),
        error=(
            "error: scheduler.t_warmup=50ba is longer than its schedule (40 steps from the "
            "schedule's start)"
        ),
    ),
    train(
        what="final lr factor above 1",
        args=("scheduler.alpha_f=2",),
        error="error: scheduler.alpha_f=2.0 is not valid; it must be in [0, 1]",
    ),
    train(
        what="negative lr",
        args=("optimizer.lr=-1",),
        error="error: optimizer.lr=-1.0 is not valid; it must be 0 or more",
    ),
    train(
        what="negative gate lr",
        args=("optimizer.l0_lr=-1",),
        error="error: optimizer.l0_lr=-1.0 is not valid; it must be 0 or more",
    ),
    train(
        what="zero multiplier ascent rate",
        args=("optimizer.lambda_ascent_lr=0",),
        error=(
            "error: optimizer.lambda_ascent_lr=0.0 is not valid; it must be positive, or null "
            "(AdamW)"
        ),
    ),
    train(
        what="multiplier ascent rate without pruning",
        args=("model.l0_module=null", "optimizer.lambda_ascent_lr=1"),
        error=(
            "error: optimizer.lambda_ascent_lr=1.0 needs model.l0_module (it steps a pruning "
            "run's Lagrange multipliers); remove it here"
        ),
    ),
    train(
        what="one beta",
        args=("optimizer.betas=[0.9]",),
        error="error: optimizer.betas=[0.9] is not valid; it must be two values in [0, 1)",
    ),
    train(
        what="zero eps",
        args=("optimizer.eps=0",),
        error="error: optimizer.eps=0.0 is not valid; it must be positive",
    ),
    train(
        what="negative weight decay",
        args=("optimizer.weight_decay=-0.1",),
        error="error: optimizer.weight_decay=-0.1 is not valid; it must be 0 or more",
    ),
    train(
        what="zero eval batch",
        args=("device_eval_batch_size=0",),
        error="error: device_eval_batch_size=0 is not valid; it must be a positive integer",
    ),
    train(
        what="checkpoints to keep below -1",
        args=("save_num_checkpoints_to_keep=-3",),
        error=(
            "error: save_num_checkpoints_to_keep=-3 is not valid; it must be -1 (keep all) or more"
        ),
    ),
    train(
        what="zero gradient clip",
        args=("max_grad_norm=0",),
        error="error: max_grad_norm=0.0 is not valid; it must be positive, or null (no clipping)",
    ),
    train(
        what="source model that does not exist",
        args=("model.path={tmp}/nope",),
        error=(
            "error: model.path: model path '{tmp}/nope' is not a model: expected a Hugging Face "
            "directory (config.json + safetensors or .bin weights) or a .gguf file"
        ),
    ),
    train(
        what="source config.json that is not JSON",
        args=("model.path={tmp}/badjson",),
        setup={"badjson": bad_config_json},
        error=(
            "error: model.path: '{tmp}/badjson/config.json' is not valid JSON (Expecting value: "
            "line 1 column 1 (char 0))"
        ),
    ),
    train(
        what="mixture-of-experts source",
        args=("model.path={tmp}/moe",),
        setup={"moe": config_of("mixtral")},
        error=(
            "error: model.path: model_type='mixtral' is not supported (a mixture-of-experts model "
            "(routed expert FFNs)); supported: " + FAMILY_LIST
        ),
    ),
    train(
        what="multimodal source",
        args=("model.path={tmp}/vlm",),
        setup={"vlm": config_of("gemma3")},
        error=(
            "error: model.path: model_type='gemma3' is not supported (a multimodal model (its "
            "text decoder alone, e.g. gemma3_text, can be pruned)); supported: " + FAMILY_LIST
        ),
    ),
    train(
        what="linear-attention source",
        args=("model.path={tmp}/hybrid",),
        setup={"hybrid": config_of("qwen3_5")},
        error=(
            "error: model.path: model_type='qwen3_5' is not supported (a model with "
            "linear-attention or state-space layers); supported: " + FAMILY_LIST
        ),
    ),
    train(
        what="truncated safetensors",
        args=("model.path={tmp}/trunc",),
        setup={"trunc": truncated_safetensors},
        error=(
            "error: weights file '{tmp}/trunc/model.safetensors' is truncated or corrupt "
            "(SafetensorError: Error while deserializing header: header too small)"
        ),
    ),
    train(
        what="corpus that does not exist",
        args=("data.path={tmp}/nope",),
        error=(
            "error: data.path '{tmp}/nope' has no manifest.json; tokenize a corpus with "
            "data_prep/tokenize.py first"
        ),
    ),
    train(
        what="domain not in the corpus",
        args=("data.domains=[zeta]",),
        error=(
            "error: data.domains entry 'zeta' is not in the corpus; available: alpha, beta, gamma"
        ),
    ),
    train(
        what="proportions of the wrong length",
        args=("data.proportions=[0.5,0.5]",),
        error="error: data.proportions has 2 values for 3 domains",
    ),
    train(
        what="negative proportion",
        args=("data.proportions=[-0.2,0.6,0.6]",),
        error="error: data.proportions=[-0.2, 0.6, 0.6] has a negative value",
    ),
    train(
        what="proportions that do not sum to 1",
        args=("data.proportions=[0.2,0.2,0.2]",),
        error="error: data.proportions sum to 0.60000000, not 1",
    ),
    train(
        what="proportions and proportions_from",
        args=("data.proportions=[0.2,0.3,0.5]", "data.proportions_from={run}"),
        error="error: data.proportions and data.proportions_from are both set; keep one",
    ),
    train(
        what="proportions_from a folder with no history",
        args=("data.proportions_from={tmp}",),
        error="error: data.proportions_from '{tmp}' has no domain history",
    ),
    train(
        what="rows_from a folder with no position record",
        args=("data.rows_from={tmp}",),
        error=(
            "error: data.rows_from '{tmp}' has no data_position.json (a training run writes it "
            "into its save_folder when it finishes)"
        ),
    ),
    train(
        what="rows_from a position record that is not one",
        args=("data.rows_from={tmp}/data_position.json",),
        setup={"data_position.json": text},
        error=(
            "error: data.rows_from '{tmp}/data_position.json': data_position.json is not a "
            "position record this project wrote (row_seed, rows, train_rows)"
        ),
    ),
    train(
        what="rows_from a run on another corpus",
        args=("data.rows_from={tmp}/other",),
        setup={"other": other_corpus_position},
        error=(
            "error: data.rows_from '{tmp}/other' read another corpus: domain 'alpha' had 7 "
            "training rows there, {alpha_rows} in '{data}'"
        ),
    ),
    train(
        what="rows_from a position record whose domains disagree",
        args=("data.rows_from={tmp}/partial",),
        setup={"partial": partial_position},
        error=(
            "error: data.rows_from '{tmp}/partial': data_position.json is not a position record "
            "this project wrote (row_seed, rows, train_rows)"
        ),
    ),
    train(
        what="reference losses of the wrong length",
        args=("data.reference_losses=[1.0,2.0]",),
        error="error: data.reference_losses has 2 values for 3 domains",
    ),
    train(
        what="non-positive reference loss",
        args=("data.reference_losses=[0.0,1.0,1.0]",),
        error="error: data.reference_losses=[0.0, 1.0, 1.0] must all be positive",
    ),
    train(
        what="updates without reference losses",
        args=("data.update_interval=150",),
        error="error: data.update_interval is set but data.reference_losses is not",
    ),
    train(
        what="updates between evaluations",
        args=("data.update_interval=100", "data.reference_losses=[1.0,1.0,1.0]"),
        error=(
            "error: data.update_interval=100 is not a multiple of eval_interval=150ba; updates "
            "need a fresh evaluation"
        ),
    ),
    train(
        what="zero update interval",
        args=("data.update_interval=0",),
        error="error: data.update_interval=0 must be positive",
    ),
    train(
        what="unknown update type",
        args=("data.update_type=linear",),
        error="error: data.update_type='linear' is not valid; use exponential, constant",
    ),
    train(
        what="smoothing above 1",
        args=(
            "data.update_interval=150",
            "data.reference_losses=[1.0,1.0,1.0]",
            "data.smoothing=2",
        ),
        error="error: data.smoothing=2.0 must be in [0, 1]",
    ),
    train(
        what="negative workers",
        args=("data.num_workers=-1",),
        error="error: data.num_workers=-1 is not valid; it must be 0 or more",
    ),
    train(
        what="zero eval rows",
        args=("data.eval_max_rows=0",),
        error="error: data.eval_max_rows=0 is not valid; it must be positive, or null (all rows)",
    ),
    train(
        what="zero step size",
        args=("data.eta=0",),
        error="error: data.eta=0.0 is not valid; it must be positive",
    ),
    train(
        what="target larger than the source",
        args=("model.l0_module.target_model.num_hidden_layers=9",),
        error=(
            "error: model.l0_module.target_model.num_hidden_layers=9 is larger than the source's 3"
        ),
    ),
    train(
        what="target key that is not prunable",
        args=("model.l0_module.target_model.vocab_size=10",),
        error=(
            "error: model.l0_module.target_model.vocab_size is not a prunable dimension; valid: "
            "num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, "
            "intermediate_size"
        ),
    ),
    train(
        what="zero-sized target",
        args=("model.l0_module.target_model.hidden_size=0",),
        error="error: model.l0_module.target_model.hidden_size=0 must be a positive integer",
    ),
    train(
        what="heads not a multiple of kv heads",
        args=(
            "model.l0_module.target_model.num_attention_heads=3",
            "model.l0_module.target_model.num_key_value_heads=2",
        ),
        error=(
            "error: model.l0_module.target_model.num_attention_heads=3 is not a multiple of "
            "num_key_value_heads=2"
        ),
    ),
    train(
        what="target shape the exported config class refuses",
        args=("model.l0_module.target_model.hidden_size=23",),
        error=(
            "error: model.l0_module.target_model (num_hidden_layers=2, hidden_size=23, "
            "num_attention_heads=2, num_key_value_heads=1, intermediate_size=32) cannot be "
            "exported: transformers' LlamaConfig refuses it (The hidden size (23) is not a "
            "multiple of the number of attention heads (2).)"
        ),
    ),
    train(
        what="target a module does not prune",
        args=("model.l0_module.pruning_modules=[layer]",),
        error=(
            "error: model.l0_module.target_model.hidden_size=24 differs from the source's 32 but "
            "'hidden' is not in model.l0_module.pruning_modules"
        ),
    ),
    train(
        what="unknown pruning module",
        args=("model.l0_module.pruning_modules=[bogus]",),
        error=(
            "error: model.l0_module.pruning_modules: pruning_modules entry 'bogus' is unknown; "
            "valid: layer, hidden, head, kv_group, intermediate"
        ),
    ),
    train(
        what="unknown gate init",
        args=("model.l0_module.init=magic",),
        error="error: model.l0_module.init='magic' is not valid; use default, importance",
    ),
    train(
        what="pruned-unit logit without importance init",
        args=("model.l0_module.init_pruned_logit=-6",),
        error=(
            "error: model.l0_module.init_pruned_logit=-6 is not valid; it needs init: importance "
            "and a value below 4 (or null)"
        ),
    ),
    train(
        what="kept-unit logit without importance init",
        args=("model.l0_module.init_kept_logit=8",),
        error=(
            "error: model.l0_module.init_kept_logit=8 is not valid; it needs init: importance and "
            "a value above -2 (or null)"
        ),
    ),
    train(
        what="zero calibration rows",
        args=("model.l0_module.calibration_rows=0",),
        error="error: model.l0_module.calibration_rows=0 must be positive",
    ),
    train(
        what="negative Lagrangian warmup",
        args=("model.l0_module.lagrangian_warmup_steps=-1",),
        error="error: model.l0_module.lagrangian_warmup_steps=-1 must not be negative",
    ),
    train(
        what="Lagrangian warmup longer than the run",
        args=("model.l0_module.lagrangian_warmup_steps=999",),
        error=(
            "error: model.l0_module.lagrangian_warmup_steps=999 is longer than the run "
            "(max_duration=300ba, 300 steps)"
        ),
    ),
    train(
        what="unknown activation",
        args=("model.activation=gelu",),
        error="error: model.activation='gelu' is not supported; use silu, relu, fatrelu, drelu",
    ),
    train(
        what="negative FATReLU threshold",
        args=("model.fatrelu_threshold=-1",),
        error="error: model.fatrelu_threshold=-1.0 is not valid; it must be 0 or more",
    ),
    train(
        what="threshold shift on a SiLU model",
        args=("threshold_shift.step=5",),
        error="error: threshold_shift needs a relu or fatrelu model, not 'silu'",
    ),
    train(
        what="threshold shift after the run",
        args=("model.activation=relu", "threshold_shift.step=400"),
        error=(
            "error: threshold_shift needs 0 <= step < 300 (the run's steps) and threshold >= 0, "
            "got step=400, threshold=0.01"
        ),
    ),
    train(
        what="empty L1 schedule",
        args=("activation_l1.stages=[]",),
        error="error: activation_l1.stages is empty",
    ),
    train(
        what="L1 stage of zero steps",
        args=("activation_l1.stages=[{{steps: 0, penalty: 0.1}}]",),
        error=(
            "error: activation_l1.stages[0] needs steps > 0 and penalty >= 0, got steps=0, "
            "penalty=0.1"
        ),
    ),
    train(
        what="zero distillation temperature",
        args=("distillation.temperature=0",),
        error="error: distillation needs alpha >= 0 and temperature > 0, got 1.0, 0.0",
    ),
    train(
        what="negative cross-entropy weight",
        args=("distillation.ce_weight=-1",),
        error=(
            "error: distillation.ce_weight=-1.0 is not valid; it must be 0 or more, and alpha and "
            "ce_weight not both 0"
        ),
    ),
    train(
        what="distillation without any loss",
        args=("distillation.alpha=0", "distillation.ce_weight=0"),
        error=(
            "error: distillation.ce_weight=0.0 is not valid; it must be 0 or more, and alpha and "
            "ce_weight not both 0"
        ),
    ),
    train(
        what="unknown teacher dtype",
        args=("distillation.teacher_dtype=int8",),
        error=(
            "error: distillation.teacher_dtype='int8' is not valid; use float32, bfloat16, float16"
        ),
    ),
    train(
        what="teacher folder without a model",
        args=("distillation.teacher_path={tmp}",),
        error=(
            "error: distillation.teacher_path: model path '{tmp}' is not a model: expected a "
            "Hugging Face directory (config.json + safetensors or .bin weights) or a .gguf file"
        ),
    ),
    train(
        what="settle phase overlapping the target ramp",
        args=("model.l0_module.settle_steps=250",),
        error=(
            "error: model.l0_module.settle_steps=250 is not valid; it must be 0 or more and leave "
            "the target ramp (lagrangian_warmup_steps=60) before it in the run's 300 steps"
        ),
    ),
    train(
        what="FSDP reentrant activation checkpointing while pruning",
        args=("fsdp_config={{activation_checkpointing: true}}",),
        error=(
            "error: fsdp_config.activation_checkpointing with model.l0_module needs "
            "fsdp_config.activation_checkpointing_reentrant: false (the layers take the pruning "
            "masks, which carry gradients)"
        ),
    ),
    train(
        what="autoresume without a run name",
        args=("save_folder={tmp}/r", "autoresume=true"),
        error="error: autoresume=true needs run_name: it finds the run to resume by both",
    ),
    train(
        what="autoresume without a save folder",
        args=("autoresume=true", "run_name=r"),
        error="error: autoresume=true needs save_folder: it finds the run to resume by both",
    ),
    train(
        what="save folder that is the source model",
        args=("save_folder={model}",),
        error=(
            "error: save_folder '{model}' is the input model.path '{model}'; write the output "
            "somewhere else"
        ),
    ),
    train(
        what="save folder inside the corpus",
        args=("save_folder={data}/run",),
        error=(
            "error: save_folder '{data}/run' lies inside the input data.path '{data}'; write the "
            "output somewhere else"
        ),
    ),
    train(
        what="save folder that is a file",
        args=("save_folder={tmp}/file.txt",),
        setup={"file.txt": text},
        error="error: save_folder '{tmp}/file.txt' is a file, not a folder",
    ),
    train(
        what="save folder holding a finished run",
        args=("save_folder={run}",),
        error=(
            "error: save_folder '{run}' already holds a run (config.yaml, metrics.jsonl, "
            "domain_history.jsonl, ...); pass autoresume=true to continue it, or choose a new "
            "folder"
        ),
    ),
    train(
        what="autoresume with another target",
        args=(
            "save_folder={run}",
            "autoresume=true",
            "run_name=r",
            "model.l0_module.target_model.num_hidden_layers=1",
        ),
        error=(
            "error: save_folder '{run}' holds a run of another model section (model.*); "
            "autoresume continues only the same model and target"
        ),
    ),
    train(
        what="autoresume switching the multipliers' optimizer",
        args=(
            "save_folder={run}",
            "autoresume=true",
            "run_name=r",
            "model.l0_module.lagrangian_warmup_steps=2",
            "optimizer.lambda_ascent_lr=1",
        ),
        error=(
            "error: optimizer.lambda_ascent_lr=1.0 but the run in save_folder '{run}' was started "
            "with null; autoresume continues its optimizer state only with both null or both set "
            "(a rate may change)"
        ),
    ),
    train(
        what="autoresume from a crafted checkpoint",
        args=(
            "save_folder={tmp}/evil_run",
            "autoresume=true",
            "run_name=r",
            "model.l0_module.lagrangian_warmup_steps=2",
        ),
        setup={"evil_run": evil_run},
        error=(
            "error: autoresume: {tmp}/evil_run/ep0-ba2-rank0.pt refused: it asks to build "
            "io.open, which is not tensor data; loading it could run code (checkpoints of this "
            "project hold only tensors and plain data)"
        ),
    ),
]


TOKENIZE_ROWS = [
    tokenize(
        what="input that does not exist",
        base=(),
        args=("--input", "{tmp}/nope", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        error="error: --input '{tmp}/nope' is not a directory of domain folders",
    ),
    tokenize(
        what="output equal to input, with --force",
        base=(),
        args=(
            "--input",
            "{corpus}",
            "--output",
            "{corpus}",
            "--tokenizer",
            "{tokenizer}",
            "--force",
        ),
        error=(
            "error: --output '{corpus}' is the input --input '{corpus}'; write the output "
            "somewhere else"
        ),
    ),
    tokenize(
        what="output inside the input",
        base=(),
        args=(
            "--input",
            "{corpus}",
            "--output",
            "{corpus}/alpha/mds",
            "--tokenizer",
            "{tokenizer}",
        ),
        error=(
            "error: --output '{corpus}/alpha/mds' lies inside the input --input '{corpus}'; write "
            "the output somewhere else"
        ),
    ),
    tokenize(
        what="output holding the input, with --force",
        base=(),
        args=("--input", "{corpus}", "--output", "{root}", "--tokenizer", "{tokenizer}", "--force"),
        error=(
            "error: --output '{root}' holds the input --input '{corpus}'; write the output "
            "somewhere else"
        ),
    ),
    tokenize(
        what="output that is a file",
        args=("--output", "{tmp}/file.txt"),
        setup={"file.txt": text},
        error="error: --output '{tmp}/file.txt' is a file, not a directory",
    ),
    tokenize(
        what="output not empty",
        args=("--output", "{tmp}/full"),
        setup={"full": full},
        error="error: --output '{tmp}/full' is not empty; pass --force to replace it",
    ),
    tokenize(
        what="sequence length 1",
        args=("--seq-len", "1"),
        error="error: --seq-len 1 must be at least 2",
    ),
    tokenize(
        what="negative eval rows",
        args=("--eval-seqs", "-1"),
        error="error: --eval-seqs -1 must be 0 or more",
    ),
    tokenize(
        what="zero workers",
        args=("--workers", "0"),
        error="error: --workers 0 must be at least 1",
    ),
    tokenize(
        what="domain not in the input",
        args=("--domains", "zeta"),
        error="error: domain 'zeta' has no folder in {corpus}; found: alpha, beta, gamma",
    ),
    tokenize(
        what="tokenizer that does not exist",
        base=(),
        args=("--input", "{corpus}", "--output", "{tmp}/out", "--tokenizer", "{tmp}/nope"),
        error=(
            "error: --tokenizer '{tmp}/nope' is neither a Hugging Face tokenizer directory nor a "
            "SentencePiece .model file"
        ),
    ),
    tokenize(
        what="input with no domain folders",
        base=(),
        args=("--input", "{tmp}/empty", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"empty": empty_dir},
        error="error: --input '{tmp}/empty' has no domain folders",
    ),
    tokenize(
        what="domain folder with no text files",
        base=(),
        args=("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"c/a/readme.txt": text},
        error="error: domain 'a' has no .jsonl/.jsonl.gz/.json.gz/.parquet files in {tmp}/c/a",
    ),
    tokenize(
        what="bytes that are not UTF-8",
        base=(),
        args=("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"c/a/x.jsonl": latin1_jsonl},
        error="error: {tmp}/c/a/x.jsonl: not UTF-8 text (byte 0xe9)",
    ),
    tokenize(
        what=".jsonl.gz that is not gzip",
        base=(),
        args=("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"c/a/x.jsonl.gz": plain_as_gz},
        error=(
            "error: {tmp}/c/a/x.jsonl.gz: not a complete gzip file (Not a gzipped file (b'{{\"'))"
        ),
    ),
    tokenize(
        what="truncated .jsonl.gz",
        base=(),
        args=("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"c/a/x.jsonl.gz": truncated_gz},
        error=(
            "error: {tmp}/c/a/x.jsonl.gz: not a complete gzip file (Compressed file ended before "
            "the end-of-stream marker was reached)"
        ),
    ),
    tokenize(
        what="line that is not JSON",
        base=(),
        args=("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"c/a/x.jsonl": not_json},
        error="error: {tmp}/c/a/x.jsonl:1: not JSON (Expecting value)",
    ),
    tokenize(
        what="record without text",
        base=(),
        args=("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        setup={"c/a/x.jsonl": no_text},
        error="error: {tmp}/c/a/x.jsonl:1: record has no 'text' field",
    ),
    tokenize(
        what="output URL that holds a corpus",
        base=(),
        args=("--input", "{corpus}", "--output", "{remote}", "--tokenizer", "{tokenizer}"),
        error=(
            "error: --output 's3://corpora/tiny' already holds a corpus (manifest.json); a remote "
            "corpus is not replaced in place: write to a new prefix, or delete that one first"
        ),
    ),
    tokenize(
        what="output URL holding a cut-off upload",
        base=(),
        args=(
            "--input",
            "{corpus}",
            "--output",
            "s3://corpora/cutoff",
            "--tokenizer",
            "{tokenizer}",
        ),
        setup={"cutoff": cut_off_upload},
        error=(
            "error: --output 's3://corpora/cutoff' holds 1 object(s) but no manifest.json (an "
            "upload cut off?); pass --force to write over them"
        ),
    ),
    tokenize(
        what="output URL unreachable",
        base=(),
        args=("--input", "{corpus}", "--output", "s3://corpora/new", "--tokenizer", "{tokenizer}"),
        env={"S3_ENDPOINT_URL": "http://127.0.0.1:9"},
        error=(
            "error: --output 's3://corpora/new' cannot be reached (Could not connect to the "
            'endpoint URL: "http://127.0.0.1:9/corpora")'
        ),
    ),
    tokenize(
        what="rows longer than the domain's text",
        args=("--seq-len", "100000"),
        error=(
            "error: domain 'alpha' has 11964 training tokens, fewer than one row of --seq-len "
            "100000"
        ),
    ),
]


CONVERT_ROWS = [
    convert(
        what="checkpoint that does not exist",
        args=("{tmp}/nope", "{tmp}/out"),
        error="error: '{tmp}/nope' is not a composer checkpoint file or a run folder with one",
    ),
    convert(
        what="output equal to the run folder, with --force",
        args=("{run}", "{run}", "--force"),
        error=(
            "error: OUT_DIR '{run}' is the input CHECKPOINT '{run}'; write the output somewhere "
            "else"
        ),
    ),
    convert(
        what="output inside the run folder",
        args=("{run}", "{run}/hf"),
        error=(
            "error: OUT_DIR '{run}/hf' lies inside the input CHECKPOINT '{run}'; write the output "
            "somewhere else"
        ),
    ),
    convert(
        what="output equal to the source model, with --force",
        args=("{run}", "{model}", "--force"),
        error=(
            "error: OUT_DIR '{model}' is the input model.path of the run '{model}'; write the "
            "output somewhere else"
        ),
    ),
    convert(
        what="output that is a file",
        args=("{run}", "{tmp}/file.txt"),
        setup={"file.txt": text},
        error="error: OUT_DIR '{tmp}/file.txt' is a file, not a directory",
    ),
    convert(
        what="output not empty",
        args=("{run}", "{tmp}/full"),
        setup={"full": full},
        error="error: OUT_DIR '{tmp}/full' is not empty; pass --force to replace it",
    ),
    convert(
        what="checkpoint of random bytes",
        args=("{tmp}/r/ep0-ba2-rank0.pt", "{tmp}/out"),
        setup={"r": random_checkpoint},
        error=(
            "error: {tmp}/r/ep0-ba2-rank0.pt is not a complete torch checkpoint (no zip "
            "directory: an interrupted write, or not a checkpoint)"
        ),
    ),
    convert(
        what="truncated checkpoint file",
        args=("{tmp}/t/ep0-ba2-rank0.pt", "{tmp}/out"),
        setup={"t": truncated_checkpoint},
        error=(
            "error: {tmp}/t/ep0-ba2-rank0.pt is not a complete torch checkpoint (no zip "
            "directory: an interrupted write, or not a checkpoint)"
        ),
    ),
    convert(
        what="run folder whose only checkpoint is truncated",
        args=("{tmp}/t", "{tmp}/out"),
        setup={"t": truncated_checkpoint},
        error="error: '{tmp}/t' is not a composer checkpoint file or a run folder with one",
    ),
    convert(
        what="crafted checkpoint that runs code",
        args=("{tmp}/evil_run/ep0-ba2-rank0.pt", "{tmp}/out"),
        setup={"evil_run": evil_run},
        error=(
            "error: {tmp}/evil_run/ep0-ba2-rank0.pt refused: it asks to build io.open, which is "
            "not tensor data; loading it could run code (checkpoints of this project hold only "
            "tensors and plain data)"
        ),
    ),
    convert(
        what="torch file that is not a composer checkpoint",
        args=("{tmp}/w/ep0-ba2-rank0.pt", "{tmp}/out"),
        setup={"w": weights_only_file},
        error="error: {tmp}/w/ep0-ba2-rank0.pt is not a composer checkpoint (no state.model)",
    ),
    convert(
        what="checkpoint without a run config",
        args=("{tmp}/w/ep0-ba2-rank0.pt", "{tmp}/out"),
        setup={"w": weights_only_file, "w/config.yaml": remove},
        error="error: no run config at {tmp}/w/config.yaml; pass --config",
    ),
    convert(
        what="--config that does not exist",
        args=("{run}", "{tmp}/out", "--config", "{tmp}/nope.yaml"),
        error="error: no run config at {tmp}/nope.yaml; pass --config",
    ),
    convert(
        what="unknown --dtype",
        args=("{run}", "{tmp}/out", "--dtype", "int8"),
        error=(
            "scripts/convert_to_hf.sh: error: argument --dtype: invalid choice: 'int8' (choose "
            "from 'bfloat16', 'float16', 'float32')"
        ),
    ),
]


EVAL_ROWS = [
    evaluate(
        what="neither a corpus nor downstream tasks",
        base=(),
        args=("--model", "{model}"),
        error=(
            "error: give --data (held-out loss on a tokenized corpus), --lm-eval TASKS "
            "(downstream accuracy), or both"
        ),
    ),
    evaluate(
        what="downstream tasks on a GGUF file",
        args=("--model", "{tmp}/x.gguf", "--lm-eval", "shearing_pubmed_next"),
        setup={"x.gguf": bad_gguf},
        error="error: --lm-eval needs a Hugging Face directory, not the GGUF file '{tmp}/x.gguf'",
    ),
    evaluate(
        what="zero downstream items",
        args=("--lm-eval", "shearing_pubmed_next", "--lm-eval-limit", "0"),
        error="error: --lm-eval-limit 0 must be positive",
    ),
    evaluate(
        what="model that does not exist",
        args=("--model", "{tmp}/nope"),
        error=(
            "error: model path '{tmp}/nope' is not a model: expected a Hugging Face directory "
            "(config.json + safetensors or .bin weights) or a .gguf file"
        ),
    ),
    evaluate(
        what="truncated safetensors",
        args=("--model", "{tmp}/trunc"),
        setup={"trunc": truncated_safetensors},
        error=(
            "error: weights file '{tmp}/trunc/model.safetensors' is truncated or corrupt "
            "(SafetensorError: Error while deserializing header: header too small)"
        ),
    ),
    evaluate(
        what="corrupt GGUF",
        args=("--model", "{tmp}/x.gguf"),
        setup={"x.gguf": bad_gguf},
        error="error: GGUF file '{tmp}/x.gguf' is truncated or corrupt (ValueError)",
    ),
    evaluate(
        what="corpus that does not exist",
        args=("--data", "{tmp}/nope"),
        error=(
            "error: data.path '{tmp}/nope' has no manifest.json; tokenize a corpus with "
            "data_prep/tokenize.py first"
        ),
    ),
    evaluate(
        what="zero rows",
        args=("--max-rows", "0"),
        error="error: --max-rows 0 must be positive (omit it for all rows)",
    ),
    evaluate(
        what="negative rows",
        args=("--max-rows", "-1"),
        error="error: --max-rows -1 must be positive (omit it for all rows)",
    ),
    evaluate(
        what="zero batch",
        args=("--batch-size", "0"),
        error="error: --batch-size 0 must be positive",
    ),
    evaluate(
        what="corpus with no eval rows",
        args=("--data", "{tmp}/noeval"),
        setup={"noeval": no_eval_corpus},
        error="error: --data '{tmp}/noeval' has no eval rows to evaluate on",
    ),
    evaluate(
        what="--json that is a folder",
        args=("--json", "{tmp}"),
        error="error: --json '{tmp}' is a directory; give a file name",
    ),
    evaluate(
        what="--json inside the model",
        args=("--json", "{model}/eval.json"),
        error=(
            "error: --json '{model}/eval.json' lies inside the input --model '{model}'; write the "
            "output somewhere else"
        ),
    ),
    evaluate(
        what="--json under a file",
        args=("--json", "{tmp}/file.txt/eval.json"),
        setup={"file.txt": text},
        error="error: --json '{tmp}/file.txt/eval.json': '{tmp}/file.txt' is a file, not a folder",
    ),
    evaluate(
        what="sparse decoding of a SiLU model",
        args=("--sparse-ffn",),
        error="error: sparse FFN decoding needs a ReLU-family hidden_act, not silu",
    ),
    evaluate(
        what="unknown split",
        args=("--split", "test"),
        error=(
            "shearing eval: error: argument --split: invalid choice: 'test' (choose from 'eval', "
            "'train')"
        ),
    ),
]


SPARSITY_ROWS = [
    sparsity(
        what="zero rows",
        args=("--max-rows", "0"),
        error="error: --max-rows 0 must be positive (omit it for all rows)",
    ),
    sparsity(
        what="model that does not exist",
        args=("--model", "{tmp}/nope"),
        error=(
            "error: model path '{tmp}/nope' is not a model: expected a Hugging Face directory "
            "(config.json + safetensors or .bin weights) or a .gguf file"
        ),
    ),
]


GENERATE_ROWS = [
    generate(
        what="negative token count",
        base=(),
        args=("--model", "{model}", "--max-new-tokens", "-3"),
        error="error: --max-new-tokens -3 must be 0 or more",
    ),
    generate(
        what="model that does not exist",
        base=(),
        args=("--model", "{tmp}/nope"),
        error=(
            "error: model path '{tmp}/nope' is not a model: expected a Hugging Face directory "
            "(config.json + safetensors or .bin weights) or a .gguf file"
        ),
    ),
    generate(
        what="model without a tokenizer",
        base=(),
        args=("--model", "{model}"),
        error=(
            "error: model path '{model}' has no tokenizer (tokenizer.json, tokenizer.model or "
            "vocab.json)"
        ),
    ),
]


ONESHOT_ROWS = [
    oneshot(
        what="output equal to the source model, with --force",
        args=("--out", "{model}", "--force"),
        error=(
            "error: --out '{model}' is the input model.path '{model}'; write the output somewhere "
            "else"
        ),
    ),
    oneshot(
        what="output not empty",
        args=("--out", "{tmp}/full"),
        setup={"full": full},
        error="error: --out '{tmp}/full' is not empty; pass --force to replace it",
    ),
    oneshot(
        what="output that is a file",
        args=("--out", "{tmp}/file.txt"),
        setup={"file.txt": text},
        error="error: --out '{tmp}/file.txt' is a file, not a directory",
    ),
    oneshot(
        what="zero calibration rows",
        args=("--calibration-rows", "0"),
        error="error: --calibration-rows 0 must be positive",
    ),
    oneshot(
        what="config without a target",
        config="yaml/continue_smollm2.yaml",
        error=(
            "error: yaml/continue_smollm2.yaml has no model.l0_module, so no target shape to "
            "prune to"
        ),
    ),
    oneshot(
        what="target larger than the source",
        args=("model.l0_module.target_model.hidden_size=64",),
        error="error: model.l0_module.target_model.hidden_size=64 is larger than the source's 32",
    ),
    oneshot(
        what="unknown method",
        args=("--method", "magnitude"),
        error=(
            "shearing oneshot: error: argument --method: invalid choice: 'magnitude' (choose from "
            "'importance', 'random')"
        ),
    ),
]

ROWS = (
    TRAIN_ROWS
    + TOKENIZE_ROWS
    + CONVERT_ROWS
    + EVAL_ROWS
    + SPARSITY_ROWS
    + GENERATE_ROWS
    + ONESHOT_ROWS
)


def snapshot(*roots: Path) -> dict:
    """Every file, folder and link under `roots` (hidden ones too), with content hashes."""
    seen = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_symlink():
                seen[str(p)] = ("link", str(p.readlink()))
            elif p.is_dir():
                seen[str(p)] = ("dir",)
            else:
                seen[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return seen


@pytest.fixture(scope="module")
def finished_run(tiny_workspace, tmp_path_factory):
    """A short finished pruning run (two checkpoints, its records)."""
    folder = tmp_path_factory.mktemp("bad_inputs") / "run"
    argv = ["yaml/tiny_prune.yaml", f"model.path={tiny_workspace['model']}"]
    argv += [f"data.path={tiny_workspace['data']}", f"save_folder={folder}", "max_duration=4ba"]
    argv += ["save_interval=2ba", "eval_interval=2ba", "model.l0_module.lagrangian_warmup_steps=2"]
    argv += ["data.update_interval=2", "data.reference_losses=[1.0,1.0,1.0]"]
    assert _train_main(argv) == 0
    return folder


def _fill(text: str, ctx: dict) -> str:
    return text.format(**{k: str(v) for k, v in ctx.items()})


def stored(s3) -> dict:
    """Every object of the test object store, with its ETag."""
    client = s3.client()
    buckets = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    return {
        (b, k): client.head_object(Bucket=b, Key=k)["ETag"] for b in buckets for k in s3.keys(b)
    }


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.command}:{r.what.replace(' ', '_')}" for r in ROWS])
def test_bad_input_is_one_clear_line_and_changes_nothing(
    row, tiny_workspace, finished_run, s3, remote_corpus, tmp_path, capsys, monkeypatch
):
    from shearing.data.mixture import read_manifest

    monkeypatch.chdir(REPO)
    ws = tiny_workspace
    alpha_rows = read_manifest(ws["data"])["domains"]["alpha"]["train"]["rows"]
    ctx = {
        "ws": ws["root"], "root": ws["root"], "model": ws["model"], "data": ws["data"],
        "corpus": ws["root"] / "corpus", "tokenizer": ws["tokenizer"], "run": finished_run,
        "tmp": tmp_path, "alpha_rows": alpha_rows, "remote": remote_corpus, "s3": s3,
    }  # fmt: skip
    for rel, make in row.setup.items():
        make(tmp_path / rel, ctx)
    for key, value in row.env.items():
        monkeypatch.setenv(key, _fill(value, ctx))
    roots = (ws["root"], finished_run, tmp_path, REPO / "yaml")
    before, objects = snapshot(*roots), stored(s3)
    capsys.readouterr()
    argv = [_fill(a, ctx) for a in row.args]
    try:
        code = COMMANDS[row.command](argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, None)
    assert err, "no error printed"
    lines = [x for x in err if x.startswith(("error:", "usage:")) or ": error: " in x]
    assert err[-1] == _fill(row.error, ctx)
    if err[0].startswith("usage:"):  # argparse: usage lines, then its one error line
        assert ": error: " in err[-1]
    else:
        assert [x for x in err if x.startswith("error:")] == [err[-1]], lines
    assert snapshot(*roots) == before
    assert stored(s3) == objects  # nothing written remotely either
    assert not (tmp_path / "PWNED").exists()


def markdown_table() -> str:
    """The rows as docs/bad-inputs.md shows them (paths abbreviated)."""
    short = {"{model}": "MODEL", "{data}": "MDS", "{corpus}": "CORPUS", "{tokenizer}": "TOK",
             "{run}": "RUN", "{tmp}": "TMP", "{root}": "WS", "{ws}": "WS",
             "{alpha_rows}": "N"}  # fmt: skip

    def abbreviate(text):
        for key, value in short.items():
            text = text.replace(key, value)
        return text.replace("|", "\\|").replace("{{", "{").replace("}}", "}")

    lines = [
        "| # | command | bad input | arguments | what the user gets |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(ROWS, start=1):
        args = " ".join(row.args)
        lines.append(
            f"| {i} | `{row.command}` | {row.what} | `{abbreviate(args)}` | "
            f"`{abbreviate(row.error)}` |"
        )
    return "\n".join(lines)


def test_docs_list_every_row():
    page = (REPO / "docs" / "bad-inputs.md").read_text()
    assert markdown_table() in page, "regenerate it: python tests/test_bad_inputs.py --write"
    assert len(ROWS) >= 70


def write_table(page: Path) -> None:
    """Replace the table in `page` (from its header row to the first blank line after it)."""
    text = page.read_text()
    start = text.index("| # | command | bad input |")
    end = text.find("\n\n", start)
    end = len(text.rstrip("\n")) if end == -1 else end
    page.write_text(text[:start] + markdown_table() + text[end:].rstrip("\n") + "\n")


if __name__ == "__main__":
    # python tests/test_bad_inputs.py [--write]: print the table, or update docs/bad-inputs.md
    sys.path.insert(0, str(REPO))
    if sys.argv[1:] == ["--write"]:
        write_table(REPO / "docs" / "bad-inputs.md")
    else:
        print(markdown_table())


def test_the_shearing_command_runs_each_command_by_name(capsys):
    from shearing.cli import COMMANDS, main

    assert main(["eval", "--model", "/nonexistent", "--data", "/nonexistent"]) == 2
    assert capsys.readouterr().err.startswith("error: model path '/nonexistent' is not a model")
    assert main(["bogus"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: unknown command 'bogus'; valid: {', '.join(COMMANDS)}"
    )
