"""scispaCy's string-only candidate generator as a peer, on the same KB and gold mentions.

Usage:
    python scripts/benchmark_scispacy_peer.py KB_DIR OUT_DIR NAME=GOLD.spacy [NAME=GOLD.spacy ...]
        [--cache corpus/kb_scispacy] [--threads 1] [--limit-concepts N]
    python scripts/benchmark_scispacy_peer.py KB_DIR --build-only [--cache DIR] [--threads N] [--limit-concepts N]

KB_DIR is the output of `medllm build-kb`. The index is scispaCy's TF-IDF + HNSW index over
the KB's aliases, built as `create_tfidf_ann_index` builds it, cached under --cache (built
in a child process, so it does not inflate the query-side memory) and rebuilt only when
stale; the peer is scored on the gold mentions as scispaCy's `EntityLinker` ranks. The
evaluation is `spacy_medllm.evaluation.peer` (its docstring lists what is reported and
how the build differs from scispaCy's, without changing the index). Outputs
OUT_DIR/candidates_scispacy.json and OUT_DIR/candidates_scispacy.md (the first table has
the shape of candidates.md from `medllm evaluate-candidates`).
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from spacy_medllm.evaluation import write_report
from spacy_medllm.evaluation.peer import EF_SEARCH, build_index, evaluate_peer, markdown


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.build_only and not args.datasets:
        sys.exit("give at least one NAME=GOLD.spacy, or --build-only")
    if args.build_only:
        cache = Path(args.cache) / (f"limit-{args.limit_concepts}" if args.limit_concepts else "")
        build_index(args.kb_dir, cache, args.limit_concepts, args.threads, progress=True)
        return
    pairs = [tuple(spec.split("=", 1)) for spec in args.datasets]
    if any(len(p) != 2 for p in pairs):
        sys.exit(__doc__)
    results = evaluate_peer(
        args.kb_dir, pairs, cache=args.cache, threads=args.threads, ef_search=args.ef_search,
        limit_concepts=args.limit_concepts, progress=True,
    )
    table = markdown(results)
    write_report(args.out_dir, "candidates_scispacy", results, table)
    print(table)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kb_dir", help="folder of kb.msgpack (medllm build-kb)")
    parser.add_argument("out_dir", nargs="?", default="metrics", help="where the metrics go")
    parser.add_argument("datasets", nargs="*", help="NAME=GOLD.spacy")
    parser.add_argument("--cache", default="corpus/kb_scispacy", help="index cache folder")
    # 1 by default: the HNSW build is the slow part and the machine is shared
    parser.add_argument("--threads", type=int, default=1, help="threads for the HNSW build")
    parser.add_argument("--ef-search", type=int, default=EF_SEARCH)
    parser.add_argument("--limit-concepts", type=int, default=None, help="debug: index an evenly spaced subset of N concepts")
    parser.add_argument("--build-only", action="store_true", help="build (or rebuild) the cache and stop")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
