"""Same-budget comparison of L0 shearing with one-shot, random and from-scratch baselines.

python scripts/compare.py [--quick] --out DIR  (see shearing/compare.py for every option)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shearing.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
