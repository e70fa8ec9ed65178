"""Activation sparsity of a model's FFNs on held-out text (ReluLLaMA, ProSparse, dReLU).

    shearing sparsity --model DIR --data MDS_DIR [--split eval] [--max-rows N]
        [--json OUT]

Activation sparsity is the fraction of FFN units whose value is exactly zero for a token
(for SwiGLU/ReLU/FATReLU the gate activation times up, which is zero exactly when the
gate activation is; for dReLU the product), averaged over tokens, per layer and over
layers. Also prints the per-domain loss on the same rows. Works for any LLaMA-architecture
Hugging Face directory, including stock ones with `hidden_act: relu`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from shearing.cli import run
from shearing.commands.eval import check_json_output, evaluate, model_data_parser
from shearing.files import write_text_atomic
from shearing.models.decoder import MaskableDecoder
from shearing.models.hf_io import load_model


class SparsityMeter:
    """Counts zero FFN unit values per layer through forward hooks while attached."""

    def __init__(self, model: MaskableDecoder) -> None:
        n = model.shape.num_hidden_layers
        self.zeros = torch.zeros(n, dtype=torch.float64)
        self.values = torch.zeros(n, dtype=torch.float64)
        self.handles = [
            layer.mlp.act_fn.register_forward_hook(self._hook(i))
            for i, layer in enumerate(model.model.layers)
        ]

    def _hook(self, layer: int):
        def record(module, inputs, output):
            self.zeros[layer] += (output == 0).sum().item()
            self.values[layer] += output.numel()

        return record

    def per_layer(self) -> list[float]:
        return (self.zeros / self.values.clamp(min=1)).tolist()

    def average(self) -> float:
        layers = self.per_layer()
        return sum(layers) / len(layers)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(
    model: MaskableDecoder, data: str | Path, split: str = "eval", max_rows: int | None = None
) -> dict:
    """`{"average_sparsity", "per_layer", "loss"}` of `model` on a tokenized corpus."""
    meter = SparsityMeter(model)
    try:
        losses = evaluate(model, data, split, max_rows)
    finally:
        meter.close()
    return {
        "average_sparsity": meter.average(),
        "per_layer": meter.per_layer(),
        "loss": {d: r["loss"] for d, r in losses["domains"].items()},
        "average_loss": losses["average"].get("loss"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = model_data_parser(
        "shearing sparsity",
        __doc__,
        epilog="output: the average fraction of FFN units that are exactly zero, per layer and "
        "overall, on the rows read; with --json the same as JSON.",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        check_json_output(args)
        result = measure(load_model(args.model), args.data, args.split, args.max_rows)
        print(f"average activation sparsity: {result['average_sparsity']:.4f}")
        for i, s in enumerate(result["per_layer"]):
            print(f"  layer {i:>3}: {s:.4f}")
        for domain, loss in result["loss"].items():
            print(f"  loss {domain}: {loss:.4f}")
        if args.json:
            write_text_atomic(Path(args.json).expanduser(), json.dumps(result, indent=2) + "\n")

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
