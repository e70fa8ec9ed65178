"""The whole pipeline at tiny scale, every stage through its real command line."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import transformers
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def sh(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(a) for a in args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_prune_convert_continue_convert_eval_plot(tiny_workspace, tmp_path):
    py, ws = sys.executable, tiny_workspace
    data = tmp_path / "data"
    sh(
        py,
        "data_prep/tokenize.py",
        "--input",
        ws["root"] / "corpus",
        "--output",
        data,
        "--tokenizer",
        ws["tokenizer"],
        "--seq-len",
        32,
        "--eval-seqs",
        4,
    )
    dynamic = [
        "data.reference_losses=[1.0,3.0,3.0]",
        "data.update_interval=10",
        "eval_interval=10ba",
    ]
    sh(
        py,
        "train.py",
        "yaml/tiny_prune.yaml",
        f"model.path={ws['model']}",
        f"data.path={data}",
        f"save_folder={tmp_path / 'prune'}",
        "max_duration=30ba",
        "model.l0_module.lagrangian_warmup_steps=10",
        *dynamic,
    )
    sh("bash", "scripts/convert_to_hf.sh", tmp_path / "prune", tmp_path / "pruned_hf")
    sh(
        py,
        "train.py",
        "yaml/continue_smollm2.yaml",
        f"model.path={tmp_path / 'pruned_hf'}",
        f"data.path={data}",
        f"save_folder={tmp_path / 'continue'}",
        "max_duration=20ba",
        f"data.proportions_from={tmp_path / 'prune'}",
        "progress_bar=false",
        *dynamic,
    )
    sh("bash", "scripts/convert_to_hf.sh", tmp_path / "continue", tmp_path / "continued_hf")
    sh(
        py,
        "-m",
        "shearing.commands.eval",
        "--model",
        tmp_path / "continued_hf",
        "--data",
        data,
        "--json",
        tmp_path / "eval.json",
    )
    sh(
        py,
        "-m",
        "shearing.commands.plots",
        "--prune",
        tmp_path / "prune",
        "--continue",
        tmp_path / "continue",
        "--out",
        tmp_path / "plots",
    )

    final, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "continued_hf", output_loading_info=True
    )
    assert all(not v for v in info.values())
    c = final.config
    shape = (
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.num_hidden_layers,
        c.intermediate_size,
    )
    assert shape == (24, 2, 1, 2, 32)

    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["domains"]) == {"alpha", "beta", "gamma"}
    assert all(
        math.isfinite(r["loss"]) and math.isfinite(r["perplexity"])
        for r in result["domains"].values()
    )

    def history(stage):
        return [
            json.loads(x)
            for x in (tmp_path / stage / "domain_history.jsonl").read_text().splitlines()
        ]

    pruned_last = history("prune")[-1]["proportions"]
    continued_first = history("continue")[0]["proportions"]
    # Not a float comparison across two computations: the continue run must start from the
    # very values the pruning run wrote (last_proportions passes them through unchanged).
    assert continued_first == pruned_last
    assert pruned_last != history("prune")[0]["proportions"]

    for name in ("sparsity", "lambdas", "proportions", "eval_loss"):
        path = tmp_path / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
