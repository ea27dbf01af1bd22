"""Run `python -m MODULE ARGS...` with OMP/MKL limited to one thread.

project.yml commands must start with `python` so that spaCy runs them with the
interpreter of `spacy project run` (an `env VAR=1 python ...` prefix would run
whatever `python` is first on PATH instead).

    python scripts/one_thread.py spacy train configs/deid_ner.cfg --output training/deid_ner
"""
import os
import runpy
import sys

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/one_thread.py MODULE [ARGS...]")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
