"""Build the embedded-default demo corpus (see shearing/data/demo_corpus.py).

python data_prep/fetch_demo_corpus.py --out DIR [--max-chars N]
"""

import os
import sys

# data_prep/tokenize.py shadows the standard library's `tokenize` for scripts run from
# this folder; drop the folder from the import path before importing anything else.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from shearing.data.demo_corpus import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
