"""Recall@k of the candidate generator on gold mentions, with load time, speed and memory.

Usage: python scripts/benchmark_candidates.py KB_DIR OUT_DIR NAME=GOLD.spacy [NAME=GOLD.spacy ...]

The same as `medllm evaluate-candidates KB_DIR --data NAME=GOLD.spacy ... --output OUT_DIR`;
the evaluation is `spacy_medllm.evaluation.candidates` (alternative ids count, through
`spacy_medllm.kb.ids_match`). Writes OUT_DIR/candidates.json and OUT_DIR/candidates.md.
"""
import sys

from spacy_medllm.evaluation import write_report
from spacy_medllm.evaluation.candidates import evaluate_candidates, markdown


def main(kb_dir: str, out_dir: str, *datasets: str) -> None:
    pairs = [tuple(spec.split("=", 1)) for spec in datasets]
    if any(len(p) != 2 for p in pairs):
        sys.exit(__doc__)
    results = evaluate_candidates(kb_dir, pairs)
    table = markdown(results)
    write_report(out_dir, "candidates", results, table)
    print(table)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
