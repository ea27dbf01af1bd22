#!/usr/bin/env bash
# Optional: medspaCy 1.3.1 (ConText: negation, uncertainty, historical and family context)
# next to this project's spaCy 3.8. medspaCy and PyRuSH declare `spacy<3.8` for Python < 3.12
# only; on Python >= 3.12 the same releases declare `spacy>=3.8,<4.0`: the code is the same,
# the pin is a packaging quirk. So those two are installed without their pinned requirements,
# and everything else they need is installed normally. tests/test_chaining.py checks that
# ConText runs on this project's pipelines with spaCy 3.8.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
"$PY" -m pip install -q --no-deps "medspacy==1.3.1" "PyRuSH==1.0.13" "PyFastNER==1.0.10" "quicksectx==0.4.1"
"$PY" -m pip install -q "medspacy_quickumls==3.2" "jsonschema>=4" "loguru>=0.7" "Cython>=0.25,<3.2"
"$PY" -c "import spacy, medspacy; from medspacy.context import ConText; print(f'medspacy {medspacy.__version__} with spacy {spacy.__version__}')"
