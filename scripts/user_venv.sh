#!/usr/bin/env bash
# A fresh virtual environment with spacy_medllm as a user installs it: its own dependencies
# only (CPU torch first, pinned), none of the benchmark extras ([deid], [ray], [test]).
# Usage: bash scripts/user_venv.sh /tmp/user-venv   (then: --python /tmp/user-venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: scripts/user_venv.sh FOLDER}"
if [ -e "$target" ]; then echo "$target exists: give a new folder" >&2; exit 1; fi
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$python" -m venv "$target"
"$target/bin/python" -m pip install -q --upgrade pip
"$target/bin/python" -m pip install -q "torch==2.13.0"
"$target/bin/python" -m pip install -q .
echo "$target/bin/python"
