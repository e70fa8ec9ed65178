"""Every family through the pipeline a user runs: a tiny random checkpoint written by
transformers' own `save_pretrained`, a short pruning run (`train.py`'s main with L0 gates
and the Lagrangian toward the exact target, importance init), conversion (its own logit
check against the masked model included), and the result loaded strictly by transformers'
`AutoModelForCausalLM` as the family's stock class of the target shape; then continued
pretraining with distillation from the source, and one-shot importance pruning. ReLU-fication
(relu, and drelu through the shipped modeling file) and sparse FFN decoding per family too.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from shearing.commands.convert import convert
from shearing.commands.oneshot import main as oneshot_main
from shearing.models.decoder import KVCache
from shearing.models.families import FAMILIES
from shearing.models.hf_io import load_model, save_pretrained
from shearing.trainer.train import main as train_main
from tests.helpers import WORKSPACE_VOCAB
from tests.models.test_families import ATOL, CONFIGS, logits, reference, target_of

STEPS = 6


def tiny_checkpoint(model_type: str, folder):
    """transformers' model of the family, saved as a user's source directory."""
    reference(model_type, vocab_size=WORKSPACE_VOCAB).save_pretrained(folder)  # the corpus'
    return folder


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_prune_convert_reload(model_type, tiny_workspace, tmp_path):
    source = tiny_checkpoint(model_type, tmp_path / "source")
    target = target_of(model_type)
    run = tmp_path / "run"
    args = [
        "yaml/tiny_prune.yaml", f"model.path={source}", f"data.path={tiny_workspace['data']}",
        f"save_folder={run}", f"max_duration={STEPS}ba", f"eval_interval={STEPS}ba",
        f"save_interval={STEPS}ba", "model.l0_module.lagrangian_warmup_steps=3",
        "model.l0_module.init=importance", "model.l0_module.calibration_rows=2",
        f"model.l0_module.target_model.num_hidden_layers={target['num_hidden_layers']}",
    ]  # fmt: skip
    assert train_main(args) == 0
    out = convert(run, tmp_path / "pruned")  # checks the written model against the masked
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values()), info
    assert type(hf).__name__ == FAMILIES[model_type].architecture
    written = json.loads((out / "config.json").read_text())
    assert written["model_type"] == model_type
    for key, value in target.items():
        assert written[key] == value, key
    x = torch.randint(0, WORKSPACE_VOCAB, (1, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(hf.eval(), x), logits(load_model(out), x), atol=ATOL, rtol=0)
    # continued pretraining of the pruned model with distillation from the unpruned source
    # (the default teacher, recorded by convert), converted again
    again = tmp_path / "continue"
    args = [
        "yaml/tiny_prune.yaml", f"model.path={out}", f"data.path={tiny_workspace['data']}",
        "model.l0_module=null", "distillation.alpha=1.0", f"save_folder={again}",
        "max_duration=2ba", "eval_interval=2ba", "save_interval=2ba",
    ]  # fmt: skip
    assert train_main(args) == 0
    saved = (again / "config.yaml").read_text()
    assert f"teacher_path: {source}" in saved
    final = convert(again, tmp_path / "final")
    assert json.loads((final / "config.json").read_text())["architectures"] == [
        FAMILIES[model_type].architecture
    ]
    # one-shot importance pruning of the same source to the same target
    shot = tmp_path / "oneshot"
    assert oneshot_main([
        "--config", "yaml/tiny_prune.yaml", "--method", "importance", "--out", str(shot),
        "--calibration-rows", "2", f"model.path={source}", f"data.path={tiny_workspace['data']}",
        f"model.l0_module.target_model.num_hidden_layers={target['num_hidden_layers']}",
    ]) == 0  # fmt: skip
    written = json.loads((shot / "config.json").read_text())
    assert {k: written[k] for k in target} == target and written["model_type"] == model_type


@pytest.mark.parametrize("model_type", list(CONFIGS))
@pytest.mark.parametrize("kind", ["relu", "drelu"])
def test_relufied_export_loads_as_the_family_and_sparse_decoding_equals_dense(
    model_type, kind, tmp_path
):
    ref = reference(model_type)
    ref.save_pretrained(tmp_path / "source")
    sparse = load_model(tmp_path / "source", hidden_act=kind)
    save_pretrained(sparse, tmp_path / "out")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "out", dtype=torch.float32, trust_remote_code=kind == "drelu"
    ).eval()
    expected = FAMILIES[model_type].architecture
    assert type(hf).__name__ == (expected if kind == "relu" else f"Shearing{expected}")
    x = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(logits(hf, x), logits(sparse, x), atol=ATOL, rtol=0)
    if sparse.shape.mlp_bias:  # the sparse path computes bias-free FFNs only
        with pytest.raises(ValueError, match="needs an FFN without biases"):
            sparse.set_sparse_decode(True)
        return
    dense = logits(sparse, x)
    sparse.set_sparse_decode(True)
    cache, steps = KVCache(sparse.shape.num_hidden_layers), []
    with torch.no_grad():
        for i in range(x.shape[1]):  # one token at a time: the sparse FFN path
            steps.append(sparse(x[:1, i : i + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), dense[:1], atol=ATOL, rtol=0)
