"""A maskable LLaMA decoder whose parameter names are the Hugging Face checkpoint keys.

The forward pass is the dense LLaMA of `transformers` (RMSNorm, RoPE, grouped-query
attention through `scaled_dot_product_attention`, SwiGLU MLP) with one optional,
keyword-only input: a `Masks` of structured-pruning gates placed where Sheared-LLaMA
(Xia et al., arXiv 2310.06694, following CoFi) places them. With no masks the model is
exactly the dense model; with binary masks it equals the model sliced to the kept units.

Parameter names equal the keys of `transformers.LlamaForCausalLM.state_dict()`
(`model.layers.N.self_attn.q_proj.weight`, ...), so loading and saving are dictionary
copies (`shearing.models.hf_io`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shearing.models import sparse_kernel
from shearing.models.config import LlamaShape


@dataclass
class Masks:
    """Structured-pruning gates, each optional; a missing gate means "all kept".

    Values are in [0, 1]: sampled hard-concrete gates during pruning, binary
    deterministic gates at evaluation. Shapes (L layers, d hidden, K key/value heads,
    G = H / K query heads per key/value head, I FFN units):

    Attributes:
        z_layer: [L], scales each layer's attention and MLP block outputs.
        z_hidden: [d], masks hidden dimensions everywhere (embedding, norms, projections).
        z_kv: [L, K], removes a key/value head together with all its query heads.
        z_head: [L, K, G], removes query head `g` of key/value group `k`
            (`transformers` query head index `k * G + g`).
        z_intermediate: [L, I], removes FFN units.
    """

    z_layer: Tensor | None = None
    z_hidden: Tensor | None = None
    z_kv: Tensor | None = None
    z_head: Tensor | None = None
    z_intermediate: Tensor | None = None

    def validate(self, shape: LlamaShape) -> None:
        """Raise `ValueError` if a gate's shape does not fit `shape`."""
        L, K = shape.num_hidden_layers, shape.num_key_value_heads
        expected = {
            "z_layer": (L,),
            "z_hidden": (shape.hidden_size,),
            "z_kv": (L, K),
            "z_head": (L, K, shape.group_size),
            "z_intermediate": (L, shape.intermediate_size),
        }
        for f in fields(self):
            gate = getattr(self, f.name)
            if gate is not None and tuple(gate.shape) != expected[f.name]:
                raise ValueError(
                    f"{f.name} has shape {tuple(gate.shape)}; this model needs {expected[f.name]}"
                )

    def head_gate(self, layer: int) -> Tensor | None:
        """Query-head gate of one layer, `z_head * z_kv`: (K, G), (K, 1) or None."""
        gate = None if self.z_head is None else self.z_head[layer]  # (K, G)
        if self.z_kv is not None:
            kv = self.z_kv[layer].unsqueeze(-1)  # (K, 1)
            gate = kv if gate is None else gate * kv
        return gate


