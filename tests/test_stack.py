"""The stack the suite runs on is the locked one, and the parts of composer and streaming
whose declared caps `[tool.uv] override-dependencies` lifts work on it.

Which test exercises which composer or streaming feature is listed in docs/stack.md; this
file checks what those tests take for granted: the versions, and the cross-package imports
the caps were about.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "uv.lock"
PINS = ROOT / "requirements.lock.txt"


def lock_versions() -> dict[str, set[str]]:
    """Every package uv.lock resolves, with its version(s) (a package can have one per
    Python version)."""
    lock = tomllib.loads(LOCK.read_text())
    found: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "version" in package and package["name"] != "shearing":
            found.setdefault(package["name"], set()).add(package["version"])
    return found


def pinned_requirements() -> list[Requirement]:
    lines = [line.split("#")[0].strip() for line in PINS.read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_pip_list_is_the_lock():
    """requirements.lock.txt (what docs/pipeline.md tells pip users to install) pins every
    package of uv.lock at a version uv.lock resolves, and nothing else."""
    lock = {normal(k): v for k, v in lock_versions().items()}
    pins = pinned_requirements()
    for req in pins:
        (spec,) = req.specifier
        assert spec.operator == "==", req
        assert spec.version in lock.get(normal(req.name), set()), f"{req} is not in uv.lock"
    assert {normal(r.name) for r in pins} == set(lock)


def test_the_environment_is_the_lock():
    """Every pinned package that applies here is installed at its pinned version: the
    suite tests exactly what a fresh machine installs."""
    wrong = []
    for req in pinned_requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        (spec,) = req.specifier
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != spec.version:
            wrong.append(f"{req.name}: {have} installed, {spec.version} pinned")
    assert not wrong, wrong


def test_the_overrides_repeat_the_projects_pins():
    """An override replaces every requirement on its package, the project's own included,
    so each must equal the pin in [project] dependencies (one version, one home)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = {normal(Requirement(d).name): Requirement(d) for d in project["project"]["dependencies"]}
    overrides = [Requirement(o) for o in project["tool"]["uv"]["override-dependencies"]]
    for over in overrides:
        if normal(over.name) in deps:
            assert deps[normal(over.name)].specifier == over.specifier, over
    assert {normal(o.name) for o in overrides} >= {"torch", "transformers", "numpy"}


def test_the_stack_is_current():
    """torch 2.14 or newer, transformers 5, numpy 2 (the caps composer 0.32.1 and
    streaming 0.13.0 declare would hold torch < 2.7.1, transformers < 5, numpy < 2.2)."""
    from packaging.version import Version

    assert Version(importlib.metadata.version("torch")) >= Version("2.14")
    assert Version(importlib.metadata.version("transformers")).major == 5
    assert Version(importlib.metadata.version("numpy")) >= Version("2.2")


@pytest.mark.parametrize(
    "module,names",
    [
        # streaming's dataloader and sample datasets: what it takes from transformers
        ("streaming.base.dataloader", ["StreamingDataLoader"]),
        ("transformers.feature_extraction_utils", ["BatchFeature"]),
        ("transformers.tokenization_utils_base", ["BatchEncoding"]),
        ("transformers.models.auto.tokenization_auto", ["AutoTokenizer"]),
        # composer's torch-facing parts the project uses (trainer, FSDP, launcher, dist)
        ("composer", ["Trainer"]),
        ("composer.utils.parallelism", ["FSDPConfig"]),
        ("composer.distributed.dist_strategy", ["prepare_fsdp_module"]),
        ("composer.cli.launcher", ["main"]),
        ("composer.utils.misc", []),  # imports torchvision
        ("streaming", ["MDSWriter", "StreamingDataset"]),
        ("streaming.base.format", ["reader_from_json"]),
    ],
)
def test_composer_and_streaming_import_on_this_stack(module, names):
    loaded = importlib.import_module(module)
    for name in names:
        assert hasattr(loaded, name), f"{module}.{name}"


def test_the_lock_was_resolved_for_this_python():
    lock = tomllib.loads(LOCK.read_text())
    assert SpecifierSet(lock["requires-python"]).contains(platform.python_version())
