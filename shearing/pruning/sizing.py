"""A target shape from a parameter budget (`model.l0_module.target_params`).

The rule, Sheared-LLaMA's way of shrinking Llama-2-7B to 2.7B: keep the head width and
the number of layers, and scale the hidden size, the attention heads and the FFN width by
one factor s. The widths are rounded to a multiple of 64 (of smaller powers of two for
small models), the heads to a whole number that the attention layout allows; the largest
s whose dense model has at most the budget's parameters (embeddings included, as the
paper counts) wins. Keys the user gives in `target_model` are kept as given, and
dimensions whose pruning module is not learned keep the source's value.

For Llama-2-7B, `target_params: 2.71e9` gives the paper's 2.7B shape (hidden 2560, 20
heads, FFN 6912, 32 layers); the 1.3B shape also has 24 layers, so it is
`target_params: 1.35e9` with `target_model: {num_hidden_layers: 24}`.
"""

from __future__ import annotations

from shearing.models.config import LlamaShape

#: Bisection steps over the scale factor (2^-40: far below one unit of any dimension).
_STEPS = 40


def quantum(width: int) -> int:
    """The multiple a scaled width is rounded to: the largest of 64, 32, 16, 8 that divides
    `width` and leaves at least 8 steps, else 1 (tiny test models)."""
    for q in (64, 32, 16, 8):
        if width % q == 0 and width // q >= 8:
            return q
    return 1


def _scaled(width: int, s: float) -> int:
    q = quantum(width)
    return min(width, max(q, round(s * width / q) * q))


def scaled_shape(source: LlamaShape, modules: tuple[str, ...], given: dict, s: float) -> dict:
    """The target dimensions at scale `s` (see the module docstring)."""
    t = {}
    if "hidden" in modules:
        t["hidden_size"] = _scaled(source.hidden_size, s)
    if "intermediate" in modules:
        t["intermediate_size"] = _scaled(source.intermediate_size, s)
    group, kv = source.group_size, source.num_key_value_heads
    if "kv_group" in modules:  # whole groups go: key/value heads scale, the group size stays
        kv = max(1, min(kv, round(s * kv)))
        t["num_key_value_heads"], t["num_attention_heads"] = kv, kv * group
    if "head" in modules:  # query heads within the groups: a multiple of the kv heads
        kv = given.get("num_key_value_heads", t.get("num_key_value_heads", kv))
        per = max(1, min(group, round(s * group)))
        t["num_attention_heads"] = kv * per
    return t | given


def sized_target(
    source: LlamaShape, modules: tuple[str, ...], given: dict[str, int], budget: float
) -> dict[str, int]:
    """Target dimensions (HF names) for at most `budget` parameters; `budget` <= 1 is a
    fraction of the source's parameters.

    Raises:
        ValueError: a budget at or above the source's size, or below the smallest shape
            the pruning modules can make.
    """
    total = source.num_params()
    wanted = budget * total if budget <= 1 else budget
    if not 0 < wanted < total:
        raise ValueError(
            f"is {budget:g}; it must be a parameter count below the source's {total:,} or a "
            "fraction in (0, 1)"
        )

    def params(s: float) -> int:
        return source.replace(**scaled_shape(source, modules, given, s)).num_params()

    low, high = 0.0, 1.0
    if params(low) > wanted:
        raise ValueError(
            f"is {budget:g} ({int(wanted):,} parameters); the smallest shape these pruning "
            f"modules can make has {params(low):,}"
        )
    for _ in range(_STEPS):
        mid = (low + high) / 2
        low, high = (mid, high) if params(mid) <= wanted else (low, mid)
    return scaled_shape(source, modules, given, low)
