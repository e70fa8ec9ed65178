"""The pruning-module table against the model's masks and hand-written gate shapes."""

import dataclasses
import subprocess
import sys

from shearing.models.decoder import Masks
from shearing.pruning.modules import MASK_FIELDS, MODULES, TABLE
from tests.pruning.test_l0 import SOURCE, TARGET


def test_every_mask_field_is_fed_by_exactly_one_module():
    assert sorted(MASK_FIELDS.values()) == sorted(f.name for f in dataclasses.fields(Masks))
    assert MODULES == ("layer", "hidden", "head", "kv_group", "intermediate")


def test_gate_shapes_and_kept_counts_by_hand():
    # L=4, d=16, K=2, G=3, I=24 -> target L=3, d=12, K=1, G=2, I=10
    shapes = {m: TABLE[m].gate_shape(SOURCE) for m in MODULES}
    assert shapes == {
        "layer": (4,), "hidden": (16,), "head": (4, 2, 3), "kv_group": (4, 2),
        "intermediate": (4, 24),
    }  # fmt: skip
    assert {m: TABLE[m].kept(TARGET) for m in MODULES} == {
        "layer": 3, "hidden": 12, "head": 2, "kv_group": 1, "intermediate": 10,
    }  # fmt: skip
    assert all(TABLE[m].changes(SOURCE, TARGET) for m in MODULES)
    # fewer heads, same group size (6 over 2 -> 3 over 1): only kv_group changes the heads
    fewer_groups = SOURCE.replace(num_attention_heads=3, num_key_value_heads=1)
    assert TABLE["kv_group"].changes(SOURCE, fewer_groups)
    assert not TABLE["head"].changes(SOURCE, fewer_groups)


def test_the_gate_code_does_not_import_data_code():
    code = (
        "import sys; import shearing.pruning.l0; "
        "bad = [m for m in sys.modules if m.startswith(('shearing.data', 'streaming'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
