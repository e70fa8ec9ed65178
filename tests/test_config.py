"""Config loading and validation: every bad config is a one-line error naming the key."""

import json
import math
from pathlib import Path

import pytest
import torch
import transformers

from shearing.config import ConfigError, load_config
from shearing.models.published import LLAMA2_7B
from shearing.pruning.l0 import open_probability, sample_gates
from shearing.run import plan_data, resolve
from shearing.trainer.build import build_model

YAML = Path(__file__).resolve().parent.parent / "yaml"
LLAMA2_7B_PARAMS = 6_738_415_616


def one_line_error(fn, match):
    with pytest.raises(ConfigError) as err:
        fn()
    assert match in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def tiny(ws, *overrides):
    args = [f"model.path={ws['model']}", f"data.path={ws['data']}", *overrides]
    return load_config(YAML / "tiny_prune.yaml", args)


def check(cfg):
    run = resolve(cfg)
    return run.source, run.target


@pytest.fixture(scope="module")
def llama2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama2")
    (path / "config.json").write_text(json.dumps(LLAMA2_7B))
    return path


@pytest.mark.parametrize(
    "name,target",
    [
        (
            "prune_2.7b.yaml",
            dict(
                hidden_size=2560,
                num_attention_heads=20,
                num_key_value_heads=20,
                num_hidden_layers=32,
                intermediate_size=6912,
            ),
        ),
        (
            "prune_1.3b.yaml",
            dict(
                hidden_size=2048,
                num_attention_heads=16,
                num_key_value_heads=16,
                num_hidden_layers=24,
                intermediate_size=5504,
            ),
        ),
    ],
)
def test_published_configs_build_on_meta_device_with_real_counts(name, target, llama2_dir):
    paths = [f"model.path={llama2_dir}", "data.path=unused", "save_folder=unused"]
    cfg = load_config(YAML / name, paths)
    run = resolve(cfg, with_data=False)
    source, tgt = run.source, run.target
    model = build_model(run, meta=True)
    assert model.model.model.embed_tokens.weight.is_meta
    assert model.model.num_params() == LLAMA2_7B_PARAMS
    with torch.device("meta"):  # no weights are initialised on the meta device
        reference = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(**{**LLAMA2_7B, **target})
        )
    assert tgt.num_params() == reference.num_parameters()
    ones = {m: torch.ones(s.shape) for m, s in model.l0.specs.items()}
    assert model.l0.expected_num_params(ones).item() == source.num_params(include_embeddings=False)
    assert cfg.data.reference_losses[0] == (1.8712 if "2.7" in name else 1.9643)


def test_every_shipped_yaml_loads_and_starts_with_its_command():
    for path in YAML.glob("*.yaml"):
        assert path.read_text().startswith("# "), path
        assert any(
            "train.py " + f"yaml/{path.name}" in line for line in path.read_text().splitlines()[:8]
        ), path
        load_config(path, ["model.path=x", "data.path=y"])


def test_overrides_apply(tiny_workspace):
    cfg = tiny(tiny_workspace, "max_duration=12ba", "optimizer.lr=0.5")
    assert cfg.max_duration == "12ba" and cfg.optimizer.lr == 0.5


def test_unknown_key(tiny_workspace):
    one_line_error(
        lambda: tiny(tiny_workspace, "optimizer.learning_rate=1"),
        "unknown config key 'optimizer.learning_rate'",
    )
    one_line_error(lambda: tiny(tiny_workspace, "max_steps=10"), "unknown config key 'max_steps'")


def test_missing_required_key():
    one_line_error(
        lambda: load_config(YAML / "tiny_prune.yaml", ["data.path=x"]),
        "config key 'model.path' is required and has no value",
    )


def test_target_larger_than_source(tiny_workspace):
    cfg = tiny(tiny_workspace, "model.l0_module.target_model.hidden_size=64")
    one_line_error(
        lambda: check(cfg),
        "model.l0_module.target_model.hidden_size=64 is larger than the source's 32",
    )


def test_heads_not_a_multiple_of_kv_heads(tiny_workspace):
    cfg = tiny(
        tiny_workspace,
        "model.l0_module.target_model.num_attention_heads=3",
        "model.l0_module.target_model.num_key_value_heads=2",
    )
    one_line_error(
        lambda: check(cfg), "num_attention_heads=3 is not a multiple of num_key_value_heads=2"
    )


