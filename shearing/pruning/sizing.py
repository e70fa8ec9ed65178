"""A target shape from a parameter budget (`model.l0_module.target_params`).

The rule, Sheared-LLaMA's way of shrinking Llama-2-7B to 2.7B: keep the head width and
the number of layers, and scale the hidden size, the attention heads and the FFN width by
one factor s. The widths are rounded to a multiple of 64 (of smaller powers of two for
small models), the heads to a whole number that the attention layout allows. Where the
exported config class refuses that shape (transformers 5's LlamaConfig needs `hidden_size`
to be a multiple of `num_attention_heads`, even with an explicit `head_dim`), the hidden
size is rounded to a multiple of lcm(8, heads) instead. Of these shapes, the largest
whose dense model has at most the budget's parameters (embeddings included, as the paper
counts) and that the config class accepts wins. Keys the user gives in `target_model`
are kept as given, and dimensions whose pruning module is not learned keep the source's
value.

For Llama-2-7B, `target_params: 2.71e9` gives the paper's 2.7B shape (hidden 2560, 20
heads, FFN 6912, 32 layers); the 1.3B shape also has 24 layers, so it is
`target_params: 1.35e9` with `target_model: {num_hidden_layers: 24}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from shearing.models.config import DecoderShape


def quantum(width: int) -> int:
    """The multiple a scaled width is rounded to: the largest of 64, 32, 16, 8 that divides
    `width` and leaves at least 8 steps, else 1 (tiny test models)."""
    for q in (64, 32, 16, 8):
        if width % q == 0 and width // q >= 8:
            return q
    return 1


def _scaled(width: int, s: float, q: int | None = None) -> int:
    q = q or quantum(width)
    return min(width, max(q, round(s * width / q) * q))


def head_quantum(heads: int) -> int:
    """The multiple the hidden size is rounded to when the exported config needs it to
    be a multiple of the query heads: lcm(8, heads)."""
    return math.lcm(8, heads)


def scaled_shape(source: DecoderShape, modules: tuple[str, ...], given: dict, s: float) -> dict:
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


def _head_counts(source: DecoderShape) -> set[int]:
    """Every query-head count a target of the rule can have."""
    kv, group = source.num_key_value_heads, source.group_size
    return {k * g for k in range(1, kv + 1) for g in range(1, group + 1)}


def breakpoints(source: DecoderShape) -> list[float]:
    """Every scale at which a dimension of the rule's shapes can change: the rounding
    points of each width (in its quanta, the heads' quanta included) and of each head
    count, with 0 and 1."""
    points = {0.0, 1.0}
    widths = [(source.intermediate_size, quantum(source.intermediate_size))]
    widths += [(source.hidden_size, q) for q in {quantum(source.hidden_size)}
               | {head_quantum(h) for h in _head_counts(source)}]  # fmt: skip
    for width, q in widths:
        steps = width / q
        points.update((k + 0.5) / steps for k in range(math.ceil(steps)))
    for count in (source.num_key_value_heads, source.group_size):
        points.update((k + 0.5) / count for k in range(count))
    return sorted(p for p in points if 0.0 <= p <= 1.0)


def rule_shapes(
    source: DecoderShape,
    modules: tuple[str, ...],
    given: dict,
    accepts: Callable[[DecoderShape], bool] | None = None,
) -> list[dict]:
    """Every distinct shape the rule makes for some scale in [0, 1], smallest scale first
    (at each breakpoint and between each two, so no shape is missed); a shape `accepts`
    refuses is replaced by its heads-multiple hidden size (see the module docstring)."""
    points = breakpoints(source)
    scales = points + [(a + b) / 2 for a, b in zip(points, points[1:], strict=False)]
    shapes: list[dict] = []
    for s in sorted(scales):
        shape = scaled_shape(source, modules, given, s)
        refused = accepts is not None and not accepts(source.replace(**shape))
        if refused and "hidden" in modules and "hidden_size" not in given:
            heads = shape.get("num_attention_heads", source.num_attention_heads)
            shape["hidden_size"] = _scaled(source.hidden_size, s, head_quantum(heads))
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def sized_target(
    source: DecoderShape,
    modules: tuple[str, ...],
    given: dict[str, int],
    budget: float,
    accepts: Callable[[DecoderShape], bool] | None = None,
) -> dict[str, int]:
    """Target dimensions (HF names) for at most `budget` parameters; `budget` <= 1 is a
    fraction of the source's parameters. `accepts` (default: every shape) says which
    shapes can be exported; the largest accepted shape within the budget wins.

    Raises:
        ValueError: a budget at or above the source's size, or below the smallest shape
            the pruning modules can make (that `accepts`).
    """
    total = source.num_params()
    wanted = budget * total if budget <= 1 else budget
    if not 0 < wanted < total:
        raise ValueError(
            f"is {budget:g}; it must be a parameter count below the source's {total:,} or a "
            "fraction in (0, 1)"
        )
    shapes = rule_shapes(source, modules, given, accepts)
    sized = [(source.replace(**t).num_params(), t) for t in shapes]
    fitting = [(n, t) for n, t in sized if n <= wanted]
    if not fitting:
        raise ValueError(
            f"is {budget:g} ({int(wanted):,} parameters); the smallest shape these pruning "
            f"modules can make has {min(n for n, _ in sized):,}"
        )
    for _, t in reversed(sorted(fitting, key=lambda nt: nt[0])):  # ties: the larger scale
        if accepts is None or accepts(source.replace(**t)):
            return t
    raise ValueError(
        f"is {budget:g} ({int(wanted):,} parameters); none of the shapes within it that these "
        "pruning modules can make is one the exported config class accepts"
    )
