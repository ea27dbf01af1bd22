"""scispaCy's string-only candidate generator as a peer, on the same KB and gold mentions.

The knowledge base (the output of `medllm build-kb`: canonical names + aliases, types,
definitions) becomes a scispaCy `KnowledgeBase`; the TF-IDF + HNSW index over all of its
aliases is built exactly as `scispacy.candidate_generation.create_tfidf_ann_index` builds
it (that function refuses to run on Python >= 3.11, so its steps are replicated here),
cached, and rebuilt only when the cache is missing, older than kb.msgpack, or was built
with other settings. Mentions are then queried with scispaCy's own
`CandidateGenerator.__call__(mentions, k=30)`, and each mention's concepts are ranked the
way scispaCy's `EntityLinker` ranks them (`rank`: max similarity over the concept's
aliases, sorted descending; ties keep the generator's concept-id order).

Reported per data set and label (gold `NIL` excluded; any id of a `D1|D2` alternative
counts, and another id of the same concept, `spacy_medllm.kb.ids_match`): accuracy@1 (the
linker's top concept, no threshold; equal to recall@1), recall@1/5/10/30, accuracy@1 with
the linker's default threshold (score > 0.7), and accuracy@1 with all of the linker's
defaults (threshold 0.7, and concepts without a definition need a score >= 0.95). Also:
index build seconds and peak memory (the build runs in a child process, so it does not
inflate the query-side numbers), load seconds, mentions/s and peak RSS of load + queries.

Differences from scispaCy's own build, none of which changes the index: the vectorizer
is stored as vocabulary JSON + idf .npy instead of joblib (no pickle); the alias
vectors are stored as float32 (scipy >= 1.11 cannot store float16 sparse matrices) and
the index is saved with its data, so loading needs no second copy of the vectors; the
alias list follows KB order instead of set order, so rebuilds are reproducible; the
build uses `threads` threads (scispaCy hard-codes 60; the thread count only changes how
insertions are scheduled, not M or efConstruction).

nmslib, scikit-learn and scispaCy are imported when used, not with this module.
"""
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import srsly

from ..errors import Errors
from ..kb import Concept, KnowledgeBase, ids_match
from ..kb.knowledge_base import KB_FILE
from .candidates import Mention, check_datasets, gold_mentions
from .metrics import KS, HitCounts, peak_rss_mb, recall_at_k

if TYPE_CHECKING:  # pragma: no cover
    from scispacy.candidate_generation import CandidateGenerator, MentionCandidate
    from scispacy.linking_utils import Entity
    from scispacy.linking_utils import KnowledgeBase as ScispacyKB
    from sklearn.feature_extraction.text import TfidfVectorizer

logger = logging.getLogger(__name__)

# scispaCy's defaults: EntityLinker(k=30, threshold=0.7, no_definition_threshold=0.95),
# load_approximate_nearest_neighbours_index(ef_search=200), and the index parameters of
# create_tfidf_ann_index
LINKER_K = 30
THRESHOLD = 0.7
NO_DEFINITION_THRESHOLD = 0.95
EF_SEARCH = 200
VECTORIZER_PARAMS = {"analyzer": "char_wb", "ngram_range": (3, 3), "min_df": 10, "dtype": np.float32}
INDEX_PARAMS = {"M": 100, "efConstruction": 2000, "post": 0}

INDEX_FILE = "nmslib_index.bin"
VOCAB_FILE = "tfidf_vocabulary.json"
IDF_FILE = "tfidf_idf.npy"
VECTORS_FILE = "tfidf_vectors_sparse.npz"
ALIASES_FILE = "concept_aliases.json"
META_FILE = "meta.json"  # written last: a build that died half-way leaves no meta and is redone


def kb_file(kb_dir: Union[str, Path]) -> Path:
    path = Path(kb_dir)
    return path / KB_FILE if path.is_dir() else path


