"""gated_linear: the plain `F.linear(x, weight * rows * cols)` in value and in every
gradient, without keeping the gated weight for the backward pass."""

import pytest
import torch
import torch.nn.functional as F

from shearing.models.decoder import gated_linear, gated_weight

GATES = {
    "rows": lambda o, i: (torch.rand(o), None),
    "scalar_rows": lambda o, i: (torch.rand(()), None),
    "cols": lambda o, i: (None, torch.rand(i)),
    "both": lambda o, i: (torch.rand(o), torch.rand(i)),
    "scalar_and_cols": lambda o, i: (torch.rand(()), torch.rand(i)),
}


def inputs(gates, dtype, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 5, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 6, dtype=dtype, requires_grad=True)
    rows, cols = GATES[gates](4, 6)
    rows = None if rows is None else rows.to(dtype).requires_grad_()
    cols = None if cols is None else cols.to(dtype).requires_grad_()
    return x, w, rows, cols


@pytest.mark.parametrize("gates", sorted(GATES))
def test_gradients_match_finite_differences(gates):
    args = inputs(gates, torch.float64)
    assert torch.autograd.gradcheck(gated_linear, args)


@pytest.mark.parametrize("gates", sorted(GATES))
@pytest.mark.parametrize("autocast", [False, True])
def test_same_values_and_gradients_as_the_plain_expression(gates, autocast):
    args = inputs(gates, torch.float32)
    ref_args = [None if a is None else a.detach().clone().requires_grad_() for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = gated_linear(*args)
        ref = F.linear(ref_args[0], gated_weight(*ref_args[1:]))
    assert out.dtype == ref.dtype
    # fp32: the same products, summed in another order; bf16 autocast: both round the same
    # operands to bf16 (8 bits of mantissa), so they agree to bf16 rounding of sums of 6 terms
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref, **tol)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for a, r in zip(args, ref_args, strict=True):
        if a is not None:
            assert a.grad.dtype == r.grad.dtype == a.dtype
            torch.testing.assert_close(a.grad, r.grad, **tol)


def test_keeps_no_weight_sized_tensor_for_backward():
    x = torch.randn(3, 64, requires_grad=True)
    w = torch.randn(256, 64, requires_grad=True)
    rows, cols = torch.rand(256, requires_grad=True), torch.rand(64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    for fn in (gated_linear, lambda *a: F.linear(a[0], gated_weight(*a[1:]))):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x, w, rows, cols)
        own = w.untyped_storage().data_ptr()
        copies = {
            t.untyped_storage().data_ptr()
            for t in saved
            if t.numel() == w.numel() and t.untyped_storage().data_ptr() != own
        }
        if fn is gated_linear:
            assert copies == set()
        else:  # the plain expression keeps the row-gated and the fully gated weight
            assert len(copies) == 2
