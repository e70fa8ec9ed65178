"""The compiled sparse FFN kernel: the dense FFN's output, and a one-line fallback."""

import pytest
import torch

from shearing.models import sparse_kernel
from shearing.models.config import DecoderShape
from shearing.models.decoder import MLP


def relu_mlp(kind, threshold=0.0, d=64, units=384, seed=0):
    torch.manual_seed(seed)
    shape = DecoderShape(
        vocab_size=8, hidden_size=d, intermediate_size=units, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, head_dim=d, hidden_act=kind,
        fatrelu_threshold=threshold,
    )  # fmt: skip
    return MLP(shape).eval()


@pytest.fixture
def fresh_kernel():
    sparse_kernel.reset()
    yield
    sparse_kernel.reset()


@pytest.mark.parametrize("kind,threshold", [("relu", 0.0), ("fatrelu", 0.3), ("drelu", 0.0)])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_equals_the_dense_ffn(kind, threshold, threads, fresh_kernel):
    mlp = relu_mlp(kind, threshold)
    x = torch.randn(1, 1, 64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            dense = mlp(x)
            mlp.set_sparse_decode(True)
            assert sparse_kernel.load() is not None, "no C compiler here: the kernel is untested"
            sparse = mlp(x)
    finally:
        torch.set_num_threads(before)
    units = mlp.act_fn(mlp.gate_proj(x), mlp.up_proj(x))
    assert 0.3 < (units == 0).float().mean() < 0.95  # really sparse, and not trivially so
    # the same products summed in another order: fp32 rounding of sums of ~100 terms of
    # size <= 1 stays far below 1e-5
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-5)


def test_kernel_on_the_embedded_default_shape(fresh_kernel):
    mlp = relu_mlp("relu", d=576, units=1536, seed=1)
    x = torch.randn(1, 1, 576)
    with torch.no_grad():
        dense = mlp(x)
        mlp.set_sparse_decode(True)
        torch.testing.assert_close(mlp(x), dense, rtol=0, atol=1e-5)
        torch.testing.assert_close(mlp._sparse_torch(x.reshape(-1)), dense[0, 0], rtol=0, atol=1e-5)


def test_no_compiler_falls_back_with_one_warning_line(fresh_kernel, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SHEARING_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    mlp = relu_mlp("relu")
    x = torch.randn(1, 1, 64)
    with torch.no_grad():
        dense = mlp(x)
        mlp.set_sparse_decode(True)
        first, second = mlp(x), mlp(x)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: sparse FFN kernel unavailable (no C compiler {str(tmp_path / 'no-such-cc')!r} "
        "on PATH (set CC)); using the slower torch path"
    ]
    torch.testing.assert_close(first, dense, rtol=0, atol=1e-5)
    torch.testing.assert_close(second, dense, rtol=0, atol=1e-5)
    assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())


def test_a_failing_compiler_leaves_no_library(fresh_kernel, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SHEARING_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # runs, fails
    assert sparse_kernel.load() is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: sparse FFN kernel unavailable (false failed: ")
    assert list((tmp_path / "kernels").iterdir()) == []  # no partial .so, no temp folder