def load_concepts(kb_dir: Union[str, Path], limit: Optional[int] = None) -> List[Concept]:
    """Our KB's concepts; with `limit`, an evenly spaced subset (debugging)."""
    concepts = list(KnowledgeBase.from_disk(kb_dir))
    if limit is not None and limit < len(concepts):
        # evenly spaced, so a small slice still holds both chemicals and diseases
        step = len(concepts) / limit
        concepts = [concepts[int(i * step)] for i in range(limit)]
    return concepts


def to_entities(concepts: Sequence[Concept]) -> List["Entity"]:
    """Concepts as scispaCy entities (primary ids)."""
    from scispacy.linking_utils import Entity

    return [Entity(c.concept_id, c.canonical_name, list(c.aliases), list(c.types), c.definition) for c in concepts]


def load_entities(kb_dir: Union[str, Path], limit: Optional[int] = None) -> List["Entity"]:
    """Our KB's concepts as scispaCy entities; with `limit`, an evenly spaced subset."""
    return to_entities(load_concepts(kb_dir, limit))


def alias_list(entities: Sequence["Entity"]) -> List[str]:
    """The keys of scispaCy's `alias_to_cuis` (raw names: canonical + aliases), in KB order.

    scispaCy takes `list(kb.alias_to_cuis.keys())`, whose order depends on string hashing;
    the same set in a fixed order makes the index reproducible.
    """
    return list(dict.fromkeys(name for e in entities for name in [e.canonical_name] + list(e.aliases)))


def new_ann_index():
    import nmslib

    return nmslib.init(method="hnsw", space="cosinesimil_sparse", data_type=nmslib.DataType.SPARSE_VECTOR)


def settings(kb_dir: Union[str, Path], limit: Optional[int], index_params: Dict[str, int]) -> dict:
    """What the cached index depends on, besides the KB file's age."""
    kb_path = kb_file(kb_dir).resolve()
    return {
        "kb_file": str(kb_path),
        "kb_bytes": kb_path.stat().st_size,
        "limit_concepts": limit,
        "vectorizer": {k: (list(v) if isinstance(v, tuple) else v) for k, v in VECTORIZER_PARAMS.items() if k != "dtype"},
        "index": {"method": "hnsw", "space": "cosinesimil_sparse", **index_params},
    }


def cache_is_fresh(cache: Path, kb_dir: Union[str, Path], limit: Optional[int], index_params: Dict[str, int] = INDEX_PARAMS) -> bool:
    cache = Path(cache)
    files = [INDEX_FILE, INDEX_FILE + ".dat", VOCAB_FILE, IDF_FILE, VECTORS_FILE, ALIASES_FILE, META_FILE]
    if not all((cache / f).exists() for f in files):
        return False
    if (cache / META_FILE).stat().st_mtime < kb_file(kb_dir).stat().st_mtime:
        return False
    return srsly.read_json(cache / META_FILE).get("settings") == settings(kb_dir, limit, index_params)


def build_index(
    kb_dir: Union[str, Path], cache: Path, limit: Optional[int], threads: int, index_params: Dict[str, int] = INDEX_PARAMS,
    progress: bool = False,
) -> dict:
    """The steps of scispaCy's `create_tfidf_ann_index`, saved without pickle. Returns the meta.

    progress (bool): nmslib's own progress bar while the HNSW index is built.
    """
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    cache = Path(cache)
    start = time.perf_counter()
    entities = load_entities(kb_dir, limit)
    aliases = alias_list(entities)
    logger.info("Fitting tfidf vectorizer on %s aliases of %s concepts", f"{len(aliases):,}", f"{len(entities):,}")
    vectorizer = TfidfVectorizer(**VECTORIZER_PARAMS)
    vectors = vectorizer.fit_transform(aliases)
    # nmslib crashes on all-zero vectors; scispaCy drops those aliases from the index
    keep = np.asarray(vectors.sum(axis=1) != 0).reshape(-1)
    logger.info("Deleting %d/%d aliases because their tfidf is empty; %s features", int((~keep).sum()), len(aliases), f"{len(vectorizer.vocabulary_):,}")
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
    logger.info("Fitting ann index on %s aliases with %s (one core: ~20-30 minutes for ~100k aliases)", f"{len(aliases):,}", params)
    t = time.perf_counter()
    index = new_ann_index()
    index.addDataPointBatch(vectors)
    index.createIndex(params, print_progress=progress)
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
    logger.info("Fitting ann index took %.1f s; whole build %s s, peak RSS %s MB", ann_s, meta["build_s"], meta["build_peak_rss_mb"])
    return meta