def test_target_change_without_its_module(tiny_workspace):
    cfg = tiny(tiny_workspace, "model.l0_module.pruning_modules=[layer,head,kv_group,intermediate]")
    one_line_error(
        lambda: check(cfg),
        "hidden_size=24 differs from the source's 32 but 'hidden' is not in "
        "model.l0_module.pruning_modules",
    )


def test_unknown_module_and_target_key(tiny_workspace):
    cfg = tiny(tiny_workspace, "model.l0_module.pruning_modules=[layers]")
    one_line_error(lambda: check(cfg), "pruning_modules entry 'layers' is unknown")
    cfg = tiny(tiny_workspace, "model.l0_module.target_model.vocab_size=10")
    one_line_error(lambda: check(cfg), "target_model.vocab_size is not a prunable dimension")


def test_warmup_longer_than_the_run(tiny_workspace):
    cfg = tiny(tiny_workspace, "max_duration=50ba")
    one_line_error(
        lambda: check(cfg),
        "lagrangian_warmup_steps=60 is longer than the run (max_duration=50ba, 50 steps)",
    )
    cfg = tiny(tiny_workspace, "scheduler.t_warmup=400ba")
    one_line_error(lambda: check(cfg), "scheduler.t_warmup=400ba is longer than the run")


def test_bad_duration_and_precision(tiny_workspace):
    one_line_error(
        lambda: check(tiny(tiny_workspace, "max_duration=2 days")),
        "max_duration='2 days' is not a duration; use N or Nba (steps), Nsp or Ntok",
    )
    one_line_error(
        lambda: check(tiny(tiny_workspace, "precision=bf16")), "precision='bf16' is not valid"
    )


def test_model_path_without_a_model(tiny_workspace, tmp_path):
    cfg = tiny(tiny_workspace, f"model.path={tmp_path}")
    one_line_error(lambda: check(cfg), "model.path: model path")


@pytest.mark.parametrize(
    "override,match",
    [
        (
            "data.domains=[alpha,delta]",
            "data.domains entry 'delta' is not in the corpus; available: alpha, beta, gamma",
        ),
        ("data.proportions=[0.5,0.5]", "data.proportions has 2 values for 3 domains"),
        (
            "data.proportions=[0.5,0.6,-0.1]",
            "data.proportions=[0.5, 0.6, -0.1] has a negative value",
        ),
        ("data.proportions=[0.5,0.3,0.3]", "data.proportions sum to 1.10000000, not 1"),
        ("data.reference_losses=[1.0,2.0]", "data.reference_losses has 2 values for 3 domains"),
        ("data.reference_losses=[1.0,0.0,2.0]", "must all be positive"),
    ],
)
def test_bad_data_config(tiny_workspace, override, match):
    one_line_error(lambda: plan_data(tiny(tiny_workspace, override)), match)


def test_data_path_without_manifest(tiny_workspace, tmp_path):
    with pytest.raises(ValueError, match="has no manifest.json; tokenize a corpus"):
        plan_data(tiny(tiny_workspace, f"data.path={tmp_path}"))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            ["data.update_interval=15", "data.reference_losses=[1,1,1]", "eval_interval=10ba"],
            "data.update_interval=15 is not a multiple of eval_interval=10ba",
        ),
        (
            ["data.update_interval=10"],
            "data.update_interval is set but data.reference_losses is not",
        ),
        (["data.update_type=doremi"], "data.update_type='doremi' is not valid"),
        (
            ["data.proportions=[0.2,0.3,0.5]", "data.proportions_from=run"],
            "data.proportions and data.proportions_from are both set",
        ),
    ],
)
def test_bad_dynamic_loading_config(tiny_workspace, overrides, match):
    one_line_error(lambda: check(tiny(tiny_workspace, *overrides)), match)


