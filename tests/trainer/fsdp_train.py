"""`train.py` for a process without a GPU that runs composer's FSDP on CPU (gloo).

Started by tests/trainer/test_nodes.py in place of train.py under the composer launcher:
composer asks CUDA for the device id it gives FSDP, so this process alone answers the CPU
for it; everything else is train.py unchanged.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    torch.cuda.current_device = lambda: torch.device("cpu")  # composer's device id, on CPU
    train = Path(__file__).resolve().parents[2] / "train.py"
    sys.argv = [str(train), *sys.argv[1:]]
    runpy.run_path(str(train), run_name="__main__")
