"""A fused CPU kernel for sparse FFN decoding (one token, ReLU-family activations).

For each FFN unit i it computes the gate value `act(gate_proj[i] . x)`; only when that is
non-zero does it read row i of up_proj and row i of the transposed down_proj, adding
`value * up * down_rows[i]` to the output. The gate projection is read whole, the up and
down projections only for active units, in one pass without gathering copies; units are
split between the threads of torch's own OpenMP runtime.

The C source below is compiled on first use with the system C compiler (`$CC`, else
`cc`) into `<cache>/kernels/` and loaded with ctypes: no build step at install time. Where
no compiler works, `load()` prints one warning line and returns None, and callers keep
the torch path (`MLP._sparse_torch`), which gives the same result more slowly.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from shearing.files import cache_dir
from shearing.models.config import Act

KINDS = {Act.RELU.value: 0, Act.FATRELU.value: 1, Act.DRELU.value: 2}  # the C kernel's codes

SOURCE = r"""
#include <omp.h>
#include <string.h>

static inline float dot(const float *restrict w, const float *restrict x, long d) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (long j = 0; j < d; j++) s += w[j] * x[j];
    return s;
}

/* out = sum over units i with h_i != 0 of h_i * wd[i, :], where
   h_i = act(wg[i] . x) * up(wu[i] . x); wg, wu, wd are (n, d) row-major.
   kind 0 relu: act = max(g, 0), up = identity; 1 fatrelu: act = g if g >= thr else 0;
   2 drelu: act = max(g, 0), up = max(u, 0).
   scratch holds threads * d floats. Returns the number of active units. */
long sparse_ffn(const float *x, const float *wg, const float *wu, const float *wd, long d,
                long n, int kind, float thr, float *out, float *scratch, int threads) {
    long active = 0;
    int used = 1;
#pragma omp parallel num_threads(threads) reduction(+ : active)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        used = nt;
        float *acc = scratch + (long)t * d;
        memset(acc, 0, sizeof(float) * d);
        long lo = n * t / nt, hi = n * (t + 1) / nt;
        for (long i = lo; i < hi; i++) {
            float g = dot(wg + i * d, x, d);
            float a = kind == 1 ? (g >= thr ? g : 0.0f) : (g > 0.0f ? g : 0.0f);
            if (a == 0.0f) continue;
            float u = dot(wu + i * d, x, d);
            if (kind == 2 && u < 0.0f) u = 0.0f;
            float h = a * u;
            if (h == 0.0f) continue;
            active++;
            const float *r = wd + i * d;
#pragma omp simd
            for (long j = 0; j < d; j++) acc[j] += h * r[j];
        }
#pragma omp barrier
#pragma omp for
        for (long j = 0; j < d; j++) {
            float s = 0.0f;
            for (int k = 0; k < used; k++) s += scratch[(long)k * d + j];
            out[j] = s;
        }
    }
    return active;
}
"""

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC"]
_state: dict[str, object] = {}


class KernelUnavailable(RuntimeError):
    """The kernel could not be built or loaded here; the message says why."""


def _torch_openmp() -> Path | None:
    """The OpenMP runtime bundled with torch, so the kernel shares torch's threads."""
    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return found[0] if found else None


def _cpu_key() -> str:
    """What `-march=native` depends on: a cache shared between machines stays correct."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = next((x for x in lines if x.startswith("flags")), "")
    return platform.machine() + flags


def _build() -> ctypes.CDLL:
    if sys.platform != "linux":
        raise KernelUnavailable(f"built on Linux only (this is {sys.platform})")
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise KernelUnavailable(f"no C compiler {cc!r} on PATH (set CC)")
    gomp = _torch_openmp()
    link = [str(gomp), f"-Wl,-rpath,{gomp.parent}"] if gomp else ["-fopenmp"]
    key = hashlib.sha256(
        "\0".join([SOURCE, cc, *_FLAGS, *link, _cpu_key(), torch.__version__]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"sparse_ffn-{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, obj, lib = Path(tmp, "k.c"), Path(tmp, "k.o"), Path(tmp, "k.so")
            src.write_text(SOURCE)
            for cmd in (
                [cc, *_FLAGS, "-c", str(src), "-o", str(obj)],
                [cc, "-shared", str(obj), "-o", str(lib), *link],
            ):
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    first = (done.stderr.strip().splitlines() or ["no output"])[0]
                    raise KernelUnavailable(f"{cc} failed: {first}")
            os.replace(lib, target)  # whole, or not there
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as err:
        raise KernelUnavailable(f"cannot load {target}: {err}") from None
    f = lib.sparse_ffn
    p = ctypes.c_void_p
    f.argtypes = [p, p, p, p, ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_float]
    f.argtypes += [p, p, ctypes.c_int]
    f.restype = ctypes.c_long
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled kernel, built once per process; None (after one warning line) if it
    cannot be built here. `SHEARING_SPARSE_KERNEL=0` turns it off."""
    if "lib" not in _state:
        lib = None
        if os.environ.get("SHEARING_SPARSE_KERNEL", "1") != "0":
            try:
                lib = _build()
            except (KernelUnavailable, OSError) as err:
                print(
                    f"warning: sparse FFN kernel unavailable ({err}); using the slower torch path",
                    file=sys.stderr,
                )
        _state["lib"] = lib
    return _state["lib"]  # type: ignore[return-value]


def reset() -> None:
    """Forget the loaded kernel (tests: build again under other settings)."""
    _state.clear()


def supported(*tensors: torch.Tensor) -> bool:
    """Whether the kernel takes these tensors: fp32, on the CPU, contiguous."""
    return all(
        t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in tensors
    )


def sparse_ffn(
    lib: ctypes.CDLL,
    x: torch.Tensor,
    gate: torch.Tensor,
    up: torch.Tensor,
    down_rows: torch.Tensor,
    kind: str,
    threshold: float,
    scratch: torch.Tensor,
) -> torch.Tensor:
    """The FFN output for one token `x` (d,); `down_rows` is down_proj.weight.T (I, d),
    `scratch` at least threads x d floats."""
    n, d = gate.shape
    threads = min(torch.get_num_threads(), scratch.numel() // d)
    out = torch.empty(d, dtype=torch.float32)
    lib.sparse_ffn(
        x.data_ptr(), gate.data_ptr(), up.data_ptr(), down_rows.data_ptr(), d, n,
        KINDS[kind], threshold, out.data_ptr(), scratch.data_ptr(), threads,
    )  # fmt: skip
    return out
