"""The demo's building blocks: the generate command and the summary table."""

import json

from shearing.commands import generate
from tests.helpers import script_module

demo = script_module("demo")


def test_generate_prints_shape_parameters_and_a_continuation(smollm2_dir, capsys):
    assert generate.main(["--model", str(smollm2_dir), "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "query heads / kv heads    9 / 3" in out
    assert "parameters                134,515,008" in out  # SmolLM2-135M's published size
    continuation = out.split("greedy continuation (5 tokens")[1].splitlines()[1]
    assert len(continuation.strip()) > len(generate.DEFAULT_PROMPT)


def test_report_table(tmp_path):
    def result(loss):
        return {
            "parameters": 10,
            "non_embedding_parameters": 4,
            "average": {"loss": loss},
            "domains": {"code": {"loss": loss}, "wiki": {"loss": loss + 1}},
        }

    entry = {"stage": "continue", "proportions": {"code": 0.25, "wiki": 0.75}}
    (tmp_path / "domain_history.jsonl").write_text(json.dumps(entry) + "\n")
    text = demo.report({"source": result(2.0), "pruned": result(5.0)}, ["code", "wiki"], tmp_path)
    lines = text.splitlines()
    assert lines[2].split() == ["model", "params", "non-emb", "code", "wiki", "average"]
    assert lines[3].split() == ["source", "10", "4", "2.000", "3.000", "2.000"]
    assert lines[-2] == "final domain proportions: code 0.250, wiki 0.750"
    assert lines[-1] == "(downstream accuracy skipped: pip install 'shearing[lm-eval]')"
    # with lm-eval's results: a row per model, accuracy and normalised accuracy per task
    acc = {"limit": 50, "results": {t: {"acc": 0.5, "acc_norm": 0.25} for t in demo.TASKS}}
    with_acc = {name: r | {"lm_eval": acc} for name, r in
                {"source": result(2.0), "pruned": result(5.0)}.items()}  # fmt: skip
    lines = demo.report(with_acc, ["code", "wiki"], tmp_path).splitlines()
    assert lines[-4] == "downstream accuracy, 50 items per task, 4 choices (chance 0.25)"
    assert lines[-3].split() == ["model", *[x for t in demo.TASKS for x in (t, "(norm)")]]
    assert lines[-2].split() == ["source", "0.500", "0.250", "0.500", "0.250"]
