"""`model.l0_module.target_params`: a size in, a stock shape out, by the documented rule."""

import json

import pytest
import torch
import transformers

from shearing.config import ConfigError, load_config
from shearing.run import resolve, target_line
from tests.test_config import LLAMA2_7B

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
    with transformers.modeling_utils.no_init_weights(), torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**source, **target}))
    model.tie_weights()  # (not done under no_init_weights)
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


@pytest.mark.parametrize("budget", [0.25, 0.4, 0.6, 5e7, 9e7])
def test_a_gqa_source_gets_the_largest_rule_shape_within_the_budget(tmp_path, budget):
    run = sized(tmp_path, SMOLLM2_135M, budget)
    t = dims(run.target)
    wanted = budget * hf_params(SMOLLM2_135M, {}) if budget <= 1 else budget
    assert hf_params(SMOLLM2_135M, t) <= wanted
    # the rule: head width and layers kept, key/value heads kept, query heads a multiple
    assert t["num_hidden_layers"] == 30 and t["num_key_value_heads"] == 3
    assert t["num_attention_heads"] % 3 == 0 and t["hidden_size"] % 64 == 0
    assert t["intermediate_size"] % 64 == 0
    # one more step of the widest dimension would exceed the budget
    bigger = {**t, "intermediate_size": t["intermediate_size"] + 64}
    bigger["hidden_size"] = t["hidden_size"] + 64
    assert hf_params(SMOLLM2_135M, bigger) > wanted


def test_bad_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="target_params is 7e\\+09; it must be a parameter"):
        sized(tmp_path, LLAMA2_7B, 7e9)
    with pytest.raises(ConfigError, match="the smallest shape these pruning modules can make"):
        sized(tmp_path, LLAMA2_7B, 3e8, modules="[intermediate]")
