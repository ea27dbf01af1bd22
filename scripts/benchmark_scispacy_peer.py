"""scispaCy's string-only candidate generator as a peer, on the same KB and gold mentions.

Usage:
    python scripts/benchmark_scispacy_peer.py KB_DIR OUT_DIR NAME=GOLD.spacy [NAME=GOLD.spacy ...]
        [--cache corpus/kb_scispacy] [--threads 1] [--limit-concepts N]
    python scripts/benchmark_scispacy_peer.py KB_DIR --build-only [--cache DIR] [--threads N] [--limit-concepts N]

KB_DIR is the output of `medllm build-kb`. Its concepts (canonical names + aliases,
types, definitions) become a scispaCy `KnowledgeBase`; the TF-IDF + HNSW index over all
of its aliases is built exactly as `scispacy.candidate_generation.create_tfidf_ann_index`
builds it (that function refuses to run on Python >= 3.11, so its steps are replicated
here), cached under --cache and rebuilt only when the cache is missing, older than
kb.msgpack, or was built with other settings. Mentions are then queried with scispaCy's
own `CandidateGenerator.__call__(mentions, k=30)`, and each mention's concepts are ranked
the way scispaCy's `EntityLinker` ranks them (max similarity over the concept's aliases,
sorted descending; ties keep the generator's concept-id order).

Reported per data set and label (gold `NIL` excluded; any id of a `D1|D2` alternative
counts): accuracy@1 (the linker's top concept, no threshold; equal to recall@1),
recall@1/5/10/30, accuracy@1 with the linker's default threshold (score > 0.7), and
accuracy@1 with all of the linker's defaults (threshold 0.7, and concepts without a
definition need a score >= 0.95). Also: index build seconds and peak memory (the build
runs in a child process, so it does not inflate the query-side numbers), load seconds,
mentions/s and peak RSS of load + queries. Outputs OUT_DIR/candidates_scispacy.json and
OUT_DIR/candidates_scispacy.md (the first table has the shape of candidates.md from
scripts/benchmark_candidates.py).

Differences from scispaCy's own build, none of which changes the index: the vectorizer
is stored as vocabulary JSON + idf .npy instead of joblib (no pickle); the alias
vectors are stored as float32 (scipy >= 1.11 cannot store float16 sparse matrices) and
the index is saved with its data, so loading needs no second copy of the vectors; the
alias list follows KB order instead of set order, so rebuilds are reproducible; the
build uses --threads threads (scispaCy hard-codes 60; the thread count only changes
how insertions are scheduled, not M or efConstruction).
"""
import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import nmslib
import numpy as np
import scipy.sparse as sp
import srsly
from scispacy.candidate_generation import CandidateGenerator, MentionCandidate
from scispacy.linking_utils import Entity
from scispacy.linking_utils import KnowledgeBase as ScispacyKB
from sklearn.feature_extraction.text import TfidfVectorizer
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from spacy_medllm.corpus.base import split_kb_id
from spacy_medllm.kb import KnowledgeBase
from spacy_medllm.kb.knowledge_base import KB_FILE

KS = (1, 5, 10, 30)
# scispaCy's defaults: EntityLinker(k=30, threshold=0.7, no_definition_threshold=0.95),
# load_approximate_nearest_neighbours_index(ef_search=200), and the index parameters of
# create_tfidf_ann_index
LINKER_K = 30
THRESHOLD = 0.7
NO_DEFINITION_THRESHOLD = 0.95
EF_SEARCH = 200
VECTORIZER_PARAMS = {"analyzer": "char_wb", "ngram_range": (3, 3), "min_df": 10, "dtype": np.float32}
INDEX_PARAMS = {"M": 100, "efConstruction": 2000, "post": 0}
NCBI_TYPES = {"SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention"}

INDEX_FILE = "nmslib_index.bin"
VOCAB_FILE = "tfidf_vocabulary.json"
IDF_FILE = "tfidf_idf.npy"
VECTORS_FILE = "tfidf_vectors_sparse.npz"
ALIASES_FILE = "concept_aliases.json"
META_FILE = "meta.json"  # written last: a build that died half-way leaves no meta and is redone

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:8.1f}s] {msg}", flush=True)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def kb_file(kb_dir: str) -> Path:
    path = Path(kb_dir)
    return path / KB_FILE if path.is_dir() else path


