"""Run a GGUF written by shearing in llama.cpp itself and compare it with the HF output.

    pip install llama-cpp-python   # compiles llama.cpp (about 4 minutes on 2 cores)
    python scripts/check_llama_cpp.py --model HF_DIR --gguf FILE [--text FILE] [--tokens 256]

Not part of `make test`: llama.cpp is not on a registry this project installs from without
compiling it. The check, on real text (a Python standard-library module plus accents, CJK,
digits and odd spacing, or `--text`):
- llama.cpp's tokenizer gives the same ids as the HF directory's tokenizer;
- llama.cpp's logits over the first `--tokens` ids against transformers' on the HF directory,
  with llama.cpp's key/value cache in f32 (its default f16 cache alone moves logits by ~1e-2).
GELU models (Gemma) are compared as ggml computes GELU on a CPU: from a table of float16
values indexed by the float16-rounded input (ggml-cpu/vec.h, GGML_GELU_FP16), which alone
moves a tiny random model's logits by ~1e-3; both numbers are printed, the table's judged.
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


class GgmlGelu:
    """torch's GELU, or while `on` GELU as ggml's CPU backend computes it: float16 input,
    the float16 table value, x itself from 10 up and 0 from -10 down. Installed before the
    model is built (transformers' activations bind torch's function then)."""

    exact = torch.nn.functional.gelu
    on = False

    def __call__(self, x, approximate="none"):
        if not self.on:
            return self.exact(x, approximate=approximate)
        y = self.exact(x.half().float(), approximate=approximate).half().float()
        return torch.where(x >= 10, x, torch.where(x <= -10, torch.zeros_like(x), y))


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
    gelu = torch.nn.functional.gelu = GgmlGelu()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    config = model.config
    tabled = "gelu" in str(getattr(config, "hidden_activation", None) or config.hidden_act)
    for table in (False, True) if tabled else (False,):
        gelu.on = table
        with torch.no_grad():
            ref = model(torch.tensor([seq])).logits[0].numpy()
        relative = float(np.abs(ours - ref).max() / np.abs(ref).max())
        agree = float((ours.argmax(-1) == ref.argmax(-1)).mean())
        print(
            f"logits over {len(seq)} positions{' (GELU as ggml tables it)' if table else ''}: "
            f"max |difference| / max |logit| {relative:.2e}, argmax agreement {agree:.4f}"
        )
    quantized = "q8_0" in Path(args.gguf).name or llm.metadata.get("general.file_type") == "7"
    failed |= not quantized and relative > 1e-3
    print("FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
