"""The real-scale recipes of the other families, built on the meta device from the source's
published config.json (written here, no download): the target shape, its parameter count
against transformers' own count of the published model's config, and the model the run
would train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from shearing.config import load_config
from shearing.models.published import LLAMA31_8B, MISTRAL_7B_V01, QWEN3_8B
from shearing.run import resolve
from shearing.trainer.build import build_model

YAML = Path(__file__).resolve().parent.parent / "yaml"

#: nvidia/Llama-3.1-Minitron-4B-Width-Base: Llama-3.1-8B's config with these widths.
MINITRON_4B_WIDTH = {**LLAMA31_8B, "hidden_size": 3072, "intermediate_size": 9216}


def published_count(config: dict) -> int:
    """transformers' own parameter count of a published config (meta device, no weights)."""
    hf = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf).num_parameters()


def resolved(tmp_path, name: str, source: dict):
    (tmp_path / "config.json").write_text(json.dumps(source))
    cfg = load_config(YAML / name, [f"model.path={tmp_path}", "data.path=unused"])
    return resolve(cfg, with_data=False)


def dims(shape) -> dict:
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads")  # fmt: skip
    return {k: getattr(shape, k) for k in keys}


def test_the_sources_counts_are_the_published_ones():
    assert published_count(LLAMA31_8B) == 8_030_261_248  # "8.03B" on the model card
    assert published_count(QWEN3_8B) == 8_190_735_360  # "8.19B"
    assert published_count(MISTRAL_7B_V01) == 7_241_732_096  # "7.24B"


def test_llama31_8b_prunes_to_minitron_4b_widths(tmp_path):
    run = resolved(tmp_path, "prune_llama3.1_8b.yaml", LLAMA31_8B)
    assert dims(run.target) == {k: MINITRON_4B_WIDTH[k] for k in dims(run.target)}
    assert run.target.num_params() == published_count(MINITRON_4B_WIDTH)  # 4.51B
    model = build_model(run, meta=True)
    assert model.model.num_params() == published_count(LLAMA31_8B)
    assert model.model.model.layers[0].self_attn.q_proj.weight.is_meta


def test_qwen3_8b_prunes_to_about_4b_by_the_sizing_rule(tmp_path):
    run = resolved(tmp_path, "prune_qwen3_8b.yaml", QWEN3_8B)
    t = dims(run.target)
    assert t == dict(hidden_size=2688, intermediate_size=8192, num_hidden_layers=36,
                     num_attention_heads=24, num_key_value_heads=8)  # fmt: skip
    count = published_count({**QWEN3_8B, **t})
    assert run.target.num_params() == count and 3.9e9 < count <= 4.0e9
    assert build_model(run, meta=True).model.num_params() == published_count(QWEN3_8B)


def test_drelu_mistral_7b_keeps_the_window_and_every_weight(tmp_path):
    run = resolved(tmp_path, "drelu_mistral_7b.yaml", MISTRAL_7B_V01)
    assert run.target is None and run.source.hidden_act == "drelu"
    assert {run.source.layer_window(i) for i in range(32)} == {4096}
    cfg = run.cfg
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (5e-5, 0.1)
    model = build_model(run, meta=True)
    assert model.model.num_params() == published_count(MISTRAL_7B_V01)
    assert model.model.model.layers[0].mlp.act_fn.kind == "drelu"


@pytest.mark.parametrize("name", ["prune_llama3.1_8b.yaml", "prune_qwen3_8b.yaml"])
def test_the_target_is_one_the_familys_config_class_accepts(tmp_path, name):
    source = LLAMA31_8B if "llama" in name else QWEN3_8B
    run = resolved(tmp_path, name, source)
    cfg = run.target.to_hf()
    transformers.AutoConfig.for_model(**cfg)  # the exported config.json, read back
    assert cfg["architectures"] == source["architectures"]