def load_entities(kb_dir: str, limit: Optional[int] = None) -> List[Entity]:
    """Our KB's concepts as scispaCy entities; with `limit`, an evenly spaced subset (debugging)."""
    concepts = list(KnowledgeBase.from_disk(kb_dir))
    if limit is not None and limit < len(concepts):
        # evenly spaced, so a small slice still holds both chemicals and diseases
        step = len(concepts) / limit
        concepts = [concepts[int(i * step)] for i in range(limit)]
    return [Entity(c.concept_id, c.canonical_name, list(c.aliases), list(c.types), c.definition) for c in concepts]


def alias_list(entities: Sequence[Entity]) -> List[str]:
    """The keys of scispaCy's `alias_to_cuis` (raw names: canonical + aliases), in KB order.

    scispaCy takes `list(kb.alias_to_cuis.keys())`, whose order depends on string hashing;
    the same set in a fixed order makes the index reproducible.
    """
    return list(dict.fromkeys(name for e in entities for name in [e.canonical_name] + list(e.aliases)))


def new_ann_index() -> "nmslib.dist.FloatIndex":
    return nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)


def settings(kb_dir: str, limit: Optional[int], index_params: Dict[str, int]) -> dict:
    """What the cached index depends on, besides the KB file's age."""
    kb_path = kb_file(kb_dir).resolve()
    return {
        "kb_file": str(kb_path),
        "kb_bytes": kb_path.stat().st_size,
        "limit_concepts": limit,
        "vectorizer": {k: (list(v) if isinstance(v, tuple) else v) for k, v in VECTORIZER_PARAMS.items() if k != "dtype"},
        "index": {"method": "hnsw", "space": "cosinesimil_sparse", **index_params},
    }


def cache_is_fresh(cache: Path, kb_dir: str, limit: Optional[int], index_params: Dict[str, int]) -> bool:
    files = [INDEX_FILE, INDEX_FILE + ".dat", VOCAB_FILE, IDF_FILE, VECTORS_FILE, ALIASES_FILE, META_FILE]
    if not all((cache / f).exists() for f in files):
        return False
    if (cache / META_FILE).stat().st_mtime < kb_file(kb_dir).stat().st_mtime:
        return False
    return srsly.read_json(cache / META_FILE).get("settings") == settings(kb_dir, limit, index_params)


def build_index(kb_dir: str, cache: Path, limit: Optional[int], threads: int, index_params: Dict[str, int] = INDEX_PARAMS) -> dict:
    """The steps of scispaCy's `create_tfidf_ann_index`, saved without pickle. Returns the meta."""
    start = time.perf_counter()
    entities = load_entities(kb_dir, limit)
    aliases = alias_list(entities)
    log(f"Fitting tfidf vectorizer on {len(aliases):,} aliases of {len(entities):,} concepts")
    vectorizer = TfidfVectorizer(**VECTORIZER_PARAMS)
    vectors = vectorizer.fit_transform(aliases)
    # nmslib crashes on all-zero vectors; scispaCy drops those aliases from the index
    keep = np.asarray(vectors.sum(axis=1) != 0).reshape(-1)
    log(f"Deleting {int((~keep).sum())}/{len(aliases)} aliases because their tfidf is empty; {len(vectorizer.vocabulary_):,} features")
    aliases = [a for a, flag in zip(aliases, keep) if flag]
    vectors = vectors[keep].tocsr().astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / META_FILE).unlink(missing_ok=True)  # the cache is invalid until the build completes
    srsly.write_json(cache / VOCAB_FILE, {k: int(v) for k, v in vectorizer.vocabulary_.items()})
    np.save(cache / IDF_FILE, vectorizer.idf_.astype(np.float32))
    sp.save_npz(cache / VECTORS_FILE, vectors)
    srsly.write_json(cache / ALIASES_FILE, aliases)
    vectorize_s = time.perf_counter() - start
    params = {**index_params, "indexThreadQty": threads}
    log(f"Fitting ann index on {len(aliases):,} aliases with {params} (one core: ~20-30 minutes for ~100k aliases)")
    t = time.perf_counter()
    index = new_ann_index()
    index.addDataPointBatch(vectors)
    index.createIndex(params, print_progress=True)
    ann_s = time.perf_counter() - t
    index.saveIndex(str(cache / INDEX_FILE), save_data=True)
    meta = {
        "settings": settings(kb_dir, limit, index_params),
        "threads": threads,
        "concepts": len(entities),
        "aliases": len(aliases),
        "features": len(vectorizer.vocabulary_),
        "vectorize_s": round(vectorize_s, 1),
        "ann_build_s": round(ann_s, 1),
        "build_s": round(time.perf_counter() - start, 1),
        "build_peak_rss_mb": peak_rss_mb(),
    }
    srsly.write_json(cache / META_FILE, meta)
    log(f"Fitting ann index took {ann_s:.1f} s; whole build {meta['build_s']} s, peak RSS {meta['build_peak_rss_mb']} MB")
    return meta


