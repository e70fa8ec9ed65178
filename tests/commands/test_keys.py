"""`shearing keys`: the configuration reference is the schema's, and what it says each key
takes is what the config check refuses outside of."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from shearing import config
from shearing.commands.keys import (
    BEGIN,
    COMMANDS_BEGIN,
    COMMANDS_END,
    COMMANDS_PAGE,
    END,
    PAGE,
    commands_reference,
    reference,
    rows,
)
from shearing.config import ConfigError, load_config
from shearing.run import resolve

YAML = Path(__file__).resolve().parents[2] / "yaml"


def test_the_page_holds_the_reference_and_every_key_has_a_meaning():
    text = PAGE.read_text()
    assert text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip() == reference(), (
        "regenerate it: shearing keys --write"
    )
    text = COMMANDS_PAGE.read_text()
    between = text[text.index(COMMANDS_BEGIN) + len(COMMANDS_BEGIN) : text.index(COMMANDS_END)]
    assert between.strip() == commands_reference(), "regenerate it: shearing keys --write"
    listed = {key for key, *_ in rows()}
    for key in config.DURATION_KEYS:  # the schema's own walk finds every duration key
        assert key in listed, key
    assert all(meaning for *_, meaning in rows()), [k for k, *_, m in rows() if not m]


def _refusal(ws, *overrides) -> str:
    """The one line the resolver (every run's checks) gives for the tiny run with these."""
    paths = [f"model.path={ws['model']}", f"data.path={ws['data']}"]
    with pytest.raises(ConfigError) as err:
        resolve(load_config(YAML / "tiny_prune.yaml", [*paths, *overrides]))
    return str(err.value)


def _choice_keys() -> list[tuple[str, tuple[str, ...]]]:
    """(dotted key, its choices) of every key the schema marks with `choice`."""
    found = {}

    def walk(schema, prefix):
        types = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            if "choices" in f.metadata:
                found[prefix + f.name] = f.metadata["choices"]
            for inner, in_list in config._nested_schemas(types[f.name]):
                if not in_list:
                    walk(inner, prefix + f.name + ".")

    walk(config.TrainConfig, "")
    return sorted(found.items())


SECTIONS = ["model.l0_module.pruning_modules=[layer]", "distillation.alpha=1.0"]


@pytest.mark.parametrize("key,options", _choice_keys(), ids=lambda x: str(x))
def test_a_value_outside_the_listed_choices_is_refused(key, options, tiny_workspace):
    listed = next(valid for k, _, valid, *_ in rows() if k == key)
    assert all(f"`{o}`" in listed for o in options)
    said = _refusal(tiny_workspace, *SECTIONS, f"{key}=bogus")
    assert said.startswith(f"{key}='bogus' is not ") and said.endswith(", ".join(options))


@pytest.mark.parametrize("key,bad", [
    ("device_eval_batch_size", 0), ("save_num_checkpoints_to_keep", -2), ("max_grad_norm", 0),
    ("optimizer.lr", -1), ("optimizer.l0_lr", -1), ("optimizer.lambda_ascent_lr", 0),
    ("optimizer.weight_decay", -1), ("optimizer.eps", 0), ("optimizer.betas", "[0.9,1.0]"),
    ("scheduler.alpha_f", 1.5), ("data.num_workers", -1), ("data.eval_max_rows", 0),
    ("data.eta", 0), ("eval_subset_num_batches", 0), ("dist_timeout", 0),
    ("model.fatrelu_threshold", -0.1),
])  # fmt: skip
def test_a_number_outside_its_listed_range_is_refused_with_the_same_words(key, bad, tiny_workspace):
    listed = next(valid for k, _, valid, *_ in rows() if k == key)
    said = _refusal(tiny_workspace, f"{key}={bad}")
    words = listed.split(": ", 1)[1]  # "number: 0 or more" -> "0 or more"
    assert said.startswith(f"{key}=") and said.endswith(f"must be {words}")


def test_every_commands_help_says_what_it_does_and_outputs_in_one_screen(capsys):
    """`--help` of every command: exit 0, what the command does, its input flags, what it
    prints or writes ("output"), in at most 50 lines; `shearing --help` names them all."""
    import importlib

    from shearing.cli import COMMANDS, SUMMARIES
    from shearing.cli import main as shearing

    assert shearing(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name}" in listed and SUMMARIES[name] in listed, name
    for name, module in sorted(set(COMMANDS.items())):
        try:
            code = importlib.import_module(module).main(["--help"])
        except SystemExit as exit_:  # argparse's --help
            code = exit_.code
        text = capsys.readouterr().out
        assert code in (0, None), name
        assert len(text.strip().splitlines()) <= 50, (name, len(text.splitlines()))
        assert "output" in text.lower() and "usage:" in text, name
