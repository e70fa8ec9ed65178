"""Pruning, continued pretraining and sparsification with composer (see shearing/trainer/train.py).

    composer train.py yaml/prune_smollm2.yaml [key=value ...]   # all local GPUs / processes
    python train.py yaml/prune_smollm2.yaml [key=value ...]     # one process

The composer launcher starts this file in every process; the work is `shearing.trainer.train.main`.
"""

import sys

from shearing.trainer.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