class KVCache:
    """Keys and values of past positions, one entry per layer, for incremental decoding."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers

    @property
    def seq_len(self) -> int:
        """Number of cached positions (0 before the first forward)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append (b, K, s, hd) keys and values; return everything cached for `layer`."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class RMSNorm(nn.Module):
    """RMSNorm, optionally normalising over the kept hidden dimensions only.

    Under a hidden mask: `rms = sqrt(sum_i x_i^2 / n_kept + eps)` with
    `n_kept = count(z_hidden > 0)`, then `y = x / rms * weight * z_hidden`. `n_kept`
    stays a tensor, so there is no host synchronisation.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor, z_hidden: Tensor | None = None) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        if z_hidden is None:
            mean_sq = x32.pow(2).mean(-1, keepdim=True)
        else:
            n_kept = (z_hidden > 0).sum().clamp(min=1)
            mean_sq = x32.pow(2).sum(-1, keepdim=True) / n_kept
        weight = self.weight if z_hidden is None else self.weight * z_hidden
        return weight * (x32 * torch.rsqrt(mean_sq + self.eps)).to(dtype)


class RotaryEmbedding(nn.Module):
    """RoPE tables (cos, sin) for given positions; `default`, `linear` and `llama3` scaling."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        hd = shape.head_dim
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        rope = shape.rope_parameters
        if shape.rope_type == "linear":
            inv_freq = inv_freq / rope["factor"]
        elif shape.rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, rope)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Return cos, sin of shape (s, hd) for integer `positions` of shape (s,)."""
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (s, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _llama3_inv_freq(inv_freq: Tensor, scaling: dict) -> Tensor:
    """Llama-3.1 frequency scaling: long wavelengths divided by `factor`, short kept,
    a linear blend in between (in the inverse-wavelength domain)."""
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    blend = ((old_ctx / wavelen - low) / (high - low)).clamp(0.0, 1.0)
    scaled = (1 - blend) * inv_freq / factor + blend * inv_freq
    return torch.where(wavelen > old_ctx / low, inv_freq / factor, scaled)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (b, n, s, hd) queries or keys by (s, hd) tables."""
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Grouped-query causal self-attention.

    Shapes: x (b, s, d); q (b, H, s, hd); k, v (b, K, s, hd); query head h reads
    key/value head h // G (SDPA's `enable_gqa` on CUDA; repeated key/value heads on
    CPU, where only that layout reaches the fused kernel).
    """

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        d, hd = shape.hidden_size, shape.head_dim
        self.n_heads, self.n_kv, self.head_dim = (
            shape.num_attention_heads,
            shape.num_key_value_heads,
            hd,
        )
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        head_gate: Tensor | None = None,
        out_gate: Tensor | None = None,
        cache: KVCache | None = None,
        layer_idx: int = 0,
    ) -> Tensor:
        """Args:
        head_gate: (K, G) or (K, 1) gate per query head, on o_proj's input columns.
        out_gate: (d,) or scalar gate on o_proj's output rows.
        """
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)
        t = k.shape[2]
        attend = {"scale": self.head_dim**-0.5}
        if self.n_kv != self.n_heads:
            if x.is_cuda:  # CUDA kernels read shared key/value heads directly
                attend["enable_gqa"] = True
            else:  # CPU's fused kernel needs one key/value head per query head
                k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)  # (b, H, t, hd)
                v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        if t == s:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **attend)
        elif s == 1:  # one new token attends to every cached position
            out = F.scaled_dot_product_attention(q, k, v, **attend)
        else:  # a chunk after a cache: causal mask aligned to the end
            allowed = torch.ones(s, t, dtype=torch.bool, device=x.device).tril(t - s)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, **attend)
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)
        if head_gate is None and out_gate is None:
            return self.o_proj(out)
        cols = None
        if head_gate is not None:  # (K, G|1) -> one value per input column of o_proj
            per_head = head_gate.expand(self.n_kv, self.n_heads // self.n_kv).reshape(-1)
            cols = per_head.repeat_interleave(self.head_dim)
        return gated_linear(out, self.o_proj.weight, out_gate, cols)


class GatedActivation(nn.Module):
    """The FFN unit values from the gate and up projections.

    silu / relu / fatrelu: `act(gate) * up`; drelu (Bamboo): `relu(gate) * relu(up)`.
    A unit is inactive for a token when its value is exactly zero; a forward hook on this
    module sees every unit value (the sparsity meter uses that).
    """

    def __init__(self, kind: str, threshold: float = 0.0) -> None:
        super().__init__()
        self.kind, self.threshold = kind, threshold

    def gate(self, g: Tensor) -> Tensor:
        """The activation applied to the gate projection."""
        if self.kind == "silu":
            return F.silu(g)
        if self.kind == "fatrelu":
            return g * (g >= self.threshold).to(g.dtype)
        return F.relu(g)  # relu, drelu

    def up(self, u: Tensor) -> Tensor:
        return F.relu(u) if self.kind == "drelu" else u

    def forward(self, g: Tensor, u: Tensor) -> Tensor:
        return self.gate(g) * self.up(u)


class MLP(nn.Module):
    """Gated FFN: `down(act(gate(x), up(x)) * z_intermediate)`.

    With `sparse_decode` set (ReLU-family activations, inference, one token), only the
    rows of up_proj and columns of down_proj of active units are computed; the result
    equals the dense FFN.
    """

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        d, i = shape.hidden_size, shape.intermediate_size
        self.gate_proj = nn.Linear(d, i, bias=False)
        self.up_proj = nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)
        self.act_fn = GatedActivation(shape.hidden_act, shape.fatrelu_threshold)
        self.sparse_decode = False
        self._down_rows: Tensor | None = None  # down_proj.weight.T, contiguous, when sparse
        self._scratch: Tensor | None = None  # the sparse kernel's per-thread sums

    def set_sparse_decode(self, enabled: bool) -> None:
        if enabled and self.act_fn.kind == "silu":
            raise ValueError("sparse FFN decoding needs a ReLU-family hidden_act, not silu")
        self.sparse_decode = enabled
        self._down_rows = self.down_proj.weight.detach().t().contiguous() if enabled else None
        self._scratch = None

    def forward(
        self, x: Tensor, z_intermediate: Tensor | None = None, out_gate: Tensor | None = None
    ) -> Tensor:
        if self.sparse_decode and x.shape[:-1].numel() == 1 and z_intermediate is None:
            return self._sparse(x)
        h = self.act_fn(self.gate_proj(x), self.up_proj(x))
        if z_intermediate is None and out_gate is None:
            return self.down_proj(h)
        return gated_linear(h, self.down_proj.weight, out_gate, z_intermediate)

    @torch.no_grad()
    def _sparse(self, x: Tensor) -> Tensor:
        x1 = x.reshape(-1).contiguous()  # (d,)
        weights = (self.gate_proj.weight, self.up_proj.weight, self._down_rows)
        lib = sparse_kernel.load() if sparse_kernel.supported(x1, *weights) else None
        if lib is None:
            return self._sparse_torch(x1).view_as(x)
        if self._scratch is None or self._scratch.numel() < torch.get_num_threads() * len(x1):
            self._scratch = torch.empty(torch.get_num_threads() * len(x1))
        kind, threshold = self.act_fn.kind, self.act_fn.threshold
        out = sparse_kernel.sparse_ffn(lib, x1, *weights, kind, threshold, self._scratch)
        return out.view_as(x)

    def _sparse_torch(self, x1: Tensor) -> Tensor:
        """`_sparse` in torch operations (no compiled kernel, or not fp32 on a CPU)."""
        a = self.act_fn.gate(self.gate_proj.weight @ x1)  # (I,)
        active = a.nonzero().squeeze(-1)  # units with a non-zero gate activation
        u = self.act_fn.up(self.up_proj.weight.index_select(0, active) @ x1)
        # sum_k h_k * down_proj.weight[:, k] over active units, reading only their rows of
        # the transposed weight and without copying them out
        h = (a.index_select(0, active) * u).unsqueeze(0)
        out = F.embedding_bag(
            active.unsqueeze(0), self._down_rows, per_sample_weights=h, mode="sum"
        )
        return out.view(-1)


def gated_weight(weight: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    """`weight * rows[:, None] * cols[None, :]` (either may be None, `rows` may be a scalar).

    Gating a projection's weight instead of its input or output activations gives the
    same result (exactly, for binary gates) while autograd keeps a weight-sized tensor
    instead of activation-sized ones, which at training batch sizes are much larger.
    """
    if rows is not None:
        weight = weight * (rows.unsqueeze(-1) if rows.dim() else rows).to(weight.dtype)
    if cols is not None:
        weight = weight * cols.to(weight.dtype)
    return weight


def gated_linear(x: Tensor, weight: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    """`F.linear(x, gated_weight(weight, rows, cols))`, keeping no gated copy for backward.

    Autograd of the plain expression keeps the gated weight (and, with both gates, the
    row-gated one too) until the backward pass: up to two weight-sized copies per gated
    projection. This saves only the inputs and recomputes the gated weight in backward.
    """
    if rows is None and cols is None:
        return F.linear(x, weight)
    return _GatedLinear.apply(x, weight, rows, cols)


class _GatedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, rows, cols):
        device = x.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(x, weight, rows, cols)
        return F.linear(x, gated_weight(weight, rows, cols))

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, rows, cols = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        need_x, need_w, need_rows, need_cols = ctx.needs_input_grad
        grad_x = grad_w = grad_rows = grad_cols = None
        with torch.autocast(device, dtype=dtype, enabled=enabled):  # as the forward ran
            if need_x:
                grad_x = grad_out @ gated_weight(weight, rows, cols).to(grad_out.dtype)
            if need_w or need_rows or need_cols:
                # dL/d(gated weight), (out, in), summed over every leading dimension
                g = grad_out.flatten(0, -2).t() @ x.flatten(0, -2).to(grad_out.dtype)
                g = g.to(weight.dtype)
                if need_w:
                    grad_w = gated_weight(g, rows, cols)
                gw = g * weight if need_rows or need_cols else None  # dL/d(gate product)
                if need_rows:
                    per_row = gated_weight(gw, None, cols).sum(1)
                    grad_rows = per_row.sum().reshape(rows.shape) if rows.dim() == 0 else per_row
                    grad_rows = grad_rows.to(rows.dtype)
                if need_cols:
                    grad_cols = gated_weight(gw, rows, None).sum(0).to(cols.dtype)
        return grad_x, grad_w, grad_rows, grad_cols


class DecoderLayer(nn.Module):
    """Pre-norm attention and MLP blocks with residual connections."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.self_attn = Attention(shape)
        self.mlp = MLP(shape)
        self.input_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        masks: Masks,
        layer_idx: int,
        cache: KVCache | None = None,
    ) -> Tensor:
        z_hidden = masks.z_hidden
        z_layer = None if masks.z_layer is None else masks.z_layer[layer_idx]
        z_int = None if masks.z_intermediate is None else masks.z_intermediate[layer_idx]

        # z_hidden and z_layer both scale each block's output: one (d,) or scalar gate.
        out_gate = (
            z_hidden if z_layer is None else z_layer if z_hidden is None else z_hidden * z_layer
        )
        h = self.input_layernorm(x, z_hidden)
        x = x + self.self_attn(h, cos, sin, masks.head_gate(layer_idx), out_gate, cache, layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x, z_hidden), z_int, out_gate)


