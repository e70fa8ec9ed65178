"""Decoders with the FFN activations of activation-sparse models, for `transformers`.

Shipped inside checkpoints exported by shearing (the package is not needed to load them):
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. The config's
`auto_map` names `Shearing<Architecture>`, the stock class of the checkpoint's family
(ShearingLlamaForCausalLM, ShearingQwen3ForCausalLM, ...) with its MLPs swapped.

hidden_act (config.json; Gemma: hidden_activation):
    fatrelu: down(f(gate(x)) * up(x)), f(v) = v if v >= fatrelu_threshold else 0 (ProSparse)
    drelu:   down(relu(gate(x)) * relu(up(x))) (Bamboo)
Parameter names are those of the stock class; only the MLP activation differs.
"""

import torch
import transformers
from torch import nn

KINDS = ("fatrelu", "drelu")
#: The families' stock classes this file serves.
ARCHITECTURES = (
    "LlamaForCausalLM", "MistralForCausalLM", "Ministral3ForCausalLM", "Qwen2ForCausalLM",
    "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
    "Olmo2ForCausalLM", "GraniteForCausalLM", "GraniteSWAForCausalLM", "SmolLM3ForCausalLM",
    "Gemma4ForCausalLM",
)  # fmt: skip


def _activation_key(config) -> str:
    return "hidden_activation" if hasattr(config, "hidden_activation") else "hidden_act"


class SparseActivationMLP(nn.Module):
    def __init__(self, config, fused: bool, bias: bool):
        super().__init__()
        d, i = config.hidden_size, config.intermediate_size
        if fused:  # Phi-3: gate and up in one matrix, gate first
            self.gate_up_proj = nn.Linear(d, 2 * i, bias=False)
        else:
            self.gate_proj = nn.Linear(d, i, bias=bias)
            self.up_proj = nn.Linear(d, i, bias=bias)
        self.down_proj = nn.Linear(i, d, bias=bias)
        self.fused = fused
        self.kind = getattr(config, _activation_key(config))
        self.threshold = float(getattr(config, "fatrelu_threshold", 0.0))

    def forward(self, x):
        if self.fused:
            g, u = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            g, u = self.gate_proj(x), self.up_proj(x)
        if self.kind == "fatrelu":
            h = g * (g >= self.threshold).to(g.dtype) * u
        else:  # drelu
            h = torch.relu(g) * torch.relu(u)
        return self.down_proj(h)


def _sparse_class(base):
    class Sparse(base):
        def __init__(self, config):
            key = _activation_key(config)
            kind = getattr(config, key)
            if kind not in KINDS:
                raise ValueError(f"{key}={kind!r}: this class serves {', '.join(KINDS)}")
            setattr(config, key, "relu")  # build the stock layers, then swap their MLPs
            super().__init__(config)
            setattr(config, key, kind)
            for layer in self.model.layers:
                fused = hasattr(layer.mlp, "gate_up_proj")
                bias = getattr(layer.mlp.down_proj, "bias", None) is not None
                layer.mlp = SparseActivationMLP(config, fused, bias)
            self.post_init()

    Sparse.__name__ = Sparse.__qualname__ = f"Shearing{base.__name__}"
    return Sparse


for _name in ARCHITECTURES:
    if hasattr(transformers, _name):
        globals()[f"Shearing{_name}"] = _sparse_class(getattr(transformers, _name))
