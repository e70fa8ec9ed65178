"""The configuration reference: every key of the schema with its type, default, valid
values, the runs that read it and what it means, generated from `shearing/config.py`
(the dataclasses, their `#:` comments, the `choices` and duration marks and the number
rules that `config.check` applies).

    shearing keys            # print the reference (markdown)
    shearing keys --write    # put it into docs/configuration.md, and every command's
                             # --help into docs/pipeline.md
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import types
import typing
from pathlib import Path

from omegaconf import MISSING

from shearing import config
from shearing.cli import run as run_command

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = DOCS / "configuration.md"
BEGIN, END = "<!-- keys: begin (shearing keys --write) -->", "<!-- keys: end -->"
#: Where every command's --help goes (`commands_reference`).
COMMANDS_PAGE = DOCS / "pipeline.md"
COMMANDS_BEGIN = "<!-- commands: begin (shearing keys --write) -->"
COMMANDS_END = "<!-- commands: end -->"
DURATION_FORMS = "a duration: N or Nba (steps), Nsp (samples), Ntok (tokens), X.Ydur"

#: Which runs read a key, by the first matching prefix of its path.
READ_BY = (
    ("model.path", "every run; convert, oneshot"),
    ("model.l0_module", "pruning runs (this section set); convert, oneshot"),
    ("model.", "every run; convert"),
    ("model", "every run; convert, oneshot"),
    ("data.path", "every training run; oneshot (calibration)"),
    ("data.remote", "every training run; oneshot (calibration)"),
    ("data.local", "every training run; oneshot (calibration)"),
    ("distillation", "runs with this section (`*_distill`, relufy, dReLU recipes)"),
    ("activation_l1", "ProSparse runs (this section set)"),
    ("threshold_shift", "ProSparse runs (this section set)"),
    ("variables", "the loader (`${variables.x}` in any value)"),
    ("", "every training run"),
)


def comments(cls: type) -> dict[str, str]:
    """The `#:` comment above each field of a dataclass, joined into one line."""
    lines, start = inspect.getsourcelines(cls)
    tree = ast.parse(inspect.cleandoc("".join(lines)) if lines[0][0] == " " else "".join(lines))
    found = {}
    body = tree.body[0].body
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        above, i = [], node.lineno - 2  # 0-based index of the line before the field
        while i >= 0 and lines[i].strip().startswith("#:"):
            above.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        found[node.target.id] = " ".join(above)
    return found


def _sections(hint) -> list[tuple[type, bool]]:
    return list(config._nested_schemas(hint))


def _type(hint, f: dataclasses.Field) -> str:
    if f.metadata.get("duration"):
        return DURATION_FORMS + (", or null" if _optional(hint) else "")
    if "choices" in f.metadata:
        options = ", ".join(f"`{c}`" for c in f.metadata["choices"])
        return f"one of {options}" + (", or null" if _optional(hint) else "")
    names = {int: "integer", float: "number", str: "string", bool: "true or false"}
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    parts = []
    for a in args:
        origin = typing.get_origin(a)
        if origin is list:
            inner = typing.get_args(a)[0]
            parts.append(f"list of {names.get(inner, 'entrie')}s")
        elif origin is dict:
            parts.append("mapping")
        else:
            parts.append(names.get(a, getattr(a, "__name__", str(a))))
    text = " or ".join(dict.fromkeys(parts))
    return text + (", or null" if _optional(hint) else "")


def _optional(hint) -> bool:
    return type(None) in typing.get_args(hint)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is MISSING or value == MISSING:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value) if value != {} else "{}"


def _read_by(path: str) -> str:
    return next(who for prefix, who in READ_BY if path.startswith(prefix))


def rows(schema: type = config.TrainConfig, prefix: str = "") -> list[tuple[str, ...]]:
    """(key, default, valid values, read by, meaning) of every key, in schema order; a
    section (a nested dataclass) has a row of its own, then its keys."""
    rules = {str(key): valid for key, _, valid in config.NUMBER_RULES}
    hints = typing.get_type_hints(schema)
    said = comments(schema)
    out = []
    for f in dataclasses.fields(schema):
        path = prefix + f.name
        hint = hints[f.name]
        nested = _sections(hint)
        meaning = said.get(f.name, "")
        if nested:
            inner, in_list = nested[0]
            doc = inspect.getdoc(inner) or ""
            if doc and not doc.startswith(inner.__name__):
                meaning = meaning or " ".join(doc.split())
            kind = "list of sections" if in_list else "section"
            default = "[]" if in_list else "null" if _optional(hint) else "its keys' defaults"
            out.append((path, default, kind + (", or null" if _optional(hint) else ""),
                        _read_by(path), meaning))  # fmt: skip
            out += rows(inner, path + ("[]." if in_list else "."))
            continue
        valid = _type(hint, f)
        if path in rules:
            valid = f"{valid}: {rules[path]}"
        out.append((path, _default(f), valid, _read_by(path), meaning))
    return out


def reference() -> str:
    """The reference as a markdown table."""
    lines = ["| key | default | valid values | read by | meaning |", "|---|---|---|---|---|"]
    for key, default, valid, who, meaning in rows():
        cells = [f"`{key}`", f"`{default}`", valid, who, meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def help_text(module: str) -> str:
    """What `--help` of a command module prints, formatted for 100 columns."""
    import contextlib
    import importlib
    import io
    import os

    out = io.StringIO()
    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out):
            try:
                importlib.import_module(module).main(["--help"])
            except SystemExit:  # argparse's --help
                pass
    finally:
        if width is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = width
    return out.getvalue().rstrip()


def commands_reference() -> str:
    """Every command's --help, one section each, in `shearing --help`'s order."""
    from shearing.cli import COMMANDS

    parts, seen = [], set()
    for name, module in COMMANDS.items():
        if module in seen:
            continue
        seen.add(module)
        parts.append(f"### `shearing {name}`\n\n```text\n{help_text(module)}\n```")
    return "\n\n".join(parts)


def _put(page: Path, begin: str, end: str, body: str) -> None:
    text = page.read_text()
    start, stop = text.index(begin) + len(begin), text.index(end)
    page.write_text(text[:start] + "\n" + body + "\n" + text[stop:])


def write() -> None:
    """Replace the key reference and the commands' help between their pages' markers."""
    _put(PAGE, BEGIN, END, reference())
    _put(COMMANDS_PAGE, COMMANDS_BEGIN, COMMANDS_END, commands_reference())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shearing keys",
        description=__doc__.split("\n\n")[0],
        epilog=f"output: the reference as a markdown table; with --write into {PAGE.name}, and "
        f"every command's --help into {COMMANDS_PAGE.name}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--write", action="store_true", help=f"update {PAGE.name} and {COMMANDS_PAGE.name}"
    )
    args = parser.parse_args(argv)
    return run_command(lambda: write() if args.write else print(reference()))


if __name__ == "__main__":
    sys.exit(main())