def test_proportions_from_a_previous_run(tiny_workspace, tmp_path):
    entry = {"step": 50, "proportions": {"alpha": 0.1, "beta": 0.6, "gamma": 0.3}}
    (tmp_path / "domain_history.jsonl").write_text(json.dumps(entry) + "\n")
    plan = plan_data(tiny(tiny_workspace, f"data.proportions_from={tmp_path}"))
    assert plan.proportions == pytest.approx([0.1, 0.6, 0.3])
    one_line_error(
        lambda: plan_data(tiny(tiny_workspace, f"data.proportions_from={tmp_path}/x")),
        "has no domain history",
    )


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["model.activation=gelu"], "model.activation='gelu' is not supported"),
        (["threshold_shift.step=5"], "threshold_shift needs a relu or fatrelu model, not 'silu'"),
        (["activation_l1.stages=[]"], "activation_l1.stages is empty"),
        (["distillation.temperature=0"], "distillation needs alpha >= 0 and temperature > 0"),
    ],
)
def test_bad_activation_sparsity_config(tiny_workspace, overrides, match):
    one_line_error(lambda: check(tiny(tiny_workspace, *overrides)), match)


def test_shipped_sparsity_recipes_validate(tiny_workspace):
    for name in ("relufy_smollm2", "prosparse_smollm2", "drelu_smollm2"):
        cfg = load_config(
            YAML / f"{name}.yaml",
            [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}"],
        )
        check(cfg)
    cfg = load_config(YAML / "prosparse_7b.yaml", ["model.path=x", "data.path=y"])
    assert [s.penalty for s in cfg.activation_l1.stages] == [0.0, 5e-3, 5e-2, 5e-2, 2e-1, 2e-1]
    assert cfg.optimizer.lr == 3e-5 and cfg.threshold_shift.threshold == 0.01


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.l0_module.init=magnitude", "model.l0_module.init='magnitude' is not valid"),
        ("model.l0_module.calibration_rows=0", "calibration_rows=0 must be positive"),
        ("model.l0_module.init_pruned_logit=-6", "init_pruned_logit=-6 is not valid; it needs"),
        (
            ("model.l0_module.init=importance", "model.l0_module.init_pruned_logit=4.0"),
            "init_pruned_logit=4 is not valid; it needs init: importance and a value below 4",
        ),
        ("model.l0_module.init_kept_logit=8", "init_kept_logit=8 is not valid; it needs"),
        (
            ("model.l0_module.init=importance", "model.l0_module.init_kept_logit=-2"),
            "init_kept_logit=-2 is not valid; it needs init: importance and a value above -2",
        ),
        (  # the pruned units' bound follows the kept units' start
            (
                "model.l0_module.init=importance",
                "model.l0_module.init_kept_logit=2",
                "model.l0_module.init_pruned_logit=1.5",
            ),
            "init_pruned_logit=1.5 is not valid; it needs init: importance and a value below 1",
        ),  # fmt: skip
    ],
)
def test_bad_gate_init(tiny_workspace, override, match):
    overrides = override if isinstance(override, tuple) else (override,)
    one_line_error(lambda: check(tiny(tiny_workspace, *overrides)), match)