def load_vectorizer(cache: Path) -> TfidfVectorizer:
    vectorizer = TfidfVectorizer(**VECTORIZER_PARAMS, vocabulary=srsly.read_json(cache / VOCAB_FILE))
    vectorizer.idf_ = np.load(cache / IDF_FILE, allow_pickle=False)
    return vectorizer


def load_generator(cache: Path, entities: Sequence[Entity], ef_search: int = EF_SEARCH) -> CandidateGenerator:
    """scispaCy's `CandidateGenerator` over the cached index and a scispaCy KB of `entities`."""
    index = new_ann_index()
    index.loadIndex(str(cache / INDEX_FILE), load_data=True)
    index.setQueryTimeParams({"efSearch": ef_search})
    return CandidateGenerator(
        ann_index=index,
        tfidf_vectorizer=load_vectorizer(cache),
        ann_concept_aliases_list=srsly.read_json(cache / ALIASES_FILE),
        kb=ScispacyKB(list(entities)),  # scispaCy builds cui_to_entity / alias_to_cuis itself
    )


def rank(
    candidates: Sequence[MentionCandidate],
    kb: ScispacyKB,
    threshold: Optional[float] = None,
    filter_for_definitions: bool = False,
    no_definition_threshold: float = NO_DEFINITION_THRESHOLD,
) -> List[Tuple[str, float]]:
    """(concept_id, score) best first, as `scispacy.linking.EntityLinker.__call__` computes them.

    threshold=None keeps every candidate (the linker's ranking without its cut-off).
    """
    predicted = []
    for cand in candidates:
        score = max(cand.similarities)
        if filter_for_definitions and kb.cui_to_entity[cand.concept_id].definition is None and score < no_definition_threshold:
            continue
        if threshold is None or score > threshold:
            predicted.append((cand.concept_id, score))
    # stable: equal scores keep the generator's concept-id order, as in the linker
    return sorted(predicted, reverse=True, key=lambda x: x[1])


def gold_mentions(path: str) -> List[Tuple[str, str, Set[str]]]:
    """(text, label, gold ids) of the linked gold mentions, as scripts/benchmark_candidates.py reads them."""
    mentions = []
    for doc in DocBin().from_disk(path).get_docs(Vocab()):
        for span in doc.spans["mentions"] if "mentions" in doc.spans else doc.ents:
            ids = split_kb_id(span.kb_id_)
            if ids:
                label = "Disease" if span.label_ in NCBI_TYPES else span.label_
                mentions.append((span.text, label, set(ids)))
    return mentions


def evaluate(mentions: Sequence[Tuple[str, str, Set[str]]], cands: Sequence[Sequence[MentionCandidate]], kb: ScispacyKB) -> Dict[str, dict]:
    ranked = [rank(c, kb) for c in cands]
    at_threshold = [rank(c, kb, THRESHOLD) for c in cands]
    at_defaults = [rank(c, kb, THRESHOLD, filter_for_definitions=True) for c in cands]

    def pct(hits: int, n: int) -> float:
        return round(100 * hits / n, 2) if n else 0.0

    def top1(preds: Sequence[Tuple[str, float]], gold: Set[str]) -> bool:
        return bool(preds) and preds[0][0] in gold

    per_label = {}
    for label in sorted({m[1] for m in mentions}) + ["overall"]:
        sel = [i for i, m in enumerate(mentions) if label == "overall" or m[1] == label]
        n = len(sel)
        per_label[label] = {
            "mentions": n,
            "id_in_kb": pct(sum(any(g in kb.cui_to_entity for g in mentions[i][2]) for i in sel), n),
            "accuracy@1": pct(sum(top1(ranked[i], mentions[i][2]) for i in sel), n),
            **{f"recall@{k}": pct(sum(any(cid in mentions[i][2] for cid, _ in ranked[i][:k]) for i in sel), n) for k in KS},
            f"accuracy@1_threshold_{THRESHOLD}": pct(sum(top1(at_threshold[i], mentions[i][2]) for i in sel), n),
            "accuracy@1_linker_defaults": pct(sum(top1(at_defaults[i], mentions[i][2]) for i in sel), n),
            "no_candidate": pct(sum(not ranked[i] for i in sel), n),
        }
    return per_label


