"""Downstream accuracy through lm-evaluation-harness: the shipped task set's items, and
lm-eval's accuracy on a model against the same choices scored here by hand."""

import importlib.metadata
import json

import numpy as np
import pytest
import torch
import transformers

from shearing.commands import downstream
from shearing.commands.eval import main as eval_main
from shearing.models.hf_io import save_pretrained
from tests.helpers import random_decoder

WORDS = (
    "cells protein patients study results expression treatment analysis increased levels "
    "group significantly model cancer tissue mice response clinical data"
).split()


def fake_abstracts(n=40, seed=0):
    rng = np.random.default_rng(seed)

    def sentence():
        words = rng.choice(WORDS, size=rng.integers(6, 14))
        return " ".join(words).capitalize() + "."

    return [(f"Title {i} " + " ".join(rng.choice(WORDS, 4)), [sentence() for _ in range(5)])
            for i in range(n)]  # fmt: skip


def test_items_are_four_way_choices_with_the_true_one_labelled():
    abstracts = fake_abstracts()
    items = downstream.build_items(abstracts, n=12, seed=3)
    assert set(items) == set(downstream.TASKS)
    by_title = dict(abstracts)
    for item in items["shearing_pubmed_next"]:
        assert len(item["choices"]) == 4 == len(set(item["choices"]))
        true = item["choices"][item["label"]]
        # the true sentence follows the context in some abstract
        assert any(
            " ".join(parts[:k]) == item["context"] and parts[k] == true
            for parts in by_title.values()
            for k in range(1, len(parts))
        )
    for item in items["shearing_pubmed_title"]:
        title = item["choices"][item["label"]]
        assert item["context"] == f"Abstract: {' '.join(by_title[title][:2])}\nTitle:"
    assert downstream.build_items(abstracts, n=12, seed=3) == items  # reproducible


@pytest.fixture(scope="module")
def small_model(smollm2_dir, tmp_path_factory):
    config = json.loads((smollm2_dir / "config.json").read_text())
    small = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = random_decoder(config, std=0.3, **small)
    out = tmp_path_factory.mktemp("lm") / "model"
    save_pretrained(model, out, source=smollm2_dir)
    return out


def by_hand(model_dir, items):
    """acc and acc_norm as lm-eval defines them for multiple choice: the sum of the
    log-probabilities of " " + choice after the context (tokenized as a whole, the
    context's tokens cut off), argmax; acc_norm divides by the choice's characters."""
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    acc = norm = 0
    for item in items:
        lls = []
        for choice in item["choices"]:
            ctx = tok(item["context"], add_special_tokens=False)["input_ids"]
            whole = tok(item["context"] + " " + choice, add_special_tokens=False)["input_ids"]
            cont = whole[len(ctx) :]
            ids = torch.tensor([whole[:-1]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            lls.append(sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)))
        lengths = [len(c) for c in item["choices"]]
        acc += int(np.argmax(lls) == item["label"])
        norm += int(np.argmax(np.array(lls) / lengths) == item["label"])
    return acc / len(items), norm / len(items)


def test_lm_eval_accuracy_equals_the_choices_scored_by_hand(small_model, tmp_path, capsys):
    items = downstream.build_items(fake_abstracts(), n=10, seed=1)
    tasks = downstream.write_tasks(tmp_path / "tasks", items)
    out = tmp_path / "acc.json"
    import shearing.commands.downstream as d

    original = d.task_dir
    d.task_dir = lambda: tasks  # the task set built above instead of the shipped one
    try:
        code = eval_main(["--model", str(small_model), "--lm-eval", ",".join(downstream.TASKS),
                          "--json", str(out)])  # fmt: skip
    finally:
        d.task_dir = original
    assert code == 0
    result = json.loads(out.read_text())["lm_eval"]
    assert downstream.lm_eval_pin() == f"lm-eval=={result['lm_eval']}"  # the pinned one ran
    for task in downstream.TASKS:
        acc, norm = by_hand(small_model, items[task])
        assert result["results"][task]["acc"] == pytest.approx(acc, abs=1e-9)
        assert result["results"][task]["acc_norm"] == pytest.approx(norm, abs=1e-9)
    assert "shearing_pubmed_next: acc" in capsys.readouterr().out


def test_unknown_tasks_and_missing_inputs_are_one_line_errors(small_model, capsys):
    assert eval_main(["--model", str(small_model)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: give --data (held-out loss on a tokenized corpus), --lm-eval TASKS "
        "(downstream accuracy), or both"
    )
    assert eval_main(["--model", str(small_model), "--lm-eval", "shearing_nosuch"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: --lm-eval task 'shearing_nosuch' is not known to lm-eval "
            f"{importlib.metadata.version('lm-eval')}; the shipped "
            "ones: shearing_pubmed_next, shearing_pubmed_title"
        )
    )
