"""One maskable decoder for every family of `shearing.models.families`, whose parameter
names are the Hugging Face checkpoint keys.

The forward pass is the dense decoder of `transformers` (RMSNorm, RoPE, grouped-query
attention through `scaled_dot_product_attention`, a gated MLP) with the switches of the
source's family row (biases, q/k norms, `1 + w` norms, embedding scale, sandwich or post
norms, soft-caps, sliding windows, NoPE layers, multipliers, attention sinks) and one
optional, keyword-only input: a `Masks` of structured-pruning gates placed where
Sheared-LLaMA (Xia et al., arXiv 2310.06694, following CoFi) places them. With no masks the
model is exactly the dense model; with binary masks it equals the model sliced to the kept
units, in every family: a parameter on a pruned axis (a q/k/v bias, a post-norm, a sink) is
masked with its unit.

Parameter names equal the keys of the family's `...ForCausalLM.state_dict()`
(`model.layers.N.self_attn.q_proj.weight`, ...; Phi-3's fused `qkv_proj`/`gate_up_proj`
are split on load and fused on save), so loading and saving are dictionary copies
(`shearing.models.hf_io`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shearing.models import sparse_kernel
from shearing.models.config import RELU_FAMILY, Act, DecoderShape


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

    def validate(self, shape: DecoderShape) -> None:
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
    """RMSNorm, optionally over the kept dimensions only; Gemma's scales by `1 + weight`.

    Under a gate `z` over its dimensions: `rms = sqrt(sum_i x_i^2 / n_kept + eps)` with
    `n_kept = count(z > 0)`, then `y = x / rms * scale * z`. The inputs at pruned dimensions
    are zero where the gate is the hidden one (every block writes them as zero); with
    `zero_pruned` (q/k norms over all heads, OLMo 2) they are zeroed here and the output is
    not gated (the heads' own gates act later). `n_kept` stays a tensor, so there is no
    host synchronisation.
    """

    def __init__(self, dim: int, eps: float, offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))
        self.eps, self.offset = eps, offset

    def forward(self, x: Tensor, z: Tensor | None = None, zero_pruned: bool = False) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        if z is None:
            mean_sq = x32.pow(2).mean(-1, keepdim=True)
        else:
            kept = z > 0
            if zero_pruned:
                x32 = x32 * kept
            mean_sq = x32.pow(2).sum(-1, keepdim=True) / kept.sum().clamp(min=1)
        scale = 1.0 + self.weight.float() if self.offset else self.weight
        if z is not None and not zero_pruned:
            scale = scale * z
        normed = x32 * torch.rsqrt(mean_sq + self.eps)
        if self.offset:  # Gemma: (x * (1 + w)) in fp32, then cast
            return (normed * scale).to(dtype)
        return scale * normed.to(dtype)


class RotaryEmbedding(nn.Module):
    """RoPE tables (cos, sin) for one rope setting (`default`, `linear`, `llama3`), over
    the first `partial_rotary_factor` of each head's dimensions; `proportional` (Gemma 4)
    rotates the first `partial_rotary_factor` of the frequencies of the whole head and
    leaves the rest at frequency 0 (unrotated)."""

    def __init__(self, rope: dict, head_dim: int) -> None:
        super().__init__()
        theta, kind = rope["rope_theta"], rope.get("rope_type", "default")
        if kind == "proportional":
            angles = int(rope.get("partial_rotary_factor", 1.0) * head_dim // 2)
            steps = torch.arange(0, 2 * angles, 2, dtype=torch.int64).float() / head_dim
            inv_freq = torch.cat([1.0 / theta**steps, torch.zeros(head_dim // 2 - angles)])
            inv_freq = inv_freq / rope.get("factor", 1.0)
        else:
            dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
            steps = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
            inv_freq = 1.0 / (theta**steps)
        if kind == "linear":
            inv_freq = inv_freq / rope["factor"]
        elif kind == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, rope)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Return cos, sin of shape (s, rot) for integer `positions` of shape (s,)."""
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]  # (s, rot/2)
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
    """Rotate (b, n, s, hd) queries or keys by (s, rot) tables (the first rot dims)."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat([x_rot * cos + _rotate_half(x_rot) * sin, x_pass], dim=-1)


def attention_mask(s: int, t: int, window: int | None, device, plain: bool = False):
    """(s, t) booleans: query i (position t - s + i) may read key j. None for plain causal
    attention over a fresh sequence (SDPA's `is_causal`), unless `plain` asks for it."""
    if window is None and t == s and not plain:
        return None
    q = torch.arange(t - s, t, device=device)[:, None]
    k = torch.arange(t, device=device)[None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    return allowed


class Attention(nn.Module):
    """Grouped-query causal self-attention, with the family's biases, q/k norms, sliding
    window, soft-cap and sinks.

    Shapes: x (b, s, d); q (b, H, s, hd); k, v (b, K, s, hd); query head h reads
    key/value head h // G (SDPA's `enable_gqa` on CUDA; repeated key/value heads on
    CPU, where only that layout reaches the fused kernel).
    """

    def __init__(self, shape: DecoderShape, layer: int) -> None:
        super().__init__()
        d, hd, f = shape.hidden_size, shape.layer_head_dim(layer), shape.family
        self.n_heads, self.n_kv, self.head_dim = (
            shape.num_attention_heads,
            shape.num_key_value_heads,
            hd,
        )
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=shape.qkv_bias)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=shape.qkv_bias)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=shape.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=shape.o_bias)
        self.qk_norm = f.qk_norm
        if f.qk_norm is not None:
            q_dim, k_dim = (hd, hd) if f.qk_norm == "head" else (self.n_heads * hd, self.n_kv * hd)
            self.q_norm = RMSNorm(q_dim, shape.rms_norm_eps, f.norm_offset)
            self.k_norm = RMSNorm(k_dim, shape.rms_norm_eps, f.norm_offset)
        if f.v_norm:  # Gemma 4: values RMS-normed per head, no weight
            self.v_norm_eps = shape.rms_norm_eps
        if f.sinks:
            self.sinks = nn.Parameter(torch.zeros(self.n_heads))
        self.scale = shape.attention_scale(layer)
        self.window = shape.layer_window(layer)
        self.softcap = shape.setting("attn_logit_softcapping")
        rope = shape.layer_rope(layer) or {}
        self.llama4_beta = rope.get("llama_4_scaling_beta") if f.llama4_query_scale else None
        self.llama4_max = rope.get("original_max_position_embeddings")

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        positions: Tensor,
        head_gate: Tensor | None = None,
        kv_gate: Tensor | None = None,
        out_gate: Tensor | None = None,
        cache: KVCache | None = None,
        layer_idx: int = 0,
    ) -> Tensor:
        """Args:
        rope: (cos, sin) tables of this layer's positions, or None (a NoPE layer).
        head_gate: (K, G) or (K, 1) gate per query head, on o_proj's input columns.
        kv_gate: (K,) key/value head gate (its zeros leave the all-heads k norm's statistic).
        out_gate: (d,) or scalar gate on o_proj's output rows.
        """
        b, s, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.qk_norm == "all":  # over all heads together: pruned heads leave the statistic
            q = self.q_norm(q, self._dims(self._per_head(head_gate)), zero_pruned=True)
            k = self.k_norm(k, self._dims(kv_gate), zero_pruned=True)
        q = q.view(b, s, self.n_heads, self.head_dim)
        k = k.view(b, s, self.n_kv, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (b, H|K, s, hd)
        v = v.view(b, s, self.n_kv, self.head_dim)
        if hasattr(self, "v_norm_eps"):
            v32 = v.float()
            v = (v32 * torch.rsqrt(v32.pow(2).mean(-1, keepdim=True) + self.v_norm_eps)).to(v.dtype)
        v = v.transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.llama4_beta is not None:  # Ministral 3: queries scaled by position
            scale = 1 + self.llama4_beta * torch.log1p(torch.floor(positions / self.llama4_max))
            q = q * scale[None, None, :, None].to(q.dtype)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)
        out = self._attend(q, k, v, x.is_cuda)
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)
        if head_gate is None and out_gate is None:
            return self.o_proj(out)  # the module itself: its hooks see the heads' outputs
        cols = None
        if head_gate is not None:  # (K, G|1) -> one value per input column of o_proj
            cols = self._per_head(head_gate).repeat_interleave(self.head_dim)
        return gated_linear(out, self.o_proj.weight, out_gate, cols, self.o_proj.bias)

    def _per_head(self, head_gate: Tensor | None) -> Tensor | None:
        if head_gate is None:
            return None
        return head_gate.expand(self.n_kv, self.n_heads // self.n_kv).reshape(-1)  # (H,)

    def _dims(self, per_head: Tensor | None) -> Tensor | None:
        return None if per_head is None else per_head.repeat_interleave(self.head_dim)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, cuda: bool) -> Tensor:
        s, t = q.shape[2], k.shape[2]
        eager = self.softcap is not None or hasattr(self, "sinks")
        allowed = attention_mask(s, t, self.window, q.device, plain=eager)
        if self.n_kv != self.n_heads and (eager or not cuda):  # one key/value head per query head
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)  # (b, H, t, hd)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        if not eager:
            gqa = {"enable_gqa": True} if self.n_kv != self.n_heads and cuda else {}
            if allowed is None:
                return F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, scale=self.scale, **gqa
                )
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, scale=self.scale, **gqa
            )
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (b, H, s, t)
        if self.softcap is not None:  # Gemma 2: cap * tanh(scores / cap)
            scores = torch.tanh(scores / self.softcap) * self.softcap
        scores = scores.masked_fill(~allowed, float("-inf"))
        if hasattr(self, "sinks"):  # one more logit per head in the softmax's denominator
            sink = self.sinks.to(scores.dtype)[None, :, None, None].expand(*scores.shape[:-1], 1)
            probs = torch.softmax(torch.cat([scores, sink], dim=-1).float(), dim=-1)[..., :-1]
        else:
            probs = torch.softmax(scores.float(), dim=-1)
        return probs.to(v.dtype) @ v


