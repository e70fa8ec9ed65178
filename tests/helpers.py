"""Helpers shared by tests: tiny random transformers models mirrored into ours."""

from __future__ import annotations

import importlib
import io
import logging
import os
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch
import transformers

from shearing.models.config import DecoderShape
from shearing.models.decoder import MaskableDecoder
from shearing.models.hf_io import model_from_state_dict

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
)


#: Vocabulary of the tiny workspace's models (its SentencePiece tokenizer has 40 pieces).
WORKSPACE_VOCAB = 64


def tiny_hf_config(**overrides) -> transformers.LlamaConfig:
    """A tiny LLaMA config; defaults to 4 query heads over 2 key/value heads."""
    kwargs = {**TINY, "num_attention_heads": 4, "num_key_value_heads": 2, **overrides}
    return transformers.LlamaConfig(**kwargs)


def tiny_pair(seed: int = 0, **overrides):
    """A random transformers `LlamaForCausalLM` and our model holding the same weights."""
    torch.manual_seed(seed)
    ref = transformers.LlamaForCausalLM(tiny_hf_config(**overrides)).eval()
    ours = model_from_state_dict(DecoderShape.from_hf(ref.config.to_dict()), dict(ref.state_dict()))
    return ref, ours.eval()


def random_decoder(config: dict, std: float = 0.2, seed: int = 0, **shape) -> MaskableDecoder:
    """Our model of `config` (a config.json dictionary) with `shape`'s changes, every
    weight drawn from N(0, std): far from its initial values, so nothing cancels."""
    torch.manual_seed(seed)
    model = MaskableDecoder(DecoderShape.from_hf({**config, **shape}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


#: Every pruning module.
ALL_MODULES = ["layer", "hidden", "head", "kv_group", "intermediate"]


def random_l0(model, target_changes: dict, seed: int = 0, modules=ALL_MODULES):
    """Gates over `modules` toward the model's shape with `target_changes`, their logits
    drawn from N(0, 1): deterministic masks that keep an arbitrary set of units."""
    from shearing.pruning.l0 import L0Module

    torch.manual_seed(seed)
    l0 = L0Module(model.shape, model.shape.replace(**target_changes), modules, warmup_steps=1)
    with torch.no_grad():
        for a in l0.log_alpha.values():
            a.normal_()
    return l0


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def script_module(name: str):
    """A driver of scripts/ (demo, compare, bench) imported as a module, as its own
    folder sees it (the drivers import each other by name)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def train_here(argv: list[str]) -> subprocess.CompletedProcess:
    """`python train.py ARGV` run in this process, for tests whose subject is the run and
    not the process: composer's import (about 20 s on a 2-core CPU) is paid once a session
    instead of once a run. Returns what the child process would: the exit code, stdout and
    stderr (the run's log lines included: train.py sets up logging for each run)."""
    from shearing.trainer.train import main

    out, err = io.StringIO(), io.StringIO()
    root, cwd = logging.getLogger(), os.getcwd()
    handlers, level = root.handlers[:], root.level  # train.py configures logging anew
    try:
        os.chdir(Path(__file__).resolve().parent.parent)  # where train.py runs
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in argv])
    finally:
        os.chdir(cwd)
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(["train.py", *argv], code, out.getvalue(), err.getvalue())


def free_port() -> int:
    """A TCP port free on the loopback address now, for a launcher's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
