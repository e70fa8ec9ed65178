"""The engine stays replaceable: only `shearing.trainer` (the composer wing) imports
composer, and the model, gates and schema import no streaming either. Each module is
imported alone in a fresh interpreter and `sys.modules` is read afterwards; the modules
are found by walking the package, not listed by hand. And the package's own imports,
read from the source (function-local ones included), form no cycle."""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import shearing

WING = "shearing.trainer"
#: Modules that need neither the trainer nor the shard format.
NO_STREAMING = ("shearing.models", "shearing.pruning.l0", "shearing.pruning.finalize",
                "shearing.pruning.sizing", "shearing.pruning.modules", "shearing.config",
                "shearing.data.dynamic")  # fmt: skip


def modules() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages(shearing.__path__, "shearing.")]
    return sorted(m for m in found if not m.startswith("shearing.export"))  # shipped code


def imported_by(name: str) -> set[str]:
    return imported_by_code(f"import importlib; importlib.import_module({name!r})")


def imported_by_code(code: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running `code`."""
    code += "; import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_only_the_trainer_wing_imports_composer():
    found = modules()
    assert any(m.startswith(WING) for m in found) and len(found) > 30
    # one interpreter per module would take minutes: import them all, in a child, each
    # after a snapshot, and report which top-level packages each one added
    code = f"""
import importlib, json, sys
out = {{}}
for name in {[m for m in found if not m.startswith(WING)]!r}:
    before = set(sys.modules)
    importlib.import_module(name)
    out[name] = sorted({{m.split('.')[0] for m in set(sys.modules) - before}})
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    added = json.loads(result.stdout.strip().splitlines()[-1])
    assert not [m for m, pkgs in added.items() if "composer" in pkgs]


def test_each_core_module_alone_imports_no_composer_and_no_streaming():
    """All of them in one fresh interpreter: if none loads composer or streaming, none of
    them alone does (and a failure names the modules to look at)."""
    core = [m for m in modules() if m.startswith(NO_STREAMING)]
    assert len(core) > 10
    code = f"import importlib; [importlib.import_module(m) for m in {core!r}]"
    loaded = imported_by_code(code)
    assert "composer" not in loaded, core
    assert "streaming" not in loaded, core


def test_the_schema_imports_neither_torch_nor_composer():
    loaded = imported_by("shearing.config")
    assert not loaded & {"torch", "composer", "streaming", "transformers"}, loaded


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, read from each file's syntax tree (every
    `import` statement, at the top or inside a function)."""
    names = set(modules()) | {"shearing"}
    graph: dict[str, set[str]] = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from shearing.models import hf_io` imports the submodule
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in names and t != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: paths that come back to where they started (depth-first)."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        done.add(node)

    for start in sorted(graph):
        visit(start, [])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_imports_form_no_cycle():
    graph = import_graph()
    assert graph["shearing.models.hf_io"] >= {"shearing.models.gguf_read"}  # read: real edges
    assert cycles(graph) == []


#: The two wings above the core: the composer integration and the commands beside training.
WINGS = (WING, "shearing.commands")


def test_no_import_points_up_from_the_core_to_a_wing():
    """The core (model, gates, slicing, data, schema, resolver, files) is built on by the
    trainer and the commands and imports neither; the commands do not need the trainer."""
    graph = import_graph()
    up = {m: sorted(t for t in targets if t.startswith(WINGS))
          for m, targets in graph.items() if not m.startswith(WINGS)}  # fmt: skip
    assert {m: t for m, t in up.items() if t} == {}
    commands = {m: t for m, t in graph.items() if m.startswith("shearing.commands")}
    assert len(commands) > 8
    assert not {m for m, t in commands.items() if any(x.startswith(WING) for x in t)}