class LlamaBackbone(nn.Module):
    """Embedding, decoder layers and final norm (`model.*` in checkpoint keys)."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(shape) for _ in range(shape.num_hidden_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(shape)

    def forward(self, input_ids: Tensor, masks: Masks, cache: KVCache | None) -> Tensor:
        start = 0 if cache is None else cache.seq_len
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        x = self.embed_tokens(input_ids)
        if masks.z_hidden is not None:
            x = x * masks.z_hidden
        cos, sin = self.rotary_emb(positions, x.dtype)
        for idx, layer in enumerate(self.layers):
            x = layer(x, cos, sin, masks, idx, cache)
        return self.norm(x, masks.z_hidden)


class MaskableLlama(nn.Module):
    """LLaMA causal language model with optional structured-pruning masks.

    Args:
        shape: the model's configuration.
    """

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.shape = shape
        self.model = LlamaBackbone(shape)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        self.reset_parameters()

    # FSDP (composer wraps this module, a child of the composer model, and asks it): shard
    # and checkpoint activations one decoder layer at a time.
    def fsdp_wrap_fn(self, module: nn.Module) -> bool:
        return isinstance(module, DecoderLayer)

    def activation_checkpointing_fn(self, module: nn.Module) -> bool:
        return isinstance(module, DecoderLayer)

    def tie_weights(self) -> None:
        """Share the LM head with the embedding when the config says so."""
        if self.shape.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) for matrices, ones for norms (as `transformers`)."""
        std = self.shape.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(0.0, std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        self.tie_weights()

    def forward(
        self,
        input_ids: Tensor,
        *,
        masks: Masks | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Next-token logits.

        Args:
            input_ids: (b, s) token ids.
            masks: pruning gates; None (or all-None fields) is the dense model.
            cache: key/value cache for incremental decoding; positions continue from it.

        Returns:
            (b, s, V) logits.
        """
        masks = masks if masks is not None else Masks()
        return self.lm_head(self.model(input_ids, masks, cache))

    def set_sparse_decode(self, enabled: bool = True) -> None:
        """Compute only active FFN units when decoding one token (ReLU-family models)."""
        for layer in self.model.layers:
            layer.mlp.set_sparse_decode(enabled)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (shared tensors counted once)."""
        params = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in params.values())
        if not include_embeddings:
            total -= self.model.embed_tokens.weight.numel()
            if not self.shape.tie_word_embeddings:
                total -= self.lm_head.weight.numel()
        return total
