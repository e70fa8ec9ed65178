"""Greedy decoding with a key/value cache."""

from __future__ import annotations

import torch
from torch import Tensor

from shearing.models.decoder import KVCache, MaskableDecoder


@torch.no_grad()
def greedy_generate(
    model: MaskableDecoder,
    input_ids: Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> Tensor:
    """Append up to `max_new_tokens` argmax tokens to each row of (b, s) `input_ids`.

    Stops early once every row has produced `eos_token_id`. Returns (b, s + n) ids.
    """
    cache = KVCache(model.shape.num_hidden_layers)
    out = input_ids
    next_input = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = model(next_input, cache=cache)
        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (b, 1)
        out = torch.cat([out, next_token], dim=1)
        next_input = next_token
        if eos_token_id is not None:
            done |= next_token.squeeze(1) == eos_token_id
            if bool(done.all()):
                break
    return out


@torch.no_grad()
def stepwise_logits(model: MaskableDecoder, input_ids: Tensor) -> Tensor:
    """The (b, s, V) logits of `input_ids` computed as decoding does: one row at a time,
    one token per forward, with a key/value cache (so sparse FFN decoding applies)."""
    rows = []
    for row in input_ids.split(1):
        cache = KVCache(model.shape.num_hidden_layers)
        rows.append(
            torch.cat([model(row[:, t : t + 1], cache=cache) for t in range(row.shape[1])], 1)
        )
    return torch.cat(rows)


def describe(model: MaskableDecoder) -> list[tuple[str, str]]:
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


DEFAULT_PROMPT = "The three most useful things to know about pruning neural networks are"


def main(argv: list[str] | None = None) -> int:
    """`shearing generate --model DIR [--prompt TEXT] [--max-new-tokens N]`:
    print the model's shape and size and a greedy continuation of the prompt."""
    import argparse
    import time

    from shearing.cli import run
    from shearing.models.hf_io import load_model, load_tokenizer

    parser = argparse.ArgumentParser(
        prog="shearing generate",
        description="Greedy generation from any model this project reads, to see it work.",
        epilog="output: the model's shape and parameter count, then the prompt's greedy "
        "continuation and the tokens per second.",
    )
    parser.add_argument("--model", required=True, help="Hugging Face directory or .gguf file")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens to generate")
    parser.add_argument(
        "--sparse-ffn", action="store_true", help="compute only active FFN units (ReLU models)"
    )
    args = parser.parse_args(argv)

    def body() -> None:
        if args.max_new_tokens < 0:
            raise ValueError(f"--max-new-tokens {args.max_new_tokens} must be 0 or more")
        model = load_model(args.model).eval()
        model.set_sparse_decode(args.sparse_ffn)
        tokenizer = load_tokenizer(args.model)
        print(f"model: {args.model}")
        rows = describe(model)
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
        ids = tokenizer(args.prompt, return_tensors="pt").input_ids
        start = time.perf_counter()
        out = greedy_generate(model, ids, args.max_new_tokens, tokenizer.eos_token_id)
        seconds = time.perf_counter() - start
        new = out.shape[1] - ids.shape[1]
        print(f"greedy continuation ({new} tokens, {new / max(seconds, 1e-9):.1f} tokens/s):")
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        print(f"  {args.prompt}{text}")

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