def _build_child(args: tuple, kwargs: dict) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_index(*args, **kwargs)


def build_index_isolated(
    kb_dir: Union[str, Path], cache: Path, limit: Optional[int], threads: int, index_params: Dict[str, int] = INDEX_PARAMS,
    progress: bool = False,
) -> dict:
    """`build_index` in a fresh process, so this process's peak memory measures loading and
    querying only. Returns the meta."""
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_build_child, args=((str(kb_dir), Path(cache), limit, threads, dict(index_params)), {"progress": progress}))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or not (Path(cache) / META_FILE).exists():
        raise RuntimeError(Errors.E129.format(path=cache, code=proc.exitcode))
    return srsly.read_json(Path(cache) / META_FILE)


def load_vectorizer(cache: Path) -> "TfidfVectorizer":
    from sklearn.feature_extraction.text import TfidfVectorizer

    cache = Path(cache)
    vectorizer = TfidfVectorizer(**VECTORIZER_PARAMS, vocabulary=srsly.read_json(cache / VOCAB_FILE))
    vectorizer.idf_ = np.load(cache / IDF_FILE, allow_pickle=False)
    return vectorizer


def load_generator(cache: Path, entities: Sequence["Entity"], ef_search: int = EF_SEARCH) -> "CandidateGenerator":
    """scispaCy's `CandidateGenerator` over the cached index and a scispaCy KB of `entities`."""
    from scispacy.candidate_generation import CandidateGenerator
    from scispacy.linking_utils import KnowledgeBase as ScispacyKB

    cache = Path(cache)
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
    candidates: Sequence["MentionCandidate"],
    kb: "ScispacyKB",
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


class PeerRanker:
    """scispaCy's generator over a cached index and the concepts of our KB, ranked as its
    linker ranks; `ids_match` against our KB (alternative ids count)."""

    def __init__(self, cache: Path, concepts: Sequence[Concept], ef_search: int = EF_SEARCH):
        self.kb = KnowledgeBase(concepts)
        entities = to_entities(concepts)
        aliases_file = Path(cache) / ALIASES_FILE
        if not aliases_file.exists():
            raise FileNotFoundError(Errors.E003.format(path=aliases_file))
        # the index's rows are the aliases it was built from: over other names it would
        # silently answer with the wrong concepts
        built = srsly.read_json(aliases_file)
        names = alias_list(entities)
        # those the build kept: the names with at least one of the index's 3-grams
        kept = [n for n, nnz in zip(names, load_vectorizer(cache).transform(names).getnnz(axis=1)) if nnz]
        if built != kept:
            raise ValueError(Errors.E052.format(path=aliases_file, kb=f"the given one ({len(concepts):,} concepts)",
                                                reason=f"its {len(built):,} names are not this KB's {len(kept):,} in order"))
        self.generator = load_generator(cache, entities, ef_search)

    def candidates(self, texts: Sequence[str]) -> List[List["MentionCandidate"]]:
        return self.generator(list(texts), LINKER_K)

    def __call__(self, texts: Sequence[str], **kwargs) -> List[List[Tuple[str, float]]]:
        return [rank(c, self.generator.kb, **kwargs) for c in self.candidates(texts)]

    def match(self, cid: str, gold) -> bool:
        return ids_match(self.kb, cid, gold)