class GatedActivation(nn.Module):
    """The FFN unit values from the gate and up projections.

    silu / gelu_pytorch_tanh / gelu / relu / fatrelu: `act(gate) * up`; drelu (Bamboo):
    `relu(gate) * relu(up)`. A unit is inactive for a token when its value is exactly
    zero; a forward hook on this module sees every unit value (the sparsity meter uses it).
    """

    def __init__(self, kind: str, threshold: float = 0.0) -> None:
        super().__init__()
        self.kind, self.threshold = kind, threshold

    def gate(self, g: Tensor) -> Tensor:
        """The activation applied to the gate projection."""
        if self.kind == Act.SILU:
            return F.silu(g)
        if self.kind == Act.GELU_TANH:
            return F.gelu(g, approximate="tanh")
        if self.kind == Act.GELU:
            return F.gelu(g)
        if self.kind == Act.FATRELU:
            return g * (g >= self.threshold).to(g.dtype)
        return F.relu(g)  # relu, drelu

    def up(self, u: Tensor) -> Tensor:
        return F.relu(u) if self.kind == Act.DRELU else u

    def forward(self, g: Tensor, u: Tensor) -> Tensor:
        return self.gate(g) * self.up(u)


class MLP(nn.Module):
    """Gated FFN: `down(act(gate(x), up(x)) * z_intermediate)`.

    With `sparse_decode` set (ReLU-family activations, inference, one token), only the
    rows of up_proj and columns of down_proj of active units are computed; the result
    equals the dense FFN.
    """

    def __init__(self, shape: DecoderShape) -> None:
        super().__init__()
        d, i = shape.hidden_size, shape.intermediate_size
        self.gate_proj = nn.Linear(d, i, bias=shape.mlp_bias)
        self.up_proj = nn.Linear(d, i, bias=shape.mlp_bias)
        self.down_proj = nn.Linear(i, d, bias=shape.mlp_bias)
        self.act_fn = GatedActivation(shape.hidden_act, shape.fatrelu_threshold)
        self.sparse_decode = False
        self._down_rows: Tensor | None = None  # down_proj.weight.T, contiguous, when sparse
        self._scratch: Tensor | None = None  # the sparse kernel's per-thread sums

    def set_sparse_decode(self, enabled: bool) -> None:
        if enabled and self.act_fn.kind not in RELU_FAMILY:
            raise ValueError(
                f"sparse FFN decoding needs a ReLU-family hidden_act, not {self.act_fn.kind}"
            )
        if enabled and self.down_proj.bias is not None:
            raise ValueError("sparse FFN decoding needs an FFN without biases (mlp_bias)")
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
            return self.down_proj(h)  # the module itself: its hooks see the unit values
        return gated_linear(h, self.down_proj.weight, out_gate, z_intermediate, self.down_proj.bias)

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


