"""Every shipped yaml resolves (`shearing.run.resolve`) to what its text and the papers say.

The 7B configs resolve against Llama-2-7B's public config.json and a corpus manifest with
RedPajama's seven domains, as on an 8-GPU node; the SmolLM2 configs against SmolLM2-135M's
config and the tiny workspace's corpus. Expected values are written out by hand here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shearing.config import load_config
from shearing.models.config import DecoderShape
from shearing.models.decoder import MaskableDecoder
from shearing.models.published import LLAMA2_7B
from shearing.run import resolve
from shearing.trainer.model import ShearingLM

YAML = Path(__file__).resolve().parent.parent / "yaml"
REDPAJAMA = ["cc", "github", "book", "stackexchange", "wiki", "arxiv", "c4-rp"]
SMOLLM2_135M = {  # the public config.json of HuggingFaceTB/SmolLM2-135M (the fields used)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_attention_heads": 9, "num_hidden_layers": 30,
    "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "vocab_size": 49152,
    "max_position_embeddings": 8192, "tie_word_embeddings": True, "hidden_act": "silu",
    "rope_theta": 100000, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_workspace):
    root = tmp_path_factory.mktemp("resolve")
    for name, config in (("llama2", LLAMA2_7B), ("smollm2", SMOLLM2_135M)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
    corpus = root / "redpajama"
    corpus.mkdir()
    split = {"documents": 10, "tokens": 10**9, "rows": 10**5}
    manifest = {
        "seq_len": 4096, "vocab_size": 32000, "tokenizer": "x", "dtype": "uint16",
        "domains": {d: {"train": split, "eval": split} for d in REDPAJAMA},
    }  # fmt: skip
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    history = root / "prune_run"
    history.mkdir()
    last = {"cc": 0.6, "github": 0.05, "book": 0.05, "stackexchange": 0.03, "wiki": 0.1,
            "arxiv": 0.02, "c4-rp": 0.15}  # fmt: skip
    line = json.dumps({"step": 3200, "proportions": last})
    (history / "domain_history.jsonl").write_text(line + "\n")
    rows = {d: 1000 * (i + 1) for i, d in enumerate(REDPAJAMA)}  # where each domain stopped
    position = {"row_seed": 17, "samples": sum(rows.values()), "rows": rows,
                "train_rows": {d: split["rows"] for d in REDPAJAMA}}  # fmt: skip
    (history / "data_position.json").write_text(json.dumps(position))
    return {"root": root, "last": last, "tiny_data": tiny_workspace["data"], "rows": rows}


def run_of(name, paths):
    root = paths["root"]
    if "smollm2" in name:
        args = [f"model.path={root / 'smollm2'}", f"data.path={paths['tiny_data']}"]
        return resolve(load_config(YAML / name, args + ["save_folder=s"]))
    if name == "tiny_prune.yaml":
        pytest.skip("resolved with the tiny workspace throughout the test suite")
    args = [f"model.path={root / 'llama2'}", f"data.path={root / 'redpajama'}", "save_folder=s"]
    args.append(f"data.proportions_from={root / 'prune_run'}")
    if name.startswith("prune_") or "proportions_from" not in (YAML / name).read_text():
        args.pop()
    return resolve(load_config(YAML / name, args), world_size=8)


def dims(shape: DecoderShape) -> tuple:
    return (shape.hidden_size, shape.num_attention_heads, shape.num_key_value_heads,
            shape.num_hidden_layers, shape.intermediate_size)  # fmt: skip


SHIPPED = sorted(p.name for p in YAML.glob("*.yaml") if p.name != "tiny_prune.yaml")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_resolves(name, paths):
    run = run_of(name, paths)
    assert run.steps.total > 0 and 0 <= run.steps.warmup <= run.steps.total
    assert run.data is not None and run.final is not None


def test_prune_2_7b_is_the_papers_run(paths):
    run = run_of("prune_2.7b.yaml", paths)
    assert dims(run.final) == (2560, 20, 20, 32, 6912)
    assert run.modules == ("kv_group", "intermediate", "layer", "hidden")  # MHA: head = kv_group
    s = run.steps
    assert (s.total, s.warmup, s.eval_interval, s.save_interval, s.lagrangian_warmup) == (
        3200, 320, 50, 400, 640)  # fmt: skip
    assert run.data.domains == REDPAJAMA
    assert run.data.proportions == [0.67, 0.045, 0.045, 0.02, 0.045, 0.025, 0.15]
    assert run.source.hidden_act == "silu" and run.teacher_path is None


def test_prune_1_3b_target(paths):
    assert dims(run_of("prune_1.3b.yaml", paths).final) == (2048, 16, 16, 24, 5504)


def test_continue_starts_from_the_pruning_runs_proportions(paths):
    run = run_of("continue_2.7b.yaml", paths)
    assert run.data.proportions == [paths["last"][d] for d in REDPAJAMA]
    # and reads each domain's rows on from where the pruning run stopped
    assert run.data.row_start == [paths["rows"][d] for d in REDPAJAMA]
    assert run.data.row_seed == 17
    assert run.steps.warmup == 1440  # 0.03dur of 48000 steps
    assert run.target is None and run.final == run.source


def test_prosparse_ends_with_fatrelu_and_shifts_at_its_step(paths):
    run = run_of("prosparse_7b.yaml", paths)
    assert (run.source.hidden_act, run.source.fatrelu_threshold) == ("fatrelu", 0.01)
    assert run.final == run.source
    assert run.steps.threshold_shift == 4800 and run.steps.warmup == 50  # 0.01dur of 5000
    relufy = run_of("relufy_7b.yaml", paths)
    assert relufy.source.hidden_act == "relu" and relufy.steps.threshold_shift is None


def test_smollm2_pruning_target(paths):
    run = run_of("prune_smollm2.yaml", paths)
    assert dims(run.final) == (384, 6, 3, 20, 1152)
    assert (run.steps.total, run.steps.warmup, run.steps.lagrangian_warmup) == (48, 10, 24)


def test_the_threshold_is_zero_until_the_shift_step():
    shape = DecoderShape.from_hf(SMOLLM2_135M | {"num_hidden_layers": 2, "hidden_size": 36,
                                               "intermediate_size": 16, "vocab_size": 10,
                                               "hidden_act": "fatrelu",
                                               "fatrelu_threshold": 0.25})  # fmt: skip
    lm = ShearingLM(MaskableDecoder(shape), None, ["all"], threshold_from_step=5)
    thresholds = []
    for step in (0, 4, 5, 9):
        lm.set_step(step)
        thresholds.append({layer.mlp.act_fn.threshold for layer in lm.model.model.layers})
    assert thresholds == [{0.0}, {0.0}, {0.25}, {0.25}]


def test_the_demo_stages_resolve_with_the_demos_overrides(paths):
    """scripts/demo.py's command lines for both training stages are valid configs (an
    update interval that is not a multiple of the eval interval would stop the demo)."""
    from tests.helpers import script_module

    demo = script_module("demo")
    root = paths["root"]
    data = [f"data.path={paths['tiny_data']}", "data.reference_losses=[1.0,1.0,1.0]"]
    prune = resolve(load_config(YAML / "prune_smollm2.yaml", [
        f"model.path={root / 'smollm2'}", *data, *demo.PRUNE, *demo.OBJECTIVE]))  # fmt: skip
    assert prune.cfg.model.l0_module.settle_steps == 16
    assert prune.cfg.model.l0_module.init_pruned_logit == -6.0
    equal = demo.equal_proportions(["code", "pubmed", "wiki"])  # as main() passes them
    cont = resolve(load_config(YAML / "continue_smollm2.yaml", [
        f"model.path={root / 'smollm2'}", *data, *equal, *demo.CONTINUE,
        *demo.OBJECTIVE]))  # fmt: skip
    assert cont.steps.total == 288 and cont.cfg.optimizer.lr == 1.0e-3
    assert cont.cfg.data.update_type == "constant"  # evaluated and logged, not re-weighted
