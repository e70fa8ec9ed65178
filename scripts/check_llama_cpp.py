"""Run a GGUF written by shearing in llama.cpp itself and compare it with the HF output.

    pip install llama-cpp-python   # compiles llama.cpp (about 4 minutes on 2 cores)
    python scripts/check_llama_cpp.py --model HF_DIR --gguf FILE [--text FILE] [--tokens 256]

Not part of `make test`: llama.cpp is not on a registry this project installs from without
compiling it. The check, on real text (a Python standard-library module plus accents, CJK,
digits and odd spacing, or `--text`):
- llama.cpp's tokenizer gives the same ids as the HF directory's tokenizer;
- llama.cpp's logits over the first `--tokens` ids against transformers' on the HF directory,
  with llama.cpp's key/value cache in f32 (its default f16 cache alone moves logits by ~1e-2).
Exits 1 when the ids differ or an f32/f16/bf16 GGUF's logits are further than 1e-3 of the
largest logit from transformers' (q8_0: the argmax agreement is printed, not judged).
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

import numpy as np
import torch

GGML_TYPE_F32 = 0


def sample_text() -> str:
    module = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    return module.read_text()[:20000] + "\nNaïve café, 東京 123456 x=1e-3;\n\tTabs  and   spaces.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the Hugging Face directory")
    parser.add_argument("--gguf", required=True, help="the GGUF written from it")
    parser.add_argument("--text", help="a UTF-8 text file (default: see above)")
    parser.add_argument("--tokens", type=int, default=256, help="positions whose logits compare")
    args = parser.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        print("error: llama-cpp-python is not installed (pip install llama-cpp-python)")
        return 2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = Path(args.text).read_text(encoding="utf-8") if args.text else sample_text()
    ref_ids = AutoTokenizer.from_pretrained(args.model)(text, add_special_tokens=False)["input_ids"]
    llm = llama_cpp.Llama(
        model_path=args.gguf, logits_all=True, n_ctx=max(args.tokens, 512), verbose=False,
        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
    )  # fmt: skip
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    kind = llm.metadata.get("tokenizer.ggml.model"), llm.metadata.get("tokenizer.ggml.pre")
    print(f"tokenizer: {kind[0]} / {kind[1]}; {len(ids)} ids from llama.cpp, {len(ref_ids)} HF")
    failed = ids != ref_ids
    if failed:
        n = next((i for i, (a, b) in enumerate(zip(ids, ref_ids, strict=False)) if a != b), None)
        print(f"ids differ (first at position {n})")
    seq = ref_ids[: args.tokens]
    llm.eval(seq)
    ours = np.array(llm.scores[: len(seq)])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([seq])).logits[0].numpy()
    relative = float(np.abs(ours - ref).max() / np.abs(ref).max())
    agree = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    print(f"logits over {len(seq)} positions: max |difference| / max |logit| {relative:.2e}, "
          f"argmax agreement {agree:.4f}")  # fmt: skip
    quantized = "q8_0" in Path(args.gguf).name or llm.metadata.get("general.file_type") == "7"
    failed |= not quantized and relative > 1e-3
    print("FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