def markdown(results: dict) -> str:
    lines = ["| data | label | mentions | id in KB | R@1 | R@5 | R@10 | R@30 | mentions/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in results["datasets"].items():
        for label, s in d["per_label"].items():
            speed = f"{d['mentions_per_second']:,}" if label == "overall" else ""
            lines.append(f"| {name} | {label} | {s['mentions']:,} | {s['id_in_kb']:.1f} | " + " | ".join(f"{s[f'recall@{k}']:.1f}" for k in KS) + f" | {speed} |")
    lines += [
        "",
        f"scispaCy `EntityLinker` top-1 (accuracy@1 = R@1 above); with its default threshold (score > {THRESHOLD}); with all its defaults (also score >= {NO_DEFINITION_THRESHOLD} for concepts without a definition):",
        "",
        f"| data | label | acc@1 | acc@1 (> {THRESHOLD}) | acc@1 (linker defaults) | no candidate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, d in results["datasets"].items():
        for label, s in d["per_label"].items():
            lines.append(
                f"| {name} | {label} | {s['accuracy@1']:.1f} | {s[f'accuracy@1_threshold_{THRESHOLD}']:.1f} | {s['accuracy@1_linker_defaults']:.1f} | {s['no_candidate']:.1f} |"
            )
    ix = results["index"]
    limit = f" (debug subset: --limit-concepts {ix['settings']['limit_concepts']})" if ix["settings"]["limit_concepts"] else ""
    lines += [
        "",
        f"KB: {results['concepts']:,} concepts{limit}, {ix['aliases']:,} aliases in the scispaCy TF-IDF (char 3-grams, min_df 10, "
        f"{ix['features']:,} features) + nmslib HNSW index (M {INDEX_PARAMS['M']}, efConstruction {INDEX_PARAMS['efConstruction']}, "
        f"efSearch {results['ef_search']}, k {LINKER_K}). Index build {ix['build_s']:,} s ({ix['ann_build_s']:,} s HNSW, {ix['threads']} thread(s)), "
        f"peak RSS {ix['build_peak_rss_mb']} MB. Loaded in {results['load_s']} s; peak RSS of load + queries {results['peak_rss_mb']} MB.",
    ]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> None:
    cache = Path(args.cache)
    if args.limit_concepts:
        # a debug subset never overwrites the full index
        cache = cache / f"limit-{args.limit_concepts}"
    if not args.build_only and not args.datasets:
        sys.exit("give at least one NAME=GOLD.spacy, or --build-only")
    if args.build_only:
        build_index(args.kb_dir, cache, args.limit_concepts, args.threads)
        return
    if cache_is_fresh(cache, args.kb_dir, args.limit_concepts, INDEX_PARAMS):
        log(f"Using the cached index in {cache}")
    else:
        # in a child process, so this process's peak RSS measures loading and querying only
        log(f"Building the index into {cache}")
        cmd = [sys.executable, __file__, args.kb_dir, "--build-only", "--cache", args.cache, "--threads", str(args.threads)]
        if args.limit_concepts:
            cmd += ["--limit-concepts", str(args.limit_concepts)]
        subprocess.run(cmd, check=True)
    meta = srsly.read_json(cache / META_FILE)

    t0 = time.perf_counter()
    entities = load_entities(args.kb_dir, args.limit_concepts)
    gen = load_generator(cache, entities, args.ef_search)
    load_s = time.perf_counter() - t0
    log(f"Loaded KB ({len(entities):,} concepts) and index ({meta['aliases']:,} aliases) in {load_s:.1f} s")
    results = {
        "kb": args.kb_dir,
        "concepts": len(entities),
        "index": {**meta, "cache": str(cache)},
        "ef_search": args.ef_search,
        "k": LINKER_K,
        "cpu_count": os.cpu_count(),
        "load_s": round(load_s, 2),
        "datasets": {},
    }
    for spec in args.datasets:
        name, path = spec.split("=", 1)
        mentions = gold_mentions(path)
        t0 = time.perf_counter()
        cands = gen([m[0] for m in mentions], LINKER_K)
        seconds = time.perf_counter() - t0
        log(f"{name}: {len(mentions):,} mentions in {seconds:.1f} s")
        results["datasets"][name] = {
            "path": path,
            "query_s": round(seconds, 2),
            "mentions_per_second": round(len(mentions) / seconds),
            "per_label": evaluate(mentions, cands, gen.kb),
        }
    results["peak_rss_mb"] = peak_rss_mb()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srsly.write_json(out / "candidates_scispacy.json", results)
    table = markdown(results)
    (out / "candidates_scispacy.md").write_text(table, encoding="utf8")
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
