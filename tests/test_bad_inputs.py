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
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Row:
    """A bad input: command, arguments ({ws}, {tmp}, {run}... are filled in) and error."""

    command: str
    what: str
    args: tuple[str, ...]
    error: str
    #: Files to create first: relative path under {tmp} -> a builder name in `MAKERS`.
    setup: tuple[tuple[str, str], ...] = ()


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
    "shearing.commands.eval": _main("shearing.commands.eval"),
    "shearing.commands.sparsity": _main("shearing.commands.sparsity"),
    "shearing.commands.generate": _main("shearing.commands.generate"),
    "shearing.commands.oneshot": _main("shearing.commands.oneshot"),
}

#: The supported model types, as the refusal of another architecture lists them.
FAMILY_LIST = (
    "llama, internlm3, mistral, ministral3, qwen2, qwen3, gemma2, gemma3_text, phi3, olmo2, "
    "granite, granite_swa, smollm3, gemma4_text"
)
TINY = ("yaml/tiny_prune.yaml", "model.path={model}", "data.path={data}")
R = "error: model.l0_module"


def T(what, extra, error, setup=(), base=TINY):
    return Row("train.py", what, (*base, *extra), error, tuple(setup))


TRAIN_ROWS = [
    T(
        "config file that does not exist",
        (),
        "error: config file 'yaml/nope.yaml' does not exist",
        base=("yaml/nope.yaml",),
    ),
    T(
        "config file that is not YAML",
        (),
        "error: config file '{tmp}/bad.yaml' is not valid YAML (while parsing a flow sequence)",
        [("bad.yaml", "bad_yaml")],
        base=("{tmp}/bad.yaml",),
    ),
    T(
        "recipe whose base file does not exist",
        (),
        "error: base 'nope.yaml' named by {tmp}/recipe.yaml does not exist ({tmp}/nope.yaml)",
        [("recipe.yaml", "recipe_missing_base")],
        base=("{tmp}/recipe.yaml",),
    ),
    T("unknown top-level key", ("bogus=1",), "error: unknown config key 'bogus'"),
    T(
        "unknown nested key",
        ("model.l0_module.bogus=1",),
        "error: unknown config key 'model.l0_module.bogus'",
    ),
    T(
        "composer logger that is not known",
        ("loggers.weights_and_biases.project=p",),
        "error: loggers.weights_and_biases is not known; use one of wandb, tensorboard, mlflow, "
        "file, inmemory, in_memory_logger, comet_ml, neptune, slack, remote_uploader_downloader "
        "or an import path package.module:Class",
    ),
    T(
        "composer callback argument it does not take",
        ("callbacks.lr_monitor.window=5",),
        "error: callbacks.lr_monitor: got an unexpected keyword argument 'window'; its "
        "arguments are none",
    ),
    T(
        "composer section that is not a mapping",
        ("callbacks=[lr_monitor]",),
        "error: config key 'callbacks' must be a mapping, not ['lr_monitor']",
    ),
    T(
        "load_path that is not a file",
        ("load_path={tmp}/nope.pt",),
        "error: load_path='{tmp}/nope.pt' is not a checkpoint file (a local path or an "
        "object-store URI such as s3://bucket/ep1-ba100-rank0.pt)",
    ),
    T(
        "python log level that is not a level",
        ("python_log_level=loud",),
        "error: python_log_level='loud' is not valid; use debug, info, warning, error, critical",
    ),
    T(
        "save_overwrite with autoresume",
        ("save_overwrite=true", "autoresume=true", "run_name=r", "save_folder={tmp}/run"),
        "error: save_overwrite=true with autoresume=true: autoresume continues the run in "
        "save_folder, save_overwrite replaces it; keep one",
    ),
    T(
        "duration in a unit composer does not define",
        ("model.l0_module.lagrangian_warmup_steps=3days",),
        "error: model.l0_module.lagrangian_warmup_steps='3days' is not a duration; use N or Nba "
        "(steps), Nsp, Ntok or X.Ydur",
    ),
    T(
        "wrong type",
        ("seed=abc",),
        "error: config key 'seed': Value 'abc' of type 'str' could not be converted to Integer",
    ),
    T(
        "required key left empty",
        (),
        "error: config key 'data.path' is required and has no value",
        base=("yaml/tiny_prune.yaml", "model.path={model}"),
    ),
    T("zero steps", ("max_duration=0ba",), "error: max_duration=0ba must be at least 1 step"),
    T("negative steps", ("max_duration=-2ba",), "error: max_duration=-2ba must be at least 1 step"),
    T(
        "epochs on an endless train set",
        ("max_duration=1ep",),
        "error: max_duration='1ep': epochs are not defined (training draws from an endless "
        "mixture of domains); use N or Nba (steps), Nsp or Ntok",
    ),
    T(
        "not a duration",
        ("max_duration=soon",),
        "error: max_duration='soon' is not a duration; use N or Nba (steps), Nsp or Ntok",
    ),
    T(
        "no batch",
        ("global_train_batch_size=0",),
        "error: global_train_batch_size=0 must be positive",
    ),
    T(
        "microbatch that does not divide the batch",
        ("global_train_batch_size=3", "device_train_microbatch_size=2"),
        "error: device_train_microbatch_size=2 must be a positive divisor of the per-device batch "
        "3 (global_train_batch_size=3 over 1 process(es))",
    ),
    T(
        "zero microbatch",
        ("device_train_microbatch_size=0",),
        "error: device_train_microbatch_size=0 must be a positive divisor of the per-device batch "
        "4 (global_train_batch_size=4 over 1 process(es))",
    ),
    T(
        "zero eval interval",
        ("eval_interval=0ba",),
        "error: eval_interval=0ba must be at least 1 step",
    ),
    T(
        "eval interval in epochs",
        ("eval_interval=1ep",),
        "error: eval_interval='1ep': epochs are not defined (training draws from an endless "
        "mixture of domains); use N or Nba (steps), Nsp, Ntok or X.Ydur",
    ),
    T(
        "zero save interval",
        ("save_interval=0ba",),
        "error: save_interval=0ba must be at least 1 step",
    ),
    T(
        "zero console interval",
        ("console_log_interval=0ba",),
        "error: console_log_interval=0ba must be at least 1 step",
    ),
    T(
        "unknown precision",
        ("precision=fp8",),
        "error: precision='fp8' is not valid; use fp32, amp_bf16, amp_fp16",
    ),
    T(
        "warmup longer than the run",
        ("scheduler.t_warmup=999ba",),
        "error: scheduler.t_warmup=999ba is longer than the run (300 steps)",
    ),
    T(
        "negative warmup",
        ("scheduler.t_warmup=-1ba",),
        "error: scheduler.t_warmup=-1ba must not be negative",
    ),
    T(
        "negative schedule start",
        ("scheduler.t_start=-1ba",),
        "error: scheduler.t_start=-1ba must not be negative",
    ),
    T(
        "run begins after its schedule ends",
        ("scheduler.t_start=100ba", "scheduler.t_max=100ba"),
        "error: scheduler.t_max=100ba must be longer than scheduler.t_start (100 steps): the "
        "run would begin after its schedule ended",
    ),
    T(
        "warmup longer than a shared schedule",
        ("scheduler.t_warmup=50ba", "scheduler.t_max=40ba"),
        "error: scheduler.t_warmup=50ba is longer than its schedule (40 steps from the "
        "schedule's start)",
    ),
    T(
        "final lr factor above 1",
        ("scheduler.alpha_f=2",),
        "error: scheduler.alpha_f=2.0 is not valid; it must be in [0, 1]",
    ),
    T(
        "negative lr",
        ("optimizer.lr=-1",),
        "error: optimizer.lr=-1.0 is not valid; it must be 0 or more",
    ),
    T(
        "negative gate lr",
        ("optimizer.l0_lr=-1",),
        "error: optimizer.l0_lr=-1.0 is not valid; it must be 0 or more",
    ),
    T(
        "zero multiplier ascent rate",
        ("optimizer.lambda_ascent_lr=0",),
        "error: optimizer.lambda_ascent_lr=0.0 is not valid; it must be positive, or null (AdamW)",
    ),
    T(
        "multiplier ascent rate without pruning",
        ("model.l0_module=null", "optimizer.lambda_ascent_lr=1"),
        "error: optimizer.lambda_ascent_lr=1.0 needs model.l0_module (it steps a pruning run's "
        "Lagrange multipliers); remove it here",
    ),
    T(
        "one beta",
        ("optimizer.betas=[0.9]",),
        "error: optimizer.betas=[0.9] is not valid; it must be two values in [0, 1)",
    ),
    T(
        "zero eps",
        ("optimizer.eps=0",),
        "error: optimizer.eps=0.0 is not valid; it must be positive",
    ),
    T(
        "negative weight decay",
        ("optimizer.weight_decay=-0.1",),
        "error: optimizer.weight_decay=-0.1 is not valid; it must be 0 or more",
    ),
    T(
        "zero eval batch",
        ("device_eval_batch_size=0",),
        "error: device_eval_batch_size=0 is not valid; it must be a positive integer",
    ),
    T(
        "checkpoints to keep below -1",
        ("save_num_checkpoints_to_keep=-3",),
        "error: save_num_checkpoints_to_keep=-3 is not valid; it must be -1 (keep all) or more",
    ),
    T(
        "zero gradient clip",
        ("max_grad_norm=0",),
        "error: max_grad_norm=0.0 is not valid; it must be positive, or null (no clipping)",
    ),
    T(
        "source model that does not exist",
        ("model.path={tmp}/nope",),
        "error: model.path: model path '{tmp}/nope' is not a model: expected a Hugging Face "
        "directory (config.json + safetensors or .bin weights) or a .gguf file",
    ),
    T(
        "source config.json that is not JSON",
        ("model.path={tmp}/badjson",),
        "error: model.path: '{tmp}/badjson/config.json' is not valid JSON (Expecting value: line 1 "
        "column 1 (char 0))",
        [("badjson", "bad_config_json")],
    ),
    T(
        "mixture-of-experts source",
        ("model.path={tmp}/moe",),
        "error: model.path: model_type='mixtral' is not supported (a mixture-of-experts model "
        "(routed expert FFNs)); supported: " + FAMILY_LIST,
        [("moe", "config_mixtral")],
    ),
    T(
        "multimodal source",
        ("model.path={tmp}/vlm",),
        "error: model.path: model_type='gemma3' is not supported (a multimodal model (its text "
        "decoder alone, e.g. gemma3_text, can be pruned)); supported: " + FAMILY_LIST,
        [("vlm", "config_gemma3")],
    ),
    T(
        "linear-attention source",
        ("model.path={tmp}/hybrid",),
        "error: model.path: model_type='qwen3_5' is not supported (a model with linear-attention "
        "or state-space layers); supported: " + FAMILY_LIST,
        [("hybrid", "config_qwen3_5")],
    ),
    T(
        "truncated safetensors",
        ("model.path={tmp}/trunc",),
        "error: weights file '{tmp}/trunc/model.safetensors' is truncated or corrupt "
        "(SafetensorError: Error while deserializing header: header too small)",
        [("trunc", "truncated_safetensors")],
    ),
    T(
        "corpus that does not exist",
        ("data.path={tmp}/nope",),
        "error: data.path '{tmp}/nope' has no manifest.json; tokenize a corpus with "
        "data_prep/tokenize.py first",
    ),
    T(
        "domain not in the corpus",
        ("data.domains=[zeta]",),
        "error: data.domains entry 'zeta' is not in the corpus; available: alpha, beta, gamma",
    ),
    T(
        "proportions of the wrong length",
        ("data.proportions=[0.5,0.5]",),
        "error: data.proportions has 2 values for 3 domains",
    ),
    T(
        "negative proportion",
        ("data.proportions=[-0.2,0.6,0.6]",),
        "error: data.proportions=[-0.2, 0.6, 0.6] has a negative value",
    ),
    T(
        "proportions that do not sum to 1",
        ("data.proportions=[0.2,0.2,0.2]",),
        "error: data.proportions sum to 0.60000000, not 1",
    ),
    T(
        "proportions and proportions_from",
        ("data.proportions=[0.2,0.3,0.5]", "data.proportions_from={run}"),
        "error: data.proportions and data.proportions_from are both set; keep one",
    ),
    T(
        "proportions_from a folder with no history",
        ("data.proportions_from={tmp}",),
        "error: data.proportions_from '{tmp}' has no domain history",
    ),
    T(
        "rows_from a folder with no position record",
        ("data.rows_from={tmp}",),
        "error: data.rows_from '{tmp}' has no data_position.json (a training run writes it "
        "into its save_folder when it finishes)",
    ),
    T(
        "rows_from a position record that is not one",
        ("data.rows_from={tmp}/data_position.json",),
        "error: data.rows_from '{tmp}/data_position.json': data_position.json is not a position "
        "record this project wrote (row_seed, rows, train_rows)",
        [("data_position.json", "text")],
    ),
    T(
        "rows_from a run on another corpus",
        ("data.rows_from={tmp}/other",),
        "error: data.rows_from '{tmp}/other' read another corpus: domain 'alpha' had 7 "
        "training rows there, {alpha_rows} in '{data}'",
        [("other", "other_corpus_position")],
    ),
    T(
        "rows_from a position record whose domains disagree",
        ("data.rows_from={tmp}/partial",),
        "error: data.rows_from '{tmp}/partial': data_position.json is not a position record "
        "this project wrote (row_seed, rows, train_rows)",
        [("partial", "partial_position")],
    ),
    T(
        "reference losses of the wrong length",
        ("data.reference_losses=[1.0,2.0]",),
        "error: data.reference_losses has 2 values for 3 domains",
    ),
    T(
        "non-positive reference loss",
        ("data.reference_losses=[0.0,1.0,1.0]",),
        "error: data.reference_losses=[0.0, 1.0, 1.0] must all be positive",
    ),
    T(
        "updates without reference losses",
        ("data.update_interval=150",),
        "error: data.update_interval is set but data.reference_losses is not",
    ),
    T(
        "updates between evaluations",
        ("data.update_interval=100", "data.reference_losses=[1.0,1.0,1.0]"),
        "error: data.update_interval=100 is not a multiple of eval_interval=150ba; updates need a "
        "fresh evaluation",
    ),
    T(
        "zero update interval",
        ("data.update_interval=0",),
        "error: data.update_interval=0 must be positive",
    ),
    T(
        "unknown update type",
        ("data.update_type=linear",),
        "error: data.update_type='linear' is not valid; use exponential, constant",
    ),
    T(
        "smoothing above 1",
        ("data.update_interval=150", "data.reference_losses=[1.0,1.0,1.0]", "data.smoothing=2"),
        "error: data.smoothing=2.0 must be in [0, 1]",
    ),
    T(
        "negative workers",
        ("data.num_workers=-1",),
        "error: data.num_workers=-1 is not valid; it must be 0 or more",
    ),
    T(
        "zero eval rows",
        ("data.eval_max_rows=0",),
        "error: data.eval_max_rows=0 is not valid; it must be positive, or null (all rows)",
    ),
    T("zero step size", ("data.eta=0",), "error: data.eta=0.0 is not valid; it must be positive"),
    T(
        "target larger than the source",
        ("model.l0_module.target_model.num_hidden_layers=9",),
        f"{R}.target_model.num_hidden_layers=9 is larger than the source's 3",
    ),
    T(
        "target key that is not prunable",
        ("model.l0_module.target_model.vocab_size=10",),
        f"{R}.target_model.vocab_size is not a prunable dimension; valid: num_hidden_layers, "
        "hidden_size, num_attention_heads, num_key_value_heads, intermediate_size",
    ),
    T(
        "zero-sized target",
        ("model.l0_module.target_model.hidden_size=0",),
        f"{R}.target_model.hidden_size=0 must be a positive integer",
    ),
    T(
        "heads not a multiple of kv heads",
        (
            "model.l0_module.target_model.num_attention_heads=3",
            "model.l0_module.target_model.num_key_value_heads=2",
        ),
        f"{R}.target_model.num_attention_heads=3 is not a multiple of num_key_value_heads=2",
    ),
    T(
        "target shape the exported config class refuses",
        ("model.l0_module.target_model.hidden_size=23",),
        f"{R}.target_model (num_hidden_layers=2, hidden_size=23, num_attention_heads=2, "
        "num_key_value_heads=1, intermediate_size=32) cannot be exported: transformers' "
        "LlamaConfig refuses it (The hidden size (23) is not a multiple of the number of "
        "attention heads (2).)",
    ),
    T(
        "target a module does not prune",
        ("model.l0_module.pruning_modules=[layer]",),
        f"{R}.target_model.hidden_size=24 differs from the source's 32 but 'hidden' is not in "
        "model.l0_module.pruning_modules",
    ),
    T(
        "unknown pruning module",
        ("model.l0_module.pruning_modules=[bogus]",),
        f"{R}.pruning_modules: pruning_modules entry 'bogus' is unknown; valid: layer, hidden, "
        "head, kv_group, intermediate",
    ),
    T(
        "unknown gate init",
        ("model.l0_module.init=magic",),
        f"{R}.init='magic' is not valid; use default, importance",
    ),
    T(
        "pruned-unit logit without importance init",
        ("model.l0_module.init_pruned_logit=-6",),
        f"{R}.init_pruned_logit=-6 is not valid; it needs init: importance and a value below 4 "
        "(or null)",
    ),
    T(
        "kept-unit logit without importance init",
        ("model.l0_module.init_kept_logit=8",),
        f"{R}.init_kept_logit=8 is not valid; it needs init: importance and a value above -2 "
        "(or null)",
    ),
    T(
        "zero calibration rows",
        ("model.l0_module.calibration_rows=0",),
        f"{R}.calibration_rows=0 must be positive",
    ),
    T(
        "negative Lagrangian warmup",
        ("model.l0_module.lagrangian_warmup_steps=-1",),
        f"{R}.lagrangian_warmup_steps=-1 must not be negative",
    ),
    T(
        "Lagrangian warmup longer than the run",
        ("model.l0_module.lagrangian_warmup_steps=999",),
        f"{R}.lagrangian_warmup_steps=999 is longer than the run (max_duration=300ba, 300 steps)",
    ),
    T(
        "unknown activation",
        ("model.activation=gelu",),
        "error: model.activation='gelu' is not supported; use silu, relu, fatrelu, drelu",
    ),
    T(
        "negative FATReLU threshold",
        ("model.fatrelu_threshold=-1",),
        "error: model.fatrelu_threshold=-1.0 is not valid; it must be 0 or more",
    ),
    T(
        "threshold shift on a SiLU model",
        ("threshold_shift.step=5",),
        "error: threshold_shift needs a relu or fatrelu model, not 'silu'",
    ),
    T(
        "threshold shift after the run",
        ("model.activation=relu", "threshold_shift.step=400"),
        "error: threshold_shift needs 0 <= step < 300 (the run's steps) and threshold >= 0, got "
        "step=400, threshold=0.01",
    ),
    T("empty L1 schedule", ("activation_l1.stages=[]",), "error: activation_l1.stages is empty"),
    T(
        "L1 stage of zero steps",
        ("activation_l1.stages=[{{steps: 0, penalty: 0.1}}]",),
        "error: activation_l1.stages[0] needs steps > 0 and penalty >= 0, got steps=0, penalty=0.1",
    ),
    T(
        "zero distillation temperature",
        ("distillation.temperature=0",),
        "error: distillation needs alpha >= 0 and temperature > 0, got 1.0, 0.0",
    ),
    T(
        "negative cross-entropy weight",
        ("distillation.ce_weight=-1",),
        "error: distillation.ce_weight=-1.0 is not valid; it must be 0 or more, and alpha and "
        "ce_weight not both 0",
    ),
    T(
        "distillation without any loss",
        ("distillation.alpha=0", "distillation.ce_weight=0"),
        "error: distillation.ce_weight=0.0 is not valid; it must be 0 or more, and alpha and "
        "ce_weight not both 0",
    ),
    T(
        "unknown teacher dtype",
        ("distillation.teacher_dtype=int8",),
        "error: distillation.teacher_dtype='int8' is not valid; use float32, bfloat16, float16",
    ),
    T(
        "teacher folder without a model",
        ("distillation.teacher_path={tmp}",),
        "error: distillation.teacher_path: model path '{tmp}' is not a model: expected a Hugging "
        "Face directory (config.json + safetensors or .bin weights) or a .gguf file",
    ),
    T(
        "settle phase overlapping the target ramp",
        ("model.l0_module.settle_steps=250",),
        "error: model.l0_module.settle_steps=250 is not valid; it must be 0 or more and leave the "
        "target ramp (lagrangian_warmup_steps=60) before it in the run's 300 steps",
    ),
    T(
        "FSDP reentrant activation checkpointing while pruning",
        ("fsdp_config={{activation_checkpointing: true}}",),
        "error: fsdp_config.activation_checkpointing with model.l0_module needs "
        "fsdp_config.activation_checkpointing_reentrant: false (the layers take the pruning "
        "masks, which carry gradients)",
    ),
    T(
        "autoresume without a run name",
        ("save_folder={tmp}/r", "autoresume=true"),
        "error: autoresume=true needs run_name: it finds the run to resume by both",
    ),
    T(
        "autoresume without a save folder",
        ("autoresume=true", "run_name=r"),
        "error: autoresume=true needs save_folder: it finds the run to resume by both",
    ),
    T(
        "save folder that is the source model",
        ("save_folder={model}",),
        "error: save_folder '{model}' is the input model.path '{model}'; write the output "
        "somewhere else",
    ),
    T(
        "save folder inside the corpus",
        ("save_folder={data}/run",),
        "error: save_folder '{data}/run' lies inside the input data.path '{data}'; write the "
        "output somewhere else",
    ),
    T(
        "save folder that is a file",
        ("save_folder={tmp}/file.txt",),
        "error: save_folder '{tmp}/file.txt' is a file, not a folder",
        [("file.txt", "text")],
    ),
    T(
        "save folder holding a finished run",
        ("save_folder={run}",),
        "error: save_folder '{run}' already holds a run (config.yaml, metrics.jsonl, "
        "domain_history.jsonl, ...); pass autoresume=true to continue it, or choose a new folder",
    ),
    T(
        "autoresume with another target",
        (
            "save_folder={run}",
            "autoresume=true",
            "run_name=r",
            "model.l0_module.target_model.num_hidden_layers=1",
        ),
        "error: save_folder '{run}' holds a run of another model section (model.*); autoresume "
        "continues only the same model and target",
    ),
    T(
        "autoresume switching the multipliers' optimizer",
        (
            "save_folder={run}",
            "autoresume=true",
            "run_name=r",
            "model.l0_module.lagrangian_warmup_steps=2",
            "optimizer.lambda_ascent_lr=1",
        ),
        "error: optimizer.lambda_ascent_lr=1.0 but the run in save_folder '{run}' was started "
        "with null; autoresume continues its optimizer state only with both null or both set "
        "(a rate may change)",
    ),
    T(
        "autoresume from a crafted checkpoint",
        (
            "save_folder={tmp}/evil_run",
            "autoresume=true",
            "run_name=r",
            "model.l0_module.lagrangian_warmup_steps=2",
        ),
        "error: autoresume: {tmp}/evil_run/ep0-ba2-rank0.pt refused: it asks to build "
        "io.open, which is not tensor data; loading it could run code (checkpoints of this "
        "project hold only tensors and plain data)",
        [("evil_run", "evil_run")],
    ),
]


