"""Distillation recovery: the loss by hand, a frozen teacher outside the student's state,
the default teacher of a converted model, and the 7B configs with a teacher on meta."""

from __future__ import annotations

import json
import math

import pytest
import torch

from shearing.config import ConfigError, load_config
from shearing.models.published import LLAMA2_7B
from shearing.objectives import distillation_loss, next_token_loss
from shearing.run import PROVENANCE, recorded, resolve
from shearing.trainer.build import build_model
from shearing.trainer.model import ShearingLM
from tests.helpers import tiny_pair
from tests.test_config import LLAMA2_7B_PARAMS, YAML
from tests.test_config import llama2_dir as llama2_dir  # the fixture


def test_kl_of_two_tokens_by_hand():
    # teacher p = (1/4, 3/4), student q = (1/2, 1/2):
    # KL(p || q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120...
    teacher = torch.tensor([[[0.0, math.log(3.0)]]])
    student = torch.zeros(1, 1, 2)
    by_hand = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert distillation_loss(student, teacher).item() == pytest.approx(by_hand, rel=1e-6)
    # temperature 2 on logits (0, 2 ln 3): p = (1/4, 3/4) again, times T^2 = 4
    teacher2 = torch.tensor([[[0.0, 2 * math.log(3.0)]]])
    got = distillation_loss(student, teacher2, temperature=2.0).item()
    assert got == pytest.approx(4 * by_hand, rel=1e-6)


def lm_with_teacher(**kwargs) -> tuple[ShearingLM, torch.nn.Module]:
    _, student = tiny_pair(seed=0)
    _, teacher = tiny_pair(seed=1)
    lm = ShearingLM(student.train(), None, ["a"], teacher=teacher, **kwargs)
    return lm, teacher


def test_pure_distillation_loss_is_alpha_times_kl_with_ce_still_reported():
    lm, teacher = lm_with_teacher(distill_alpha=2.0, distill_temperature=1.5, ce_weight=0.0)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    out = lm({"input_ids": ids})
    terms = lm.loss(out, {"input_ids": ids})
    with torch.no_grad():
        t = teacher(ids)
    p = torch.softmax(t / 1.5, -1)
    kl = (p * (torch.log_softmax(t / 1.5, -1) - torch.log_softmax(out / 1.5, -1))).sum(-1)
    assert terms["distillation"].item() == pytest.approx(kl.mean().item() * 1.5**2, rel=1e-5)
    assert terms["total"].item() == pytest.approx(2.0 * terms["distillation"].item(), rel=1e-6)
    assert terms["ce"].item() == pytest.approx(next_token_loss(out, ids).item(), rel=1e-6)


def test_a_step_trains_the_student_and_never_the_teacher():
    lm, teacher = lm_with_teacher(ce_weight=0.5)
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    student_before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    # composer optimizes and checkpoints what the composer model holds: the teacher is none of it
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in lm.parameters()}
    assert not any(k.startswith("teacher") or "_teacher" in k for k in lm.state_dict())
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    lm.loss(lm({"input_ids": ids}), {"input_ids": ids})["total"].backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for n, p in teacher.named_parameters():
        assert torch.equal(p, before[n]), n
    assert any(not torch.equal(p, student_before[n]) for n, p in lm.model.named_parameters())
    assert not teacher.training


def test_the_default_teacher_of_a_converted_model_is_its_source(tmp_path, tiny_workspace):
    pruned = tmp_path / "pruned_hf"
    pruned.mkdir()
    (pruned / "config.json").write_text((tiny_workspace["model"] / "config.json").read_text())
    source = tiny_workspace["model"]
    (pruned / PROVENANCE).write_text(json.dumps({"source_model": str(source)}))
    args = [f"model.path={pruned}", f"data.path={tiny_workspace['data']}",
            "distillation.alpha=1.0"]  # fmt: skip
    cfg = load_config(YAML / "continue_smollm2.yaml", args)
    run = resolve(cfg)
    assert run.teacher_path == source
    # written into the run's config.yaml, so later commands need not re-derive it
    assert recorded(run).distillation.teacher_path == str(source)
    assert cfg.distillation.teacher_path is None  # the user's config is left as given
    # an explicit teacher wins; a plain model is its own default teacher
    explicit = resolve(load_config(YAML / "continue_smollm2.yaml",
                                   args + [f"distillation.teacher_path={pruned}"]))  # fmt: skip
    assert explicit.teacher_path == pruned
    own = resolve(load_config(YAML / "continue_smollm2.yaml", args[1:] + [f"model.path={source}"]))
    assert own.teacher_path == source


def test_a_teacher_with_another_vocabulary_is_refused(tmp_path, tiny_workspace):
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((tiny_workspace["model"] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "vocab_size": 65}))
    args = [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}",
            f"distillation.teacher_path={other}"]  # fmt: skip
    with pytest.raises(ConfigError, match="vocabulary of 65, the student 64"):
        resolve(load_config(YAML / "continue_smollm2.yaml", args))


@pytest.mark.parametrize("name", ["continue_2.7b_distill.yaml", "continue_1.3b_distill.yaml"])
def test_the_7b_distillation_configs_build_with_a_bf16_teacher_on_meta(name, tmp_path, llama2_dir):
    """The pruned model continues with the unpruned Llama-2-7B as teacher, found through
    the provenance record convert_to_hf.sh writes."""
    target = {"2.7": (2560, 20, 32, 6912), "1.3": (2048, 16, 24, 5504)}[name[9:12]]
    d, heads, layers, ffn = target
    pruned = tmp_path / "pruned_hf"
    pruned.mkdir()
    shape = {"hidden_size": d, "num_attention_heads": heads, "num_key_value_heads": heads,
             "num_hidden_layers": layers, "intermediate_size": ffn}  # fmt: skip
    (pruned / "config.json").write_text(json.dumps({**LLAMA2_7B, **shape}))
    (pruned / PROVENANCE).write_text(json.dumps({"source_model": str(llama2_dir)}))
    args = [f"model.path={pruned}", "data.path=unused", "data.proportions_from=unused"]
    cfg = load_config(YAML / name, args)
    assert cfg.distillation.ce_weight == 0.0  # pure distillation (Minitron)
    run = resolve(cfg, with_data=False)
    assert run.teacher_path == llama2_dir
    model = build_model(run, meta=True)
    teacher = model.teacher
    assert sum(p.numel() for p in teacher.parameters()) == LLAMA2_7B_PARAMS
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert all(p.is_meta and not p.requires_grad for p in teacher.parameters())
    assert model.model.num_params() < LLAMA2_7B_PARAMS / 2
    assert sum(p.numel() for p in model.parameters()) == model.model.num_params()
    # the rest of the config is the plain continue config's
    plain = load_config(YAML / name.replace("_distill", ""), args)
    assert plain.distillation is None
    assert {**vars(plain), "run_name": None} == {
        **vars(cfg), "run_name": None, "distillation": None
    }  # fmt: skip


@pytest.mark.parametrize(
    "override,message",
    [
        ("distillation.ce_weight=-1", "distillation.ce_weight=-1.0 is not valid"),
        ("distillation.teacher_dtype=int8", "distillation.teacher_dtype='int8' is not valid"),
    ],
)
def test_bad_distillation_keys_are_one_line_errors(override, message, tiny_workspace):
    args = [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}",
            "distillation.alpha=0", override]  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        resolve(load_config(YAML / "continue_smollm2.yaml", args))
