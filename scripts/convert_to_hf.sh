#!/usr/bin/env bash
# Composer checkpoint (file or run folder) -> stock Hugging Face model directory.
#   scripts/convert_to_hf.sh CHECKPOINT OUT_DIR [--config CONFIG] [--dtype D] [--force]
#                            [--gguf f32|f16|bf16|q8_0]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m shearing.commands.convert "$@"
