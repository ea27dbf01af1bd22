"""Linking accuracy on gold mentions, end to end, and the linker's cost in the pipeline.

For each data set:
- gold mentions: the gold entities are given to the linker (components before it that
  write entities, the NER, are skipped); accuracy@1 of `ent.kb_id_` (an abstention, NIL,
  counts as wrong) and recall@k of `Span._.kb_candidates` (recall@1: the best candidate,
  answering always), per label, gold `NIL` excluded, any id of a `D1|D2` alternative
  counts as right, and so does another id of the same concept (`spacy_medllm.kb.ids_match`
  with the linker's KB);
- end to end: the whole pipeline from raw text; predicted (span, label, id) against the
  gold (span, label, ids): precision, recall, F1, overall and per label;
- time: seconds spent in each component over the same texts and batches
  (`metrics.time_components`), the linker's share and what it adds to the rest;
- the peer (with `peer_cache`, the index cache of `spacy_medllm.evaluation.peer` over
  the same KB): scispaCy's `CandidateGenerator` ranked as its `EntityLinker` ranks, on the
  same gold mentions in the same run, given the mention text and, as scispaCy's linker
  does with `resolve_abbreviations`, the long form where the document defines one.
Also: pipeline load time and peak memory (RSS) of this process (measured before the
peer's index is loaded).
"""
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..errors import Errors
from ..kb import ids_match
from ..linker.pipe import MedLinker
from ..relations.gold import assigns_entities
from ..tokens import NIL, split_kb_id
from .candidates import NCBI_DISEASE_LABELS, check_datasets
from .metrics import KS, HitCounts, PRFCounts, peak_rss_mb, recall_at_k, time_components

# (label, gold ids, mention text, the text the linker linked: the long form where there is one)
Query = Tuple[str, Set[str], str, str]


def linker_name(nlp: Language, model: Union[str, Path] = "") -> str:
    """The name of the pipeline's first `medllm_linker` (E125 if it has none)."""
    for name, pipe in nlp.pipeline:
        if isinstance(pipe, MedLinker):
            return name
    raise ValueError(Errors.E125.format(path=model, factory="medllm_linker", pipes=", ".join(nlp.pipe_names) or "none"))


def evaluate_linker(
    model: Union[str, Path], datasets: Sequence[Tuple[str, Union[str, Path]]], *, peer_cache: Optional[Union[str, Path]] = None,
    ks: Sequence[int] = KS, batch_size: int = 32, label_map: Mapping[str, str] = NCBI_DISEASE_LABELS,
) -> Dict[str, object]:
    """Score and time the linker of the pipeline `model` on each (name, .spacy path).

    peer_cache: the scispaCy peer's index cache (`medllm evaluate-peer` /
        scripts/benchmark_scispacy_peer.py builds it over the same KB); None: no peer.
    label_map: gold label -> the label it is scored under (NCBI-disease's types as Disease).
    RETURNS (dict): {"model", "load_s", "peak_rss_mb", "datasets": {name: {"gold_mentions",
        "end_to_end", "seconds", "words_per_second", "linker_share_of_pipeline",
        "linker_overhead_vs_rest"[, "peer_scispacy"]}}}.
    """
    check_datasets(datasets)
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - t0
    name = linker_name(nlp, model)
    linker = nlp.get_pipe(name)
    kb = linker.kb

    results: Dict[str, object] = {"model": str(model), "load_s": round(load_s, 2), "ks": list(ks), "datasets": {}}
    peer_queries: Dict[str, Tuple[List[Query], List[str]]] = {}
    for ds, path in datasets:
        gold_docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        # end to end, timed per component, first: the linker and its candidate generator keep
        # each mention's candidates and features across calls, so a gold-mention pass before it
        # would leave the timed run most of its work already done
        preds, times = time_components(nlp, [g.text for g in gold_docs], batch_size=batch_size)
        scores = end_to_end_links(preds, gold_docs, kb, label_map=label_map)
        hits, queries, missed = link_gold_mentions(nlp, name, gold_docs, ks=ks, label_map=label_map, batch_size=batch_size)
        gold_scores = hits.scores()
        peer_queries[ds] = (queries, missed)
        results["datasets"][ds] = {
            "path": str(path),
            "gold_mentions": gold_scores,
            "end_to_end": {**scores["overall"], "per_label": scores["per_label"]},
            "seconds": times.to_dict()["seconds"],
            "words_per_second": times.words_per_second,
            "linker_share_of_pipeline": times.share(name),
            "linker_overhead_vs_rest": times.adds_to_rest(name),
        }
    results["peak_rss_mb"] = peak_rss_mb()
    if peer_cache is not None:
        from .peer import PeerRanker

        peer = PeerRanker(Path(peer_cache), list(kb))
        for ds, (queries, missed) in peer_queries.items():
            results["datasets"][ds]["peer_scispacy"] = score_peer_queries(peer, queries, missed, ks)
    return results