def K(what, extra, error, setup=()):
    base = ("--input", "{corpus}", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}")
    return Row("tokenize.py", what, (*base, *extra), error, tuple(setup))


def K2(what, args, error, setup=()):
    return Row("tokenize.py", what, tuple(args), error, tuple(setup))


TOKENIZE_ROWS = [
    K2(
        "input that does not exist",
        ("--input", "{tmp}/nope", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: --input '{tmp}/nope' is not a directory of domain folders",
    ),
    K2(
        "output equal to input, with --force",
        ("--input", "{corpus}", "--output", "{corpus}", "--tokenizer", "{tokenizer}", "--force"),
        "error: --output '{corpus}' is the input "
        "--input '{corpus}'; write the output somewhere else",
    ),
    K2(
        "output inside the input",
        ("--input", "{corpus}", "--output", "{corpus}/alpha/mds", "--tokenizer", "{tokenizer}"),
        "error: --output '{corpus}/alpha/mds' lies inside the input "
        "--input '{corpus}'; write the output somewhere else",
    ),
    K2(
        "output holding the input, with --force",
        ("--input", "{corpus}", "--output", "{root}", "--tokenizer", "{tokenizer}", "--force"),
        "error: --output '{root}' holds the input "
        "--input '{corpus}'; write the output somewhere else",
    ),
    K(
        "output that is a file",
        ("--output", "{tmp}/file.txt"),
        "error: --output '{tmp}/file.txt' is a file, not a directory",
        [("file.txt", "text")],
    ),
    K(
        "output not empty",
        ("--output", "{tmp}/full"),
        "error: --output '{tmp}/full' is not empty; pass --force to replace it",
        [("full", "full")],
    ),
    K("sequence length 1", ("--seq-len", "1"), "error: --seq-len 1 must be at least 2"),
    K("negative eval rows", ("--eval-seqs", "-1"), "error: --eval-seqs -1 must be 0 or more"),
    K("zero workers", ("--workers", "0"), "error: --workers 0 must be at least 1"),
    K(
        "domain not in the input",
        ("--domains", "zeta"),
        "error: domain 'zeta' has no folder in {corpus}; found: alpha, beta, gamma",
    ),
    K2(
        "tokenizer that does not exist",
        ("--input", "{corpus}", "--output", "{tmp}/out", "--tokenizer", "{tmp}/nope"),
        "error: --tokenizer '{tmp}/nope' is neither a Hugging Face "
        "tokenizer directory nor a SentencePiece .model file",
    ),
    K2(
        "input with no domain folders",
        ("--input", "{tmp}/empty", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: --input '{tmp}/empty' has no domain folders",
        [("empty", "empty_dir")],
    ),
    K2(
        "domain folder with no text files",
        ("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: domain 'a' has no .jsonl/.jsonl.gz/.json.gz/.parquet files in {tmp}/c/a",
        [("c/a/readme.txt", "text")],
    ),
    K2(
        "bytes that are not UTF-8",
        ("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: {tmp}/c/a/x.jsonl: not UTF-8 text (byte 0xe9)",
        [("c/a/x.jsonl", "latin1_jsonl")],
    ),
    K2(
        ".jsonl.gz that is not gzip",
        ("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: {tmp}/c/a/x.jsonl.gz: not a complete gzip file (Not a gzipped file (b'{{\"'))",
        [("c/a/x.jsonl.gz", "plain_as_gz")],
    ),
    K2(
        "truncated .jsonl.gz",
        ("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: {tmp}/c/a/x.jsonl.gz: not a complete gzip file "
        "(Compressed file ended before the end-of-stream marker was reached)",
        [("c/a/x.jsonl.gz", "truncated_gz")],
    ),
    K2(
        "line that is not JSON",
        ("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: {tmp}/c/a/x.jsonl:1: not JSON (Expecting value)",
        [("c/a/x.jsonl", "not_json")],
    ),
    K2(
        "record without text",
        ("--input", "{tmp}/c", "--output", "{tmp}/out", "--tokenizer", "{tokenizer}"),
        "error: {tmp}/c/a/x.jsonl:1: record has no 'text' field",
        [("c/a/x.jsonl", "no_text")],
    ),
    K(
        "rows longer than the domain's text",
        ("--seq-len", "100000"),
        "error: domain 'alpha' has 11964 training tokens, fewer than one row of --seq-len 100000",
    ),
]


def C(what, args, error, setup=()):
    return Row("convert_to_hf.sh", what, tuple(args), error, tuple(setup))


CONVERT_ROWS = [
    C(
        "checkpoint that does not exist",
        ("{tmp}/nope", "{tmp}/out"),
        "error: '{tmp}/nope' is not a composer checkpoint file or a run folder with one",
    ),
    C(
        "output equal to the run folder, with --force",
        ("{run}", "{run}", "--force"),
        "error: OUT_DIR '{run}' is the input CHECKPOINT '{run}'; write the output somewhere else",
    ),
    C(
        "output inside the run folder",
        ("{run}", "{run}/hf"),
        "error: OUT_DIR '{run}/hf' lies inside the input CHECKPOINT '{run}'; write the output "
        "somewhere else",
    ),
    C(
        "output equal to the source model, with --force",
        ("{run}", "{model}", "--force"),
        "error: OUT_DIR '{model}' is the input model.path of the run '{model}'; write the output "
        "somewhere else",
    ),
    C(
        "output that is a file",
        ("{run}", "{tmp}/file.txt"),
        "error: OUT_DIR '{tmp}/file.txt' is a file, not a directory",
        [("file.txt", "text")],
    ),
    C(
        "output not empty",
        ("{run}", "{tmp}/full"),
        "error: OUT_DIR '{tmp}/full' is not empty; pass --force to replace it",
        [("full", "full")],
    ),
    C(
        "checkpoint of random bytes",
        ("{tmp}/r/ep0-ba2-rank0.pt", "{tmp}/out"),
        "error: {tmp}/r/ep0-ba2-rank0.pt is not a complete torch checkpoint (no zip directory: an "
        "interrupted write, or not a checkpoint)",
        [("r", "random_checkpoint")],
    ),
    C(
        "truncated checkpoint file",
        ("{tmp}/t/ep0-ba2-rank0.pt", "{tmp}/out"),
        "error: {tmp}/t/ep0-ba2-rank0.pt is not a complete torch checkpoint (no zip directory: an "
        "interrupted write, or not a checkpoint)",
        [("t", "truncated_checkpoint")],
    ),
    C(
        "run folder whose only checkpoint is truncated",
        ("{tmp}/t", "{tmp}/out"),
        "error: '{tmp}/t' is not a composer checkpoint file or a run folder with one",
        [("t", "truncated_checkpoint")],
    ),
    C(
        "crafted checkpoint that runs code",
        ("{tmp}/evil_run/ep0-ba2-rank0.pt", "{tmp}/out"),
        "error: {tmp}/evil_run/ep0-ba2-rank0.pt refused: it asks to build io.open, which is "
        "not tensor data; loading it could run code (checkpoints of this project hold only "
        "tensors and plain data)",
        [("evil_run", "evil_run")],
    ),
    C(
        "torch file that is not a composer checkpoint",
        ("{tmp}/w/ep0-ba2-rank0.pt", "{tmp}/out"),
        "error: {tmp}/w/ep0-ba2-rank0.pt is not a composer checkpoint (no state.model)",
        [("w", "weights_only_file")],
    ),
    C(
        "checkpoint without a run config",
        ("{tmp}/w/ep0-ba2-rank0.pt", "{tmp}/out"),
        "error: no run config at {tmp}/w/config.yaml; pass --config",
        [("w", "weights_only_file"), ("w/config.yaml", "remove")],
    ),
    C(
        "--config that does not exist",
        ("{run}", "{tmp}/out", "--config", "{tmp}/nope.yaml"),
        "error: no run config at {tmp}/nope.yaml; pass --config",
    ),
    C(
        "unknown --dtype",
        ("{run}", "{tmp}/out", "--dtype", "int8"),
        "scripts/convert_to_hf.sh: error: argument --dtype: invalid choice: 'int8' (choose from "
        "'bfloat16', 'float16', 'float32')",
    ),
]


def E(command, what, extra, error, setup=()):
    base = ("--model", "{model}", "--data", "{data}")
    return Row(command, what, (*base, *extra), error, tuple(setup))


MODEL_ROWS = [
    Row(
        "shearing.commands.eval",
        "neither a corpus nor downstream tasks",
        ("--model", "{model}"),
        "error: give --data (held-out loss on a tokenized corpus), --lm-eval TASKS "
        "(downstream accuracy), or both",
        (),
    ),
    E(
        "shearing.commands.eval",
        "downstream tasks on a GGUF file",
        ("--model", "{tmp}/x.gguf", "--lm-eval", "shearing_pubmed_next"),
        "error: --lm-eval needs a Hugging Face directory, not the GGUF file '{tmp}/x.gguf'",
        [("x.gguf", "bad_gguf")],
    ),
    E(
        "shearing.commands.eval",
        "zero downstream items",
        ("--lm-eval", "shearing_pubmed_next", "--lm-eval-limit", "0"),
        "error: --lm-eval-limit 0 must be positive",
    ),
    E(
        "shearing.commands.eval",
        "model that does not exist",
        ("--model", "{tmp}/nope"),
        "error: model path '{tmp}/nope' is not a model: expected a Hugging Face directory "
        "(config.json + safetensors or .bin weights) or a .gguf file",
    ),
    E(
        "shearing.commands.eval",
        "truncated safetensors",
        ("--model", "{tmp}/trunc"),
        "error: weights file '{tmp}/trunc/model.safetensors' is truncated or corrupt "
        "(SafetensorError: Error while deserializing header: header too small)",
        [("trunc", "truncated_safetensors")],
    ),
    E(
        "shearing.commands.eval",
        "corrupt GGUF",
        ("--model", "{tmp}/x.gguf"),
        "error: GGUF file '{tmp}/x.gguf' is truncated or corrupt (ValueError)",
        [("x.gguf", "bad_gguf")],
    ),
    E(
        "shearing.commands.eval",
        "corpus that does not exist",
        ("--data", "{tmp}/nope"),
        "error: data.path '{tmp}/nope' has no manifest.json; tokenize a corpus with "
        "data_prep/tokenize.py first",
    ),
    E(
        "shearing.commands.eval",
        "zero rows",
        ("--max-rows", "0"),
        "error: --max-rows 0 must be positive (omit it for all rows)",
    ),
    E(
        "shearing.commands.eval",
        "negative rows",
        ("--max-rows", "-1"),
        "error: --max-rows -1 must be positive (omit it for all rows)",
    ),
    E(
        "shearing.commands.eval",
        "zero batch",
        ("--batch-size", "0"),
        "error: --batch-size 0 must be positive",
    ),
    E(
        "shearing.commands.eval",
        "corpus with no eval rows",
        ("--data", "{tmp}/noeval"),
        "error: --data '{tmp}/noeval' has no eval rows to evaluate on",
        [("noeval", "no_eval_corpus")],
    ),
    E(
        "shearing.commands.eval",
        "--json that is a folder",
        ("--json", "{tmp}"),
        "error: --json '{tmp}' is a directory; give a file name",
    ),
    E(
        "shearing.commands.eval",
        "--json inside the model",
        ("--json", "{model}/eval.json"),
        "error: --json '{model}/eval.json' lies inside the input --model '{model}'; write the "
        "output somewhere else",
    ),
    E(
        "shearing.commands.eval",
        "--json under a file",
        ("--json", "{tmp}/file.txt/eval.json"),
        "error: --json '{tmp}/file.txt/eval.json': '{tmp}/file.txt' is a file, not a folder",
        [("file.txt", "text")],
    ),
    E(
        "shearing.commands.eval",
        "sparse decoding of a SiLU model",
        ("--sparse-ffn",),
        "error: sparse FFN decoding needs a ReLU-family hidden_act, not silu",
    ),
    E(
        "shearing.commands.eval",
        "unknown split",
        ("--split", "test"),
        "shearing eval: error: argument --split: invalid choice: 'test' (choose from "
        "'eval', 'train')",
    ),
    E(
        "shearing.commands.sparsity",
        "zero rows",
        ("--max-rows", "0"),
        "error: --max-rows 0 must be positive (omit it for all rows)",
    ),
    E(
        "shearing.commands.sparsity",
        "model that does not exist",
        ("--model", "{tmp}/nope"),
        "error: model path '{tmp}/nope' is not a model: expected a Hugging Face directory "
        "(config.json + safetensors or .bin weights) or a .gguf file",
    ),
    Row(
        "shearing.commands.generate",
        "negative token count",
        ("--model", "{model}", "--max-new-tokens", "-3"),
        "error: --max-new-tokens -3 must be 0 or more",
    ),
    Row(
        "shearing.commands.generate",
        "model that does not exist",
        ("--model", "{tmp}/nope"),
        "error: model path '{tmp}/nope' is not a model: expected a Hugging Face directory "
        "(config.json + safetensors or .bin weights) or a .gguf file",
    ),
    Row(
        "shearing.commands.generate",
        "model without a tokenizer",
        ("--model", "{model}"),
        "error: model path '{model}' has no tokenizer (tokenizer.json, tokenizer.model or "
        "vocab.json)",
    ),
]


def S(what, extra, error, setup=(), config="yaml/tiny_prune.yaml"):
    base = ("--config", config, "--method", "random", "--out", "{tmp}/out")
    return Row(
        "shearing.commands.oneshot",
        what,
        (*base, *extra, "model.path={model}", "data.path={data}"),
        error,
        tuple(setup),
    )


ONESHOT_ROWS = [
    S(
        "output equal to the source model, with --force",
        ("--out", "{model}", "--force"),
        "error: --out '{model}' is the input model.path '{model}'; write the output somewhere else",
    ),
    S(
        "output not empty",
        ("--out", "{tmp}/full"),
        "error: --out '{tmp}/full' is not empty; pass --force to replace it",
        [("full", "full")],
    ),
    S(
        "output that is a file",
        ("--out", "{tmp}/file.txt"),
        "error: --out '{tmp}/file.txt' is a file, not a directory",
        [("file.txt", "text")],
    ),
    S(
        "zero calibration rows",
        ("--calibration-rows", "0"),
        "error: --calibration-rows 0 must be positive",
    ),
    S(
        "config without a target",
        (),
        "error: yaml/continue_smollm2.yaml has no model.l0_module, so no target shape to prune to",
        config="yaml/continue_smollm2.yaml",
    ),
    S(
        "target larger than the source",
        ("model.l0_module.target_model.hidden_size=64",),
        "error: model.l0_module.target_model.hidden_size=64 is larger than the source's 32",
    ),
    S(
        "unknown method",
        ("--method", "magnitude"),
        "shearing oneshot: error: argument "
        "--method: invalid choice: 'magnitude' (choose from 'importance', 'random')",
    ),
]

ROWS = TRAIN_ROWS + TOKENIZE_ROWS + CONVERT_ROWS + MODEL_ROWS + ONESHOT_ROWS


# --- files the rows need -------------------------------------------------------------


class Evil:
    """Unpickled by a full `torch.load`, this creates the file MARKER: code from a checkpoint."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def text(path: Path, ctx: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user data\n")


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


#: The files a row's `setup` names: maker name -> function(path, context); `config_<type>`
#: makes a config.json of that model_type (`config_of`).
MAKERS = {
    "text": text,
    "recipe_missing_base": recipe_missing_base,
    "bad_yaml": bad_yaml,
    "full": full,
    "empty_dir": empty_dir,
    "bad_config_json": bad_config_json,
    "truncated_safetensors": truncated_safetensors,
    "latin1_jsonl": latin1_jsonl,
    "plain_as_gz": plain_as_gz,
    "truncated_gz": truncated_gz,
    "not_json": not_json,
    "no_text": no_text,
    "random_checkpoint": random_checkpoint,
    "truncated_checkpoint": truncated_checkpoint,
    "evil_run": evil_run,
    "weights_only_file": weights_only_file,
    "other_corpus_position": other_corpus_position,
    "partial_position": partial_position,
    "remove": remove,
    "bad_gguf": bad_gguf,
    "no_eval_corpus": no_eval_corpus,
}


def _make(kind: str, path: Path, ctx: dict) -> None:
    make = config_of(kind.removeprefix("config_")) if kind.startswith("config_") else MAKERS[kind]
    make(path, ctx)


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


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.command}:{r.what.replace(' ', '_')}" for r in ROWS])
def test_bad_input_is_one_clear_line_and_changes_nothing(
    row, tiny_workspace, finished_run, tmp_path, capsys, monkeypatch
):
    from shearing.data.mixture import read_manifest

    monkeypatch.chdir(REPO)
    ws = tiny_workspace
    alpha_rows = read_manifest(ws["data"])["domains"]["alpha"]["train"]["rows"]
    ctx = {
        "ws": ws["root"], "root": ws["root"], "model": ws["model"], "data": ws["data"],
        "corpus": ws["root"] / "corpus", "tokenizer": ws["tokenizer"], "run": finished_run,
        "tmp": tmp_path, "alpha_rows": alpha_rows,
    }  # fmt: skip
    for rel, kind in row.setup:
        _make(kind, tmp_path / rel, ctx)
    roots = (ws["root"], finished_run, tmp_path, REPO / "yaml")
    before = snapshot(*roots)
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
    assert markdown_table() in page, "regenerate the table: python tests/test_bad_inputs.py"
    assert len(ROWS) >= 70


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(markdown_table())


def test_the_shearing_command_runs_each_command_by_name(capsys):
    from shearing.cli import COMMANDS, main

    assert main(["eval", "--model", "/nonexistent", "--data", "/nonexistent"]) == 2
    assert capsys.readouterr().err.startswith("error: model path '/nonexistent' is not a model")
    assert main(["bogus"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: unknown command 'bogus'; valid: {', '.join(COMMANDS)}"
    )
