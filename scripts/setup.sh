#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with horse installed (editable) and its
# dependencies. Fast when nothing changed (a stamp holds the hash of what determines the install).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HORSE_VENV:-.venv}"
TORCH_SPEC="${HORSE_TORCH_SPEC:-torch==2.13.0}"   # the CPU build on this machine; set for a GPU image
EXTRAS="${HORSE_EXTRAS:-train,eval,dev}"
PY="${PYTHON:-python3}"

stamp_value="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC $EXTRAS"
stamp_file="$VENV/.horse-install-stamp"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_value" ] && [ -x "$VENV/bin/horse" ]; then
    exit 0
fi
echo "setup: installing horse into $VENV (one-off, about a minute)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" >&2 || true
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "is ignored" >&2 || true
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" "$TORCH_SPEC" 2>&1 | grep -v "is ignored" >&2 || true
"$VENV/bin/python" -c "import torch, horse" || { echo "setup: install failed" >&2; exit 1; }
echo "$stamp_value" > "$stamp_file"