def test_importance_init_orders_the_gates_by_importance(tiny_workspace):
    from shearing.pruning.importance import calibration_batches, importance_scores

    cfg = tiny(
        tiny_workspace, "model.l0_module.init=importance", "model.l0_module.calibration_rows=3"
    )
    run = resolve(cfg)
    lm = build_model(run)
    scores = importance_scores(lm.model, calibration_batches(run.data.corpus, 3))
    for module, logits in lm.l0.log_alpha.items():
        n = logits.shape[-1]
        order = logits.detach().reshape(-1, n).argsort(-1)
        assert torch.equal(order, scores[module].reshape(-1, n).argsort(-1)), module
    default = build_model(resolve(tiny(tiny_workspace)))
    assert default.l0.log_alpha["intermediate"].std() < 0.1  # all gates start alike
    # a lower start for the pruned units: same order, same kept units, rarer openings
    sure = build_model(resolve(tiny(tiny_workspace, "model.l0_module.init=importance",
                                    "model.l0_module.calibration_rows=3",
                                    "model.l0_module.init_pruned_logit=-6")))  # fmt: skip
    for module, logits in sure.l0.log_alpha.items():
        before = lm.l0.log_alpha[module].detach()
        pruned = before < 0
        assert torch.equal(logits.detach() < 0, pruned), module
        if pruned.any():
            # logits -6 - 1 + within: shifted by exactly -3 from the default init
            torch.testing.assert_close(logits.detach()[pruned], before[pruned] - 3.0)
            # P(open) = sigmoid(logit + 2/3 ln 11) <= sigmoid(-6 + 1.599) = 0.012
            assert float(open_probability(logits.detach()[pruned]).max()) < 0.0125
    # a higher start for the kept units: same order, same kept units, rarer partial masks
    firm = build_model(resolve(tiny(tiny_workspace, "model.l0_module.init=importance",
                                    "model.l0_module.calibration_rows=3",
                                    "model.l0_module.init_kept_logit=8")))  # fmt: skip
    for module, logits in firm.l0.log_alpha.items():
        before = lm.l0.log_alpha[module].detach()
        kept = before > 0
        assert torch.equal(logits.detach() > 0, kept), module
        # logits 8 - 1 + within: shifted by exactly +3 from the default init; pruned unchanged
        torch.testing.assert_close(logits.detach()[kept], before[kept] + 3.0)
        torch.testing.assert_close(logits.detach()[~kept], before[~kept])
        # a gate is below 1 when its stretched sigmoid is below 11/12, with probability
        # sigmoid(2/3 ln 11 - logit) <= sigmoid(1.599 - 7) = 0.0045 (default init: up to 0.083)
        below_one = torch.sigmoid(2 / 3 * math.log(11) - logits.detach()[kept])
        assert float(below_one.max()) < 0.005
        # and the gates' own sampler agrees (20,000 draws of the least sure kept gate)
        torch.manual_seed(0)
        draws = sample_gates(logits.detach()[kept].min().expand(20_000))
        assert float((draws < 1).float().mean()) < 0.01


def test_every_duration_key_of_the_schema_takes_every_form_by_one_rule():
    """Found from the schema (not listed here): each duration key gives the same steps as a
    bare integer, the same integer as a string (a command-line `key=12`), `Nba`, `Nsp`,
    `Ntok` and (but max_duration) `X.Ydur`; and another value changes the steps, so the key
    is read. Batches of 4 rows of 32 tokens; max_duration 1000 steps."""
    from omegaconf import OmegaConf

    from shearing.config import DURATION_KEYS, TrainConfig, steps_of

    assert {"max_duration", "eval_interval", "scheduler.t_warmup",
            "activation_l1.stages[].steps"} <= set(DURATION_KEYS)  # fmt: skip

    def steps(key: str, value):
        cfg = OmegaConf.structured(TrainConfig)
        cfg.merge_with({"max_duration": 1000, "global_train_batch_size": 4,
                        "model": {"path": "m", "l0_module": {}}, "data": {"path": "d"},
                        "threshold_shift": {"step": 3},
                        "activation_l1": {"stages": [{"steps": 3, "penalty": 0.1}]}})  # fmt: skip
        OmegaConf.update(cfg, key.replace("[]", "[0]"), value)
        return steps_of(OmegaConf.to_object(cfg), seq_len=32)

    for key in DURATION_KEYS:
        forms = [12, "12", "12ba", "48sp", "1536tok"] + ([] if key == "max_duration" else
                                                        ["0.012dur"])  # fmt: skip
        by_form = {form: steps(key, form) for form in forms}
        assert all(s == by_form[12] for s in by_form.values()), (key, by_form)
        assert steps(key, 24) != by_form[12], key


#: The FSDP block the GPU recipes had, each pasted in (before yaml/base/fsdp.yaml).
FSDP = {"sharding_strategy": "FULL_SHARD", "mixed_precision": "DEFAULT",
        "activation_checkpointing": True, "activation_checkpointing_reentrant": False,
        "limit_all_gathers": True, "state_dict_type": "full"}  # fmt: skip
GPU_RECIPES = ["prune_1.3b", "prune_2.7b", "prune_llama3.1_8b", "prune_qwen3_8b", "continue_1.3b",
               "continue_1.3b_distill", "continue_2.7b", "continue_2.7b_distill", "relufy_7b",
               "prosparse_7b", "drelu_mistral_7b"]  # fmt: skip


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_each_gpu_recipe_gets_the_shared_fsdp_block_from_its_base(name):
    text = (YAML / f"{name}.yaml").read_text()
    assert "base: [base/fsdp.yaml]" in text and "\nfsdp_config:" not in text  # written once
    cfg = load_config(YAML / f"{name}.yaml", ["model.path=m", "data.path=d"])
    assert cfg.fsdp_config == FSDP


