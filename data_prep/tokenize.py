"""Tokenize a multi-domain corpus into packed MDS shards (see shearing/data/prep.py).

    python data_prep/tokenize.py --input DIR --output DIR --tokenizer TOK \
        [--seq-len 4096] [--eval-seqs 500] [--workers N] [--domains a,b,...] [--force]
"""

import os
import sys

# This file's name shadows the standard library's `tokenize` for anything imported after
# it; drop its folder from the import path before importing anything else.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from shearing.data.prep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