def gated_linear(
    x: Tensor,
    weight: Tensor,
    rows: Tensor | None,
    cols: Tensor | None,
    bias: Tensor | None = None,
) -> Tensor:
    """`F.linear(x, gated_weight(weight, rows, cols), bias * rows)`, keeping no gated copy
    for backward.

    Autograd of the plain expression keeps the gated weight (and, with both gates, the
    row-gated one too) until the backward pass: up to two weight-sized copies per gated
    projection. This saves only the inputs and recomputes the gated weight in backward.
    A bias lives on the output rows, so the row gate masks it with them.
    """
    if rows is None and cols is None:
        return F.linear(x, weight, bias)
    out = _GatedLinear.apply(x, weight, rows, cols)
    if bias is not None:
        out = out + (bias if rows is None else bias * rows.to(bias.dtype))
    return out


class _GatedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, rows, cols):
        device = x.device.type
        if not torch.amp.is_autocast_available(device):  # the meta device: nothing to restore
            device = "cpu"
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
    """Attention and MLP blocks with residual connections, normed as the family norms them:
    before each block (`pre`: Llama), before and after (`sandwich`: Gemma), or after only
    (`post`: OLMo 2)."""

    def __init__(self, shape: DecoderShape, layer: int) -> None:
        super().__init__()
        f = shape.family
        self.norms = f.norms
        self.self_attn = Attention(shape, layer)
        self.mlp = MLP(shape)
        names = {
            "pre": ("input_layernorm", "post_attention_layernorm"),
            "sandwich": ("input_layernorm", "post_attention_layernorm",
                         "pre_feedforward_layernorm", "post_feedforward_layernorm"),
            "post": ("post_attention_layernorm", "post_feedforward_layernorm"),
        }[f.norms]  # fmt: skip
        for name in names:
            self.add_module(name, RMSNorm(shape.hidden_size, shape.rms_norm_eps, f.norm_offset))
        self.norm_names = names
        self.residual_multiplier = (
            float(shape.setting("residual_multiplier", 1.0)) if f.multipliers else 1.0
        )
        if f.layer_scalar:  # Gemma 4: a stored factor on the layer's output stream
            self.register_buffer("layer_scalar", torch.ones(1))

    def hidden_norms(self) -> list[RMSNorm]:
        """The layer's norms over the hidden dimensions (not the q/k norms)."""
        return [getattr(self, name) for name in self.norm_names]

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        positions: Tensor,
        masks: Masks,
        layer_idx: int,
        cache: KVCache | None = None,
    ) -> Tensor:
        z_hidden = masks.z_hidden
        z_layer = None if masks.z_layer is None else masks.z_layer[layer_idx]
        z_int = None if masks.z_intermediate is None else masks.z_intermediate[layer_idx]
        z_kv = None if masks.z_kv is None else masks.z_kv[layer_idx]
        heads = masks.head_gate(layer_idx)

        def attn(h: Tensor, out_gate: Tensor | None) -> Tensor:
            return self.self_attn(h, rope, positions, heads, z_kv, out_gate, cache, layer_idx)

        r = self.residual_multiplier
        if self.norms == "pre":
            # z_hidden and z_layer both scale each block's output: one (d,) or scalar gate.
            out_gate = _product(z_hidden, z_layer)
            x = x + r * attn(self.input_layernorm(x, z_hidden), out_gate)
            return x + r * self.mlp(self.post_attention_layernorm(x, z_hidden), z_int, out_gate)
        # a norm after the block would undo a scale before it: z_layer acts after the norm
        if self.norms == "sandwich":
            h = attn(self.input_layernorm(x, z_hidden), z_hidden)
            x = x + r * _scaled(self.post_attention_layernorm(h, z_hidden), z_layer)
            h = self.mlp(self.pre_feedforward_layernorm(x, z_hidden), z_int, z_hidden)
            x = x + r * _scaled(self.post_feedforward_layernorm(h, z_hidden), z_layer)
        else:  # post: OLMo 2
            h = self.post_attention_layernorm(attn(x, z_hidden), z_hidden)
            x = x + r * _scaled(h, z_layer)
            h = self.post_feedforward_layernorm(self.mlp(x, z_int, z_hidden), z_hidden)
            x = x + r * _scaled(h, z_layer)
        if hasattr(self, "layer_scalar"):  # a pruned layer (z_layer 0) leaves the stream as is
            scalar = self.layer_scalar if z_layer is None else 1 + z_layer * (self.layer_scalar - 1)
            x = x * scalar.to(x.dtype)
        return x


