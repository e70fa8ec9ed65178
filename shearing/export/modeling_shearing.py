"""LLaMA with the FFN activations of activation-sparse models, for `transformers`.

Shipped inside checkpoints exported by shearing (https://pypi.org/project/shearing is not
needed to load them): `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`.

hidden_act (config.json):
    fatrelu: down(f(gate(x)) * up(x)), f(v) = v if v >= fatrelu_threshold else 0 (ProSparse)
    drelu:   down(relu(gate(x)) * relu(up(x))) (Bamboo)
Parameter names are those of `LlamaForCausalLM`; only the MLP activation differs.
"""

import torch
from torch import nn
from transformers import LlamaForCausalLM


class SparseActivationMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.kind = config.hidden_act
        self.threshold = float(getattr(config, "fatrelu_threshold", 0.0))

    def forward(self, x):
        g, u = self.gate_proj(x), self.up_proj(x)
        if self.kind == "fatrelu":
            h = g * (g >= self.threshold).to(g.dtype) * u
        else:  # drelu
            h = torch.relu(g) * torch.relu(u)
        return self.down_proj(h)


class ShearingLlamaForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM whose MLPs use `config.hidden_act` in (fatrelu, drelu)."""

    def __init__(self, config):
        kind = config.hidden_act
        if kind not in ("fatrelu", "drelu"):
            raise ValueError(f"hidden_act={kind!r}: this class serves fatrelu and drelu")
        config.hidden_act = "relu"  # build the stock layers, then swap their MLPs
        super().__init__(config)
        config.hidden_act = kind
        for layer in self.model.layers:
            layer.mlp = SparseActivationMLP(config)
        self.post_init()
