"""`model.l0_module.target_params`: a size in, a stock shape out, by the documented rule."""

import functools
import json
import math

import pytest
import torch
import transformers

from shearing.config import ConfigError, load_config
from shearing.models.published import LLAMA2_7B
from shearing.run import resolve, target_line

SMOLLM2_135M = {  # the public config.json of HuggingFaceTB/SmolLM2-135M (shape keys)
    **LLAMA2_7B,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 30,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
PAPER_2_7B = dict(hidden_size=2560, num_attention_heads=20, num_key_value_heads=20,
                  num_hidden_layers=32, intermediate_size=6912)  # fmt: skip
PAPER_1_3B = dict(hidden_size=2048, num_attention_heads=16, num_key_value_heads=16,
                  num_hidden_layers=24, intermediate_size=5504)  # fmt: skip


def sized(tmp_path, source: dict, budget, modules="[layer, hidden, head, intermediate]", **given):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(source))
    target = "{" + ", ".join(f"{k}: {v}" for k, v in given.items()) + "}"
    (tmp_path / "c.yaml").write_text(
        f"model:\n  path: {model}\n  l0_module:\n    pruning_modules: {modules}\n"
        f"    target_params: {budget}\n    target_model: {target}\n"
        "data: {path: unused}\nmax_duration: 10ba\nglobal_train_batch_size: 8\n"
    )
    return resolve(load_config(tmp_path / "c.yaml"), with_data=False)


def dims(shape):
    return {k: getattr(shape, k) for k in PAPER_2_7B}


def hf_params(source: dict, target: dict) -> int:
    """transformers' own count of the target shape (meta device, no weights), with the
    source's head width, as the exported config.json states it."""
    target = {"head_dim": source["hidden_size"] // source["num_attention_heads"], **target}
    with torch.device("meta"):  # no weights are initialised on the meta device
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**source, **target}))
    return model.num_parameters()


def test_the_papers_shapes_from_their_sizes(tmp_path):
    run = sized(tmp_path, LLAMA2_7B, 2.71e9)
    assert dims(run.target) == PAPER_2_7B
    assert hf_params(LLAMA2_7B, PAPER_2_7B) <= 2.71e9
    run = sized(tmp_path, LLAMA2_7B, 1.35e9, num_hidden_layers=24)
    assert dims(run.target) == PAPER_1_3B
    line = target_line(run)
    assert line.startswith("pruning to num_hidden_layers=24, hidden_size=2048, num_attention")
    assert f"{hf_params(LLAMA2_7B, PAPER_1_3B):,} parameters" in line
    assert "from target_params=1.35e+09" in line


def exports(source: dict, target: dict) -> bool:
    """Whether transformers' own LlamaConfig accepts the target shape."""
    return _exports(json.dumps(source, sort_keys=True), json.dumps(target, sort_keys=True))


@functools.cache
def _exports(source: str, target: str) -> bool:
    source, target = json.loads(source), json.loads(target)
    head_dim = source["hidden_size"] // source["num_attention_heads"]
    try:
        transformers.LlamaConfig(**{**source, "head_dim": head_dim, **target})
    except Exception:  # the strict dataclass' validation error
        return False
    return True


def rule_by_hand(source: dict, s: float) -> dict:
    """The module docstring's rule at scale s for a GQA source, written out again: widths
    to multiples of 64, key/value heads kept, query heads a multiple of them; where
    LlamaConfig refuses that, the hidden size to a multiple of lcm(8, heads)."""
    kv = source["num_key_value_heads"]
    group = source["num_attention_heads"] // kv

    def width(w, q=64):
        return min(w, max(q, round(s * w / q) * q))

    shape = {
        "hidden_size": width(source["hidden_size"]),
        "intermediate_size": width(source["intermediate_size"]),
        "num_attention_heads": kv * max(1, min(group, round(s * group))),
        "num_key_value_heads": kv,
        "num_hidden_layers": source["num_hidden_layers"],
    }
    if not exports(source, shape):
        shape["hidden_size"] = width(
            source["hidden_size"], math.lcm(8, shape["num_attention_heads"])
        )
    return shape


@pytest.mark.parametrize("budget", [0.25, 0.4, 0.6, 5e7, 9e7])
def test_a_gqa_source_gets_the_largest_rule_shape_within_the_budget(tmp_path, budget):
    run = sized(tmp_path, SMOLLM2_135M, budget)
    t = dims(run.target)
    wanted = budget * hf_params(SMOLLM2_135M, {}) if budget <= 1 else budget
    assert hf_params(SMOLLM2_135M, t) <= wanted
    assert exports(SMOLLM2_135M, t)
    # against every shape of the rule on a fine grid of scales: the largest that fits the
    # budget and that transformers' config accepts
    candidates = {tuple(rule_by_hand(SMOLLM2_135M, i / 20000).items()) for i in range(20001)}
    exported = [dict(c) for c in candidates if exports(SMOLLM2_135M, dict(c))]
    fitting = [(n, c) for c in exported if (n := hf_params(SMOLLM2_135M, c)) <= wanted]
    best = max(fitting, key=lambda nc: nc[0])[1]
    assert t == best


def test_sizing_skips_shapes_the_exported_config_refuses(tmp_path):
    # SmolLM2 at 0.4: the 64-multiple shape nearest the budget is hidden 320 with 6 query
    # heads, which LlamaConfig refuses (320 % 6); the hidden size then goes to a multiple
    # of lcm(8, 6) = 24, and what is chosen exports
    t = dims(sized(tmp_path, SMOLLM2_135M, 0.4).target)
    assert not exports(SMOLLM2_135M, {**t, "hidden_size": 320})
    assert t["hidden_size"] % 24 == 0 and t["num_attention_heads"] == 6
    assert exports(SMOLLM2_135M, t)


def test_bad_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="target_params is 7e\\+09; it must be a parameter"):
        sized(tmp_path, LLAMA2_7B, 7e9)
    with pytest.raises(ConfigError, match="the smallest shape these pruning modules can make"):
        sized(tmp_path, LLAMA2_7B, 3e8, modules="[intermediate]")