def _product(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return a if b is None else b if a is None else a * b


def _scaled(x: Tensor, gate: Tensor | None) -> Tensor:
    return x if gate is None else x * gate


class DecoderBackbone(nn.Module):
    """Embedding, decoder layers and final norm (`model.*` in checkpoint keys)."""

    def __init__(self, shape: DecoderShape) -> None:
        super().__init__()
        f = shape.family
        self.shape = shape
        self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(shape, i) for i in range(shape.num_hidden_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps, f.norm_offset)
        if f.embed_scale:  # Gemma: the source's width, however many dimensions pruning keeps
            self.embed_multiplier = shape.hidden_size**0.5
        elif f.multipliers:
            self.embed_multiplier = float(shape.setting("embedding_multiplier", 1.0))
        else:
            self.embed_multiplier = None
        self.reset_rotary()

    def reset_rotary(self, device: torch.device | str | None = None) -> None:
        """Build the RoPE tables: one per distinct rope setting of the layers (NoPE layers
        have none); `rope_index[i]` is layer i's table, or None."""
        settings: list[tuple[dict, int]] = []
        self.rope_index: list[int | None] = []
        for layer in range(self.shape.num_hidden_layers):
            rope = self.shape.layer_rope(layer)
            key = None if rope is None else (rope, self.shape.layer_head_dim(layer))
            if key is not None and key not in settings:
                settings.append(key)
            self.rope_index.append(None if key is None else settings.index(key))
        self.rotary_emb = nn.ModuleList(RotaryEmbedding(r, hd) for r, hd in settings)
        if device is not None:
            self.rotary_emb.to(device)

    def forward(self, input_ids: Tensor, masks: Masks, cache: KVCache | None) -> Tensor:
        start = 0 if cache is None else cache.seq_len
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        x = self.embed_tokens(input_ids)
        if self.embed_multiplier is not None:
            x = x * torch.tensor(self.embed_multiplier, dtype=x.dtype)
        if masks.z_hidden is not None:
            x = x * masks.z_hidden
        tables = [rope(positions, x.dtype) for rope in self.rotary_emb]
        for idx, layer in enumerate(self.layers):
            table = self.rope_index[idx]
            rope = None if table is None else tables[table]
            x = layer(x, rope, positions, masks, idx, cache)
        return self.norm(x, masks.z_hidden)


class MaskableDecoder(nn.Module):
    """A causal language model of any family in `shearing.models.families`, with optional
    structured-pruning masks.

    Args:
        shape: the model's configuration.
    """

    def __init__(self, shape: DecoderShape) -> None:
        super().__init__()
        self.shape = shape
        self.model = DecoderBackbone(shape)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        self.logits_scaling = (
            float(shape.setting("logits_scaling", 1.0)) if shape.family.multipliers else 1.0
        )
        self.final_softcap = shape.setting("final_logit_softcapping")
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
        """Normal(0, initializer_range) for matrices, zero biases and sinks, norms at their
        identity (ones; zeros for `1 + w` norms), as `transformers` initialises them."""
        std = self.shape.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(0.0 if module.offset else 1.0)
            elif isinstance(module, Attention) and hasattr(module, "sinks"):
                module.sinks.zero_()
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
        logits = self.lm_head(self.model(input_ids, masks, cache))
        if self.logits_scaling != 1.0:  # Granite
            logits = logits / self.logits_scaling
        if self.final_softcap is not None:  # Gemma 2
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

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
