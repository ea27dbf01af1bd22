"""Linking accuracy on gold mentions, end to end, and the linker's cost in the pipeline.

Usage: python scripts/benchmark_linker.py MODEL OUT_DIR NAME=GOLD.spacy [NAME=GOLD.spacy ...] [--peer CACHE]

The same as `medllm evaluate-linker MODEL --data NAME=GOLD.spacy ... --output OUT_DIR
[--peer CACHE]`; the evaluation is `spacy_medllm.evaluation.linker` (gold mentions:
accuracy@1 and recall@k, alternative ids counting through `spacy_medllm.kb.ids_match`; end
to end (span, label, id) P/R/F; seconds per component; with `--peer`, the index cache that
scripts/benchmark_scispacy_peer.py builds over the same KB, scispaCy's generator on the
same mentions). Writes OUT_DIR/linker.json and OUT_DIR/linker.md.
"""
import sys

from spacy_medllm.evaluation import write_report
from spacy_medllm.evaluation.linker import evaluate_linker, markdown


def main(model: str, out_dir: str, *datasets: str) -> None:
    peer_cache = None
    if "--peer" in datasets:
        i = datasets.index("--peer")
        peer_cache = datasets[i + 1]
        datasets = datasets[:i] + datasets[i + 2:]
    pairs = [tuple(spec.split("=", 1)) for spec in datasets]
    if not pairs or any(len(p) != 2 for p in pairs):
        sys.exit(__doc__)
    results = evaluate_linker(model, pairs, peer_cache=peer_cache)
    table = markdown(results)
    write_report(out_dir, "linker", results, table)
    print(table)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