def test_a_recipe_and_the_command_line_win_over_a_base_and_bases_nest(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "inner.yaml").write_text("seed: 3\nrun_name: inner\n")
    (tmp_path / "shared" / "outer.yaml").write_text(
        "base: inner.yaml\nrun_name: outer\nfsdp_config:\n  sharding_strategy: NO_SHARD\n"
        "  limit_all_gathers: true\n"
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "base: [shared/outer.yaml]\nmax_duration: 5ba\nglobal_train_batch_size: 2\n"
        "model:\n  path: m\ndata:\n  path: d\nfsdp_config:\n  sharding_strategy: FULL_SHARD\n"
    )
    cfg = load_config(recipe, ["seed=9"])
    assert cfg.run_name == "outer"  # the nearer file wins
    assert cfg.seed == 9  # the command line over all
    assert cfg.fsdp_config == {"sharding_strategy": "FULL_SHARD", "limit_all_gathers": True}
    assert load_config(recipe).seed == 3  # from the innermost base


@pytest.mark.parametrize(
    "base, message",
    [
        ("nowhere.yaml", "base 'nowhere.yaml' named by {recipe} does not exist"),
        ("recipe.yaml", "base 'recipe.yaml' named by {recipe} includes {recipe} again"),
        ("{a: 1}", "base={{'a': 1}} in {recipe} must be a list of YAML paths"),
    ],
)
def test_a_bad_base_is_one_line(tmp_path, base, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base: {base}\nmax_duration: 5ba\n")
    one_line_error(lambda: load_config(recipe), message.format(recipe=recipe))


def test_key_paths_come_from_the_schema_and_every_one_the_package_names_exists():
    """Messages name keys through `KEYS` (`K`): a path the schema lacks fails here, read from
    every module's syntax tree, not when its message is first printed."""
    import ast

    import shearing
    from shearing.config import KEYS

    assert KEYS.model.l0_module.settle_steps == "model.l0_module.settle_steps"
    assert KEYS.activation_l1.stages[2].steps == "activation_l1.stages[2].steps"
    assert KEYS.model.l0_module.target_model["hidden_size"] == (
        "model.l0_module.target_model.hidden_size"
    )
    with pytest.raises(AttributeError, match="the schema has no key 'model.l0_modules'"):
        KEYS.model.l0_modules  # noqa: B018
    import copy
    import pickle

    for copied in (pickle.loads(pickle.dumps(KEYS.model)), copy.deepcopy(KEYS.model)):
        assert copied == "model" and copied.l0_module.init == "model.l0_module.init"

    roots = {"K": KEYS, "KEYS": KEYS, "K_L0": KEYS.model.l0_module}
    named = []
    for path in Path(shearing.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            chain, top = [], node
            while isinstance(top, ast.Attribute):
                chain.append(top.attr)
                top = top.value
            if chain and isinstance(top, ast.Name) and top.id in roots:
                named.append((path.name, top.id, ".".join(reversed(chain))))
    assert len(named) > 50
    for where, root, dotted in named:
        key = roots[root]
        for part in dotted.split("."):
            key = getattr(key, part, None)
            assert key is not None, f"{where}: {root}.{dotted} is not a key of the schema"


@pytest.mark.parametrize(
    "override,match",
    [
        ("python_log_level=loud", "python_log_level='loud' is not valid"),
        ("optimizer.eps=0", r"optimizer.eps=0.0 is not valid"),
        ("model.l0_module.init=bogus", "model.l0_module.init='bogus' is not valid"),
        ("distillation.teacher_dtype=int8", "distillation.teacher_dtype='int8' is not valid"),
    ],
)
def test_config_only_checks_need_no_model_and_no_corpus(override, match):
    """`config.check` refuses what the config alone shows: no file is read (the paths do
    not exist), and the same config with a good value passes it."""
    from shearing.config import check

    paths = ["model.path=/nonexistent/model", "data.path=/nonexistent/data"]
    teacher = ["distillation.alpha=1.0"] if override.startswith("distillation") else []
    with pytest.raises(ConfigError, match=match):
        check(load_config("yaml/tiny_prune.yaml", [*paths, *teacher, override]))
    check(load_config("yaml/tiny_prune.yaml", [*paths, *teacher]))