def link_gold_mentions(
    nlp: Language, name: str, gold_docs: Sequence[Doc], *, ks: Sequence[int] = KS,
    label_map: Mapping[str, str] = NCBI_DISEASE_LABELS, batch_size: int = 32,
) -> Tuple[HitCounts, List[Query], List[str]]:
    """The linker `name` on the gold mentions of `gold_docs` (the components before it that
    write entities skipped): accuracy@1 and recall@k per label, the queries (for the peer),
    and the labels of the gold mentions the tokenizer cannot represent (counted as misses)."""
    linker = nlp.get_pipe(name)
    kb = linker.kb
    upto = nlp.pipe_names[: nlp.pipe_names.index(name)]
    gold_pipes = [p for p in upto if not assigns_entities(nlp, p)] + [name]
    hits = HitCounts()
    missed: List[str] = []
    docs, doc_ids = [], []
    for gold in gold_docs:
        doc = nlp.make_doc(gold.text)
        ents, ids = [], []
        for ent in gold.ents:
            gids = split_kb_id(ent.kb_id_)
            if not gids:
                continue
            label = label_map.get(ent.label_, ent.label_)
            span = doc.char_span(ent.start_char, ent.end_char, label=label)
            if span is None:
                hits.add(label, {})
                missed.append(label)
                continue
            ents.append(span)
            ids.append(set(gids))
        doc.ents = ents
        docs.append(doc)
        doc_ids.append(ids)
    linked, _ = time_components(nlp, docs, batch_size=batch_size, pipes=gold_pipes)
    queries: List[Query] = []
    for doc, ids in zip(linked, doc_ids):
        linked_text = {(e.start, e.end): text for e, text, _ in linker._mentions(doc)}
        for ent, gids in zip(doc.ents, ids):
            queries.append((ent.label_, gids, ent.text, linked_text.get((ent.start, ent.end), ent.text)))
            ranked = [cid for cid, _ in (ent._.kb_candidates or [])]
            match = lambda cid, gold: ids_match(kb, cid, gold)  # noqa: E731
            hits.add(ent.label_, {"acc@1": match(ent.kb_id_, gids), **recall_at_k(ranked, gids, ks, match)})
    return hits, queries, missed


def end_to_end_links(
    preds: Sequence[Doc], gold_docs: Sequence[Doc], kb, *, label_map: Mapping[str, str] = NCBI_DISEASE_LABELS,
) -> Dict[str, object]:
    """Predicted (span, label, id) against gold (span, label, ids): P/R/F overall and per label."""
    e2e = PRFCounts()
    for doc, gold in zip(preds, gold_docs):
        pred = {(e.start_char, e.end_char, e.label_): e.kb_id_ for e in doc.ents if e.kb_id_ not in ("", NIL)}
        for _, _, label in pred:
            e2e.add(label, predicted=1)
        for e in gold.ents:
            gids = split_kb_id(e.kb_id_)
            if not gids:
                continue
            label = label_map.get(e.label_, e.label_)
            cid = pred.get((e.start_char, e.end_char, label))
            e2e.add(label, gold=1, tp=int(cid is not None and ids_match(kb, cid, gids)))
    return e2e.scores()


def score_peer_queries(peer, queries: Sequence[Query], missed: Sequence[str] = (), ks: Sequence[int] = KS) -> Dict[str, dict]:
    """The peer's acc@1 / recall@k on the linker's gold mentions, given the mention text
    and given the long form; `missed`: the labels of the gold mentions the pipeline's
    tokenizer could not represent, misses for the peer too, as for the linker."""
    scores = {}
    for variant, idx in (("mention text", 2), ("long form resolved", 3)):
        ranked = peer([q[idx] for q in queries])
        hits = HitCounts()
        for label in missed:
            hits.add(label, {})
        for (label, gids, *_), r in zip(queries, ranked):
            ids = [cid for cid, _ in r]
            hits.add(label, {"acc@1": bool(ids) and peer.match(ids[0], gids), **recall_at_k(ids, gids, ks, peer.match)})
        scores[variant] = {label: {m: v for m, v in s.items() if m != "mentions"} for label, s in hits.scores().items()}
    return scores


def markdown(results: dict) -> str:
    """The results as markdown tables."""
    # acc@1: the id the pipeline sets (NIL, the linker abstaining, counts as wrong);
    # R@1: the best-ranked candidate, always answering, as the peer's ranking does
    ks = results.get("ks", KS)
    head = "| data | label | mentions | acc@1 | " + " | ".join(f"R@{k}" for k in ks) + " |"
    lines = [head, "|---|---|---:|---:|" + "---:|" * len(ks)]

    def row(title: str, label: str, n: int, s: Mapping[str, float]) -> str:
        return f"| {title} | {label} | {n:,} | {s['acc@1']:.1f} | " + " | ".join(f"{s[f'recall@{k}']:.1f}" for k in ks) + " |"

    for name, d in results["datasets"].items():
        for label, s in d["gold_mentions"].items():
            lines.append(row(name, label, s["mentions"], s))
    for name, d in results["datasets"].items():
        for variant, per_label in d.get("peer_scispacy", {}).items():
            for label, s in per_label.items():
                lines.append(row(f"{name} (scispaCy peer, {variant})", label, d["gold_mentions"][label]["mentions"], s))
    lines.append("")
    for name, d in results["datasets"].items():
        e = d["end_to_end"]
        overhead = d["linker_overhead_vs_rest"]
        lines.append(
            f"{name} end to end (span, label, id): P {e['p']:.1f} R {e['r']:.1f} F {e['f']:.1f}"
            + (f"; linker adds {100 * overhead:.1f}% to the rest of the pipeline's time" if overhead is not None else "")
        )
    mem = "n/a" if results["peak_rss_mb"] is None else f"{results['peak_rss_mb']} MB"
    lines.append(f"\nload {results['load_s']} s, peak RSS {mem}")
    return "\n".join(lines) + "\n"
