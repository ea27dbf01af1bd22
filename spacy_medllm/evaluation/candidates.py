"""Recall@k of the candidate generator on gold mentions, with load time, speed and memory.

The knowledge base folder is the output of `medllm build-kb` (kb.msgpack + index/). Gold
mentions with id `NIL` are excluded; a mention whose id string holds alternatives
(`D1|D2`) counts as found when any of them is among the first k candidates, and a
candidate counts when it is a gold id or another id of the same concept
(`spacy_medllm.kb.ids_match`: a 2015 supplementary record and the 2024 descriptor it
became). "id in KB" counts a gold id that is a concept's primary or alternative id.
"""
import time
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Sequence, Set, Tuple, Union

from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..errors import Errors
from ..kb import CandidateGenerator, KnowledgeBase, ids_match
from ..tokens import split_kb_id
from .metrics import KS, HitCounts, peak_rss_mb, recall_at_k

# NCBI-disease's four mention types are all diseases; other corpora's labels pass through
NCBI_DISEASE_LABELS: Dict[str, str] = {label: "Disease" for label in ("SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention")}


class Mention(NamedTuple):
    text: str
    label: str
    ids: Set[str]


def check_datasets(datasets: Sequence[Tuple[str, Union[str, Path]]]) -> None:
    """Refuse a missing gold file before anything is loaded."""
    for name, path in datasets:
        if not Path(path).exists():
            raise FileNotFoundError(Errors.E128.format(name=name, path=path))


def gold_mentions(path: Union[str, Path], label_map: Mapping[str, str] = NCBI_DISEASE_LABELS) -> List[Mention]:
    """The linked gold mentions of a .spacy file: its "mentions" span group where it has
    one (overlapping or composite mentions), else its entities; `NIL` and unlinked left out.

    label_map: mention label -> the label it is scored under (default: NCBI-disease's types
        as "Disease").
    """
    mentions = []
    for doc in DocBin().from_disk(path).get_docs(Vocab()):
        for span in doc.spans["mentions"] if "mentions" in doc.spans else doc.ents:
            ids = split_kb_id(span.kb_id_)
            if ids:
                mentions.append(Mention(span.text, label_map.get(span.label_, span.label_), set(ids)))
    return mentions


def score_candidates(
    kb: KnowledgeBase, mentions: Sequence[Mention], candidates: Sequence[Sequence[Tuple[str, float]]], ks: Sequence[int] = KS,
) -> Dict[str, Dict[str, float]]:
    """Per label and overall: mentions, id in KB, recall@k (percent)."""
    counts = HitCounts()
    for m, cands in zip(mentions, candidates):
        hits = {"id_in_kb": any(kb.resolve(i) is not None for i in m.ids)}
        hits.update(recall_at_k([cid for cid, _ in cands], m.ids, ks, match=lambda cid, gold: ids_match(kb, cid, gold)))
        counts.add(m.label, hits)
    return counts.scores()


def evaluate_candidates(kb_dir: Union[str, Path], datasets: Sequence[Tuple[str, Union[str, Path]]], *, ks: Sequence[int] = KS,
                        alphas: Sequence[float] = ()) -> Dict[str, object]:
    """Recall@k of the candidate generator in `kb_dir`/index on each (name, .spacy path).

    alphas: with a dense index, also score each of these TF-IDF weights (rows NAME@alpha=A).
    RETURNS (dict): {"kb", "concepts", "load_s", "peak_rss_mb", "dense", "datasets": {name:
        {"path", "mentions_per_second", "per_label": {label: {"mentions", "id_in_kb",
        "recall@k"...}}}}}.
    """
    check_datasets(datasets)
    t0 = time.perf_counter()
    kb = KnowledgeBase.from_disk(kb_dir)
    gen = CandidateGenerator.from_disk(Path(kb_dir) / "index", kb)
    kb.alias_index  # built lazily; part of what loading costs
    load_s = time.perf_counter() - t0
    dense = None
    if gen.dense is not None:
        dense = {"kind": gen.dense.kind, "names": len(gen.dense), "alpha": gen.alpha, "vector_mb": round(gen.dense.memory_bytes() / 2**20, 1)}
    results: Dict[str, object] = {"kb": str(kb_dir), "concepts": len(kb), "load_s": round(load_s, 2), "ks": list(ks), "dense": dense, "datasets": {}}
    own = gen.alpha
    settings = [(None, own)] + ([(a, a) for a in alphas if a != own] if gen.dense is not None else [])
    for name, path in datasets:
        mentions = gold_mentions(path)
        for tag, a in settings:
            gen.alpha = a
            t0 = time.perf_counter()
            cands = gen([m.text for m in mentions], k=max(ks))
            seconds = time.perf_counter() - t0
            results["datasets"][name if tag is None else f"{name}@alpha={a}"] = {
                "path": str(path), "alpha": a if gen.dense is not None else None,
                "mentions_per_second": round(len(mentions) / seconds) if seconds and mentions else None,
                "per_label": score_candidates(kb, mentions, cands, ks),
            }
        gen.alpha = own
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def markdown(results: Dict[str, object]) -> str:
    """The results as a markdown table (one row per data set and label)."""
    ks = results.get("ks", KS)
    lines = [
        "| data | label | mentions | id in KB | " + " | ".join(f"R@{k}" for k in ks) + " | mentions/s |",
        "|---|---|---:|---:|" + "---:|" * len(ks) + "---:|",
    ]
    for name, d in results["datasets"].items():
        for label, s in d["per_label"].items():
            speed = f"{d['mentions_per_second']:,}" if label == "overall" and d["mentions_per_second"] is not None else ""
            lines.append(f"| {name} | {label} | {s['mentions']:,} | {s['id_in_kb']:.1f} | " + " | ".join(f"{s[f'recall@{k}']:.1f}" for k in ks) + f" | {speed} |")
    mem = "n/a" if results["peak_rss_mb"] is None else f"{results['peak_rss_mb']} MB"
    dense = results.get("dense")
    extra = (f" Dense index: {dense['kind']}, {dense['names']:,} names, {dense['vector_mb']} MB of vectors, alpha {dense['alpha']}."
             if dense else " TF-IDF only (no dense index).")
    return "\n".join(lines) + f"\n\nKB: {results['concepts']:,} concepts, loaded with its index in {results['load_s']} s; peak RSS {mem}.{extra}\n"
