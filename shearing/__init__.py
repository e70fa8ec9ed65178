"""shearing: targeted structured pruning, dynamic batch loading and activation sparsity
for LLaMA-family models (Sheared-LLaMA, arXiv 2310.06694; ReluLLaMA; ProSparse; dReLU)."""

__version__ = "0.1.0"