def score_peer(
    mentions: Sequence[Mention], cands: Sequence[Sequence["MentionCandidate"]], peer: PeerRanker, ks: Sequence[int] = KS,
) -> Dict[str, dict]:
    """Per label and overall: mentions, id in KB, accuracy@1 (plain, at the linker's
    threshold, with all its defaults), recall@k, no candidate (percent)."""
    kb = peer.generator.kb
    counts = HitCounts()
    for m, c in zip(mentions, cands):
        ranked = rank(c, kb)
        at_threshold = rank(c, kb, THRESHOLD)
        at_defaults = rank(c, kb, THRESHOLD, filter_for_definitions=True)
        hits = {
            "id_in_kb": any(peer.kb.resolve(g) is not None for g in m.ids),
            "accuracy@1": bool(ranked) and peer.match(ranked[0][0], m.ids),
            **recall_at_k([cid for cid, _ in ranked], m.ids, ks, match=peer.match),
            f"accuracy@1_threshold_{THRESHOLD}": bool(at_threshold) and peer.match(at_threshold[0][0], m.ids),
            "accuracy@1_linker_defaults": bool(at_defaults) and peer.match(at_defaults[0][0], m.ids),
            "no_candidate": not ranked,
        }
        counts.add(m.label, hits)
    return counts.scores()


def evaluate_peer(
    kb_dir: Union[str, Path], datasets: Sequence[Tuple[str, Union[str, Path]]], *, cache: Union[str, Path] = "corpus/kb_scispacy",
    threads: int = 1, ef_search: int = EF_SEARCH, limit_concepts: Optional[int] = None, progress: bool = False,
) -> Dict[str, object]:
    """Build (or reuse) the peer's index and score it on each (name, .spacy path).

    cache: the index cache folder; a debug subset (`limit_concepts`) goes to a subfolder,
        so it never overwrites the full index.
    """
    check_datasets(datasets)
    cache = Path(cache)
    if limit_concepts:
        cache = cache / f"limit-{limit_concepts}"
    if cache_is_fresh(cache, kb_dir, limit_concepts, INDEX_PARAMS):
        logger.info("Using the cached index in %s", cache)
    else:
        logger.info("Building the index into %s", cache)
        build_index_isolated(kb_dir, cache, limit_concepts, threads, INDEX_PARAMS, progress=progress)
    meta = srsly.read_json(cache / META_FILE)
    t0 = time.perf_counter()
    concepts = load_concepts(kb_dir, limit_concepts)
    peer = PeerRanker(cache, concepts, ef_search)
    load_s = time.perf_counter() - t0
    logger.info("Loaded KB (%s concepts) and index (%s aliases) in %.1f s", f"{len(concepts):,}", f"{meta['aliases']:,}", load_s)
    results: Dict[str, object] = {
        "kb": str(kb_dir), "concepts": len(concepts), "index": {**meta, "cache": str(cache)}, "ef_search": ef_search,
        "k": LINKER_K, "cpu_count": os.cpu_count(), "load_s": round(load_s, 2), "datasets": {},
    }
    for name, path in datasets:
        mentions = gold_mentions(path)
        t0 = time.perf_counter()
        cands = peer.candidates([m.text for m in mentions])
        seconds = time.perf_counter() - t0
        logger.info("%s: %s mentions in %.1f s", name, f"{len(mentions):,}", seconds)
        results["datasets"][name] = {
            "path": str(path), "query_s": round(seconds, 2),
            "mentions_per_second": round(len(mentions) / seconds) if seconds and mentions else None,
            "per_label": score_peer(mentions, cands, peer),
        }
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def markdown(results: dict) -> str:
    """The results as markdown tables; the first has the shape of candidates.md."""
    lines = ["| data | label | mentions | id in KB | R@1 | R@5 | R@10 | R@30 | mentions/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in results["datasets"].items():
        for label, s in d["per_label"].items():
            speed = f"{d['mentions_per_second']:,}" if label == "overall" and d["mentions_per_second"] is not None else ""
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
