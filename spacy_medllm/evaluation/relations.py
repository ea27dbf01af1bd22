"""Relation extraction: BC5CDR CID at concept level, mention-pair corpora (ADE, Chia), and
the relation component's share of the pipeline's time.

`evaluate_cid` (a pipeline: transformer + ner + medllm_linker + medllm_rel) scores per
document the predicted (document, chemical id, disease id) pairs against the gold CID pairs:
- gold entities: the gold mentions with their gold ids are given to the relation
  component (NER and linker skipped); a composite mention `D1|D2` belongs to both
  concepts; pairs with a `NIL` side are never counted (gold CID pairs all have ids);
- end to end: raw text through the pipeline's NER, linker and relation component (the
  shared task's protocol); only predicted pairs whose two entities were linked count, and
  a linked id counts for a gold id of the same concept (the ids are compared by the
  linker KB's primary id: `spacy_medllm.kb.ids_match`);
- time: seconds per component over the test documents, on the same batches
  (`metrics.time_components`), the relation component's share and what it adds to the rest;
- a baseline: every candidate concept pair with two mentions in one sentence.
`evaluate_mention_relations` (ADE: drug -> effect `ADE`, drug -> dose `DOSE`; Chia: per
label) scores mention pairs by character offsets, with gold entities, with the
component's own scorer. `evaluate_relations` runs the ones given and notes the models
that do not exist (Chia is optional).
`candidate_pair_scores` and `precision_recall_curve` give the concept-pair precision and
recall of a relation component over its thresholds, in the units of `concept_pair_counts`
(for `medllm evaluate-pipeline`).
"""
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy
import spacy
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from ..errors import Errors
from ..kb import KnowledgeBase
from ..linker.pipe import MedLinker
from ..relations import RelationExtractor, concept_keys, concept_pairs, gold_entity_docs, score_relations
from ..relations.gold import assigns_entities
from ..tokens import get_relations, split_kb_id
from .metrics import PRFCounts, peak_rss_mb, percent, prf, time_components

BATCH = 32
ADE_TYPE_LABELS = {"Effect": "ADE", "Dose": "DOSE"}
CID = ("CID", "Chemical", "Disease")  # relation label, head entity label, tail entity label
CURVE_POINTS = 200  # at most this many points of a precision-recall curve are kept


def rel_name(nlp: Language, model: Union[str, Path] = "") -> str:
    """The name of the pipeline's first `medllm_rel` (E122 if it has none)."""
    for name, pipe in nlp.pipeline:
        if isinstance(pipe, RelationExtractor):
            return name
    raise ValueError(Errors.E122.format(path=model, pipes=", ".join(nlp.pipe_names) or "none"))


def read(nlp: Language, path: Union[str, Path], limit: int = 0, min_entities: int = 0) -> List[Doc]:
    if not Path(path).exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    docs = [d for d in DocBin().from_disk(path).get_docs(nlp.vocab) if len(d.ents) >= min_entities]
    return docs[:limit] if limit else docs


def _pct(scores: Mapping[str, float]) -> Dict[str, float]:
    return {k: percent(v or 0.0) for k, v in scores.items()}


def doc_key(doc: Doc, i: int) -> str:
    return str(doc._.medllm_doc_id) if doc._.medllm_doc_id else str(i)


def canonical_ids(kb: Optional[KnowledgeBase]) -> Callable[[str], str]:
    """An id -> the KB's primary id of its concept (the id itself when the KB lacks it), so
    that two ids of one concept compare equal: set intersection then counts as `ids_match`."""
    if kb is None:
        return lambda cid: cid
    return lambda cid: kb.resolve(cid) or cid


def concept_pair_counts(
    pred_docs: Sequence[Doc], gold_docs: Sequence[Doc], label: str, kb: Optional[KnowledgeBase] = None,
) -> Dict[str, float]:
    """Document-level concept-pair P/R/F (percent) with the predicted and gold counts."""
    canon = canonical_ids(kb)
    pred, gold = set(), set()
    for i, (p, g) in enumerate(zip(pred_docs, gold_docs)):
        key = doc_key(g, i)
        pred.update((key, canon(h), canon(t)) for _, h, t in concept_pairs(p, label))
        gold.update((key, canon(h), canon(t)) for _, h, t in concept_keys(get_relations(g), label))
    counts = PRFCounts()
    counts.add_sets(pred, gold, label_of=lambda _: label)
    s = counts.scores()["overall"]
    return {"p": s["p"], "r": s["r"], "f": s["f"], "predicted": s["predicted"], "gold": s["gold"]}


def candidate_pair_scores(
    rel: RelationExtractor, docs: Sequence[Doc], labels: Sequence[str], *, batch_size: int = BATCH,
) -> Dict[str, List[Dict[Tuple[str, str], float]]]:
    """The probability of every candidate concept pair of the component `rel`, whatever its
    thresholds: per label, per Doc, {(head id, tail id): the highest probability of a
    candidate with those ids}, unrounded. The ids are those of the records the component
    writes for a candidate (one without ids on both sides gives none). The Docs must hold
    what the model reads (they went through the components before `rel`); the component
    and the Docs are left as they are.
    """
    index = [rel.labels.index(label) for label in labels]
    out: Dict[str, List[Dict[Tuple[str, str], float]]] = {label: [] for label in labels}
    for start in range(0, len(docs), batch_size):
        batch = list(docs[start : start + batch_size])
        instances, probs = rel.predict(batch)
        j = 0
        for doc, inst in zip(batch, instances):
            scores: Dict[str, Dict[Tuple[str, str], float]] = {label: {} for label in labels}
            for p, (eh, et) in enumerate(inst.pairs):
                for label, k in zip(labels, index):
                    prob = float(probs[j + p, k])
                    for _, h, t in concept_keys([rel._record(doc, inst, eh, et, p, label, prob)]):
                        scores[label][(h, t)] = max(scores[label].get((h, t), 0.0), prob)
            j += len(inst.pairs)
            for label in labels:
                out[label].append(scores[label])
    return out


def precision_recall_curve(
    scores: Sequence[Mapping[Tuple[str, str], float]], gold_docs: Sequence[Doc], label: str, kb: Optional[KnowledgeBase] = None,
    *, threshold: float, max_points: int = CURVE_POINTS,
) -> Dict[str, object]:
    """Document-level concept-pair precision and recall (percent) over thresholds, in the
    units of `concept_pair_counts`: a (document, head id, tail id) key is predicted at a
    threshold when one of its candidates' probability reaches it.

    scores: per Doc, {(head id, tail id): probability}, `candidate_pair_scores`.
    threshold: the component's threshold for `label`; `at_threshold` holds the P/R/F that
        it alone gives (compared in float32, as the component compares).
    max_points: the curve keeps at most this many of its points, evenly spread.
    RETURNS (Dict[str, object]): {"thresholds" (one per distinct probability, decreasing),
        "precision", "recall" (non-decreasing), "average_precision" (the precision at each
        threshold weighted by the recall it adds, over every point; gold keys without a
        candidate count as never found), "pairs" (scored keys), "gold", "at_threshold"}.
    """
    canon = canonical_ids(kb)
    best: Dict[Tuple[str, str, str], float] = {}
    gold = set()
    for i, (doc_scores, g) in enumerate(zip(scores, gold_docs)):
        key = doc_key(g, i)
        for (h, t), score in doc_scores.items():
            k = (key, canon(h), canon(t))
            best[k] = max(best.get(k, 0.0), score)
        gold.update((key, canon(h), canon(t)) for _, h, t in concept_keys(get_relations(g), label))
    ranked = sorted(((score, k in gold) for k, score in best.items()), key=lambda x: -x[0])
    thresholds: List[float] = []
    precision: List[float] = []
    recall: List[float] = []
    tp, ap, last_r = 0, 0.0, 0.0
    for n, (score, hit) in enumerate(ranked, 1):
        tp += hit
        if n < len(ranked) and ranked[n][0] == score:
            continue  # one point per distinct probability: tied keys come in together
        s = prf(tp, n, len(gold))
        ap += (s["r"] - last_r) * s["p"]
        last_r = s["r"]
        thresholds.append(score)
        precision.append(percent(s["p"]))
        recall.append(percent(s["r"]))
    if len(thresholds) > max_points:
        keep = sorted({round(i * (len(thresholds) - 1) / (max_points - 1)) for i in range(max_points)})
        thresholds, precision, recall = ([xs[i] for i in keep] for xs in (thresholds, precision, recall))
    limit = float(numpy.float32(threshold))
    accepted = [hit for score, hit in ranked if score >= limit]
    at = prf(sum(accepted), len(accepted), len(gold))
    return {
        "thresholds": thresholds, "precision": precision, "recall": recall, "average_precision": percent(ap),
        "pairs": len(best), "gold": len(gold),
        "at_threshold": {**{k: percent(v) for k, v in at.items()}, "predicted": len(accepted), "gold": len(gold)},
    }


def pipeline_kb(nlp: Language) -> Optional[KnowledgeBase]:
    """The KB of the pipeline's linker, if it has one."""
    for _, pipe in nlp.pipeline:
        if isinstance(pipe, MedLinker):
            return pipe.kb
    return None


def _thresholds(rel: RelationExtractor) -> Dict[str, object]:
    return {
        "thresholds": {label: rel.threshold_of(label) for label in rel.labels},
        "relative_thresholds": {label: rel.relative_threshold_of(label) for label in rel.labels},
    }


def evaluate_cid(model: Union[str, Path], data: Union[str, Path], limit: int = 0, *, labels: Tuple[str, str, str] = CID, batch_size: int = BATCH) -> Dict[str, object]:
    """Concept-pair relation scores of the pipeline `model` on the gold .spacy file `data`.

    labels: (relation label, head entity label, tail entity label), BC5CDR's CID by default.
    """
    label, head_label, tail_label = labels
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - t0
    name = rel_name(nlp, model)
    kb = pipeline_kb(nlp)
    gold_docs = read(nlp, data, limit)
    # (a) gold entities and ids
    examples = list(gold_entity_docs(nlp, gold_docs, upto=name, batch_size=batch_size))
    rel = nlp.get_pipe(name)
    pred = list(rel.pipe([eg.predicted for eg in examples], batch_size=batch_size))
    # candidate recall: gold pairs whose two concepts are among the (aligned) gold entities
    ceiling = 0
    for eg, g in zip(examples, gold_docs):
        ids = defaultdict(set)
        for e in eg.predicted.ents:
            ids[e.label_].update(split_kb_id(e.kb_id_))
        ceiling += sum(h in ids[head_label] and t in ids[tail_label] for _, h, t in concept_keys(get_relations(g), label))
    gold_entities = concept_pair_counts(pred, gold_docs, label, kb)
    gold_entities["gold_pairs_with_both_concepts_among_entities"] = ceiling
    # baseline: every candidate concept pair with two mentions in one sentence
    cooccur = []
    for eg in examples:
        inst = rel.candidates(eg.predicted)
        doc = eg.predicted.copy()
        doc._.medllm_rels = [
            {"head": None, "tail": None, "head_id": inst.entities[h].concept_id, "tail_id": inst.entities[t].concept_id, "label": label, "score": 1.0}
            for (h, t), s in zip(inst.pairs, inst.sentence_gaps) if s == 0
        ]
        cooccur.append(doc)
    # (b) end to end, timed per component
    e2e, times = time_components(nlp, [g.text for g in gold_docs], batch_size=batch_size)
    # the NER of the same run (a pipeline trained with the relation head fine-tunes the
    # shared encoder the NER reads)
    ner = Scorer.score_spans([Example(p, g) for p, g in zip(e2e, gold_docs)], "ents")
    return {
        "model": str(model), "data": str(data), "documents": len(gold_docs), "load_s": round(load_s, 2),
        **_thresholds(rel),
        "gold_entities": gold_entities,
        "end_to_end": concept_pair_counts(e2e, gold_docs, label, kb),
        "ner_end_to_end": {k: percent(ner[f"ents_{k}"] or 0.0) for k in ("p", "r", "f")},
        "baseline_same_sentence_gold_entities": concept_pair_counts(cooccur, gold_docs, label, kb),
        "batch_size": batch_size,
        "seconds": times.to_dict()["seconds"],
        "words_per_second": times.words_per_second,
        "rel_share_of_pipeline": times.share(name),
        "rel_adds_to_rest": times.adds_to_rest(name),
    }


def evaluate_mention_relations(
    model: Union[str, Path], data: Union[str, Path], limit: int = 0, type_labels: Optional[Mapping[str, str]] = None, *, batch_size: int = BATCH,
) -> Dict[str, object]:
    """Mention-pair P/R/F with gold entities; with `type_labels` (tail entity label ->
    relation label) also the baseline that gives every candidate pair its type's label."""
    nlp = spacy.load(model)
    name = rel_name(nlp, model)
    rel = nlp.get_pipe(name)
    gold_docs = read(nlp, data, limit, min_entities=2)  # fewer entities: no candidate, no gold relation
    examples = list(gold_entity_docs(nlp, gold_docs, upto=name, batch_size=batch_size))
    preds, times = time_components(nlp, [eg.predicted for eg in examples], batch_size=batch_size, pipes=[name])
    scores = score_relations([Example(p, g) for p, g in zip(preds, gold_docs)], level="mention")
    baseline = None
    if type_labels:
        docs = []
        for eg in examples:
            inst = rel.candidates(eg.predicted)
            doc = eg.predicted.copy()
            doc._.medllm_rels = [
                {"head": list(inst.mentions[h]), "tail": list(inst.mentions[t]), "head_id": None, "tail_id": None,
                 "label": type_labels[inst.entities[et].label], "score": 1.0}
                for (eh, et), (h, t) in zip(inst.pairs, inst.evidence) if inst.entities[et].label in type_labels
            ]
            docs.append(doc)
        b = score_relations([Example(p, g) for p, g in zip(docs, gold_docs)], level="mention")
        baseline = _pct({k: b[f"medllm_rel_{k}"] for k in "prf"})
    n_gold: Dict[str, int] = defaultdict(int)
    for g in gold_docs:
        for r in get_relations(g):
            n_gold[r["label"]] += 1

    def micro_and_per_label(s: Mapping[str, object]) -> Dict[str, object]:
        return {
            "micro": _pct({k: s[f"medllm_rel_{k}"] for k in "prf"}),
            "per_label": {label: {**_pct(v), "gold": n_gold[label]} for label, v in s["medllm_rel_per_type"].items()},
        }

    # end to end, where the pipeline finds its own entities before the relation component
    end_to_end = None
    if any(assigns_entities(nlp, n) for n in nlp.pipe_names[: nlp.pipe_names.index(name)]):
        e2e, e2e_times = time_components(nlp, [g.text for g in gold_docs], batch_size=batch_size)
        examples_e2e = [Example(p, g) for p, g in zip(e2e, gold_docs)]
        ner = Scorer.score_spans(examples_e2e, "ents")
        end_to_end = {
            **micro_and_per_label(score_relations(examples_e2e, level="mention")),
            "ner": {k: percent(ner[f"ents_{k}"] or 0.0) for k in ("p", "r", "f")},
            "words_per_second": e2e_times.words_per_second,
        }
    return {
        "model": str(model), "data": str(data), "documents": len(gold_docs),
        **_thresholds(rel),
        **micro_and_per_label(scores),
        "rel_seconds": round(times.seconds[name], 2),
        "baseline_all_candidate_pairs": baseline,
        "end_to_end": end_to_end,
    }


def evaluate_relations(
    *, cid: Optional[str] = None, cid_data: str = "corpus/bc5cdr/test.spacy", ade: Optional[str] = None,
    ade_data: str = "corpus/ade/test.spacy", chia: Optional[str] = None, chia_data: str = "corpus/chia/test.spacy",
    limit: int = 0, progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, object]:
    """The CID, ADE and Chia evaluations of the pipelines given; a pipeline path that does
    not exist is skipped with a note. RETURNS {"cid", "ade", "chia", "notes", "peak_rss_mb"}."""
    results: Dict[str, object] = {"notes": []}
    runs: Iterable[Tuple[str, Optional[str], str, Callable]] = (
        ("cid", cid, cid_data, evaluate_cid),
        ("ade", ade, ade_data, lambda m, d, n: evaluate_mention_relations(m, d, n, ADE_TYPE_LABELS)),
        ("chia", chia, chia_data, evaluate_mention_relations),
    )
    for key, model, data, run in runs:
        if model is None:
            continue
        if not Path(model).exists():
            results["notes"].append(f"{key}: {model} not found, skipped")
            continue
        if progress is not None:
            progress(f"{key}: {model} on {data} ...")
        results[key] = run(model, data, limit)
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def markdown(results: Dict[str, object]) -> str:
    """The results as markdown tables."""
    lines: List[str] = []
    cid = results.get("cid")
    if cid:
        lines += ["| BC5CDR test CID (concept pairs) | P | R | F | predicted | gold |", "|---|---:|---:|---:|---:|---:|"]
        for setting in ("gold_entities", "end_to_end"):
            s = cid[setting]
            lines.append(f"| {setting.replace('_', ' ')} | {s['p']:.2f} | {s['r']:.2f} | {s['f']:.2f} | {s['predicted']} | {s['gold']} |")
        b = cid["baseline_same_sentence_gold_entities"]
        lines.append(f"| baseline: same-sentence co-occurrence (gold entities) | {b['p']:.2f} | {b['r']:.2f} | {b['f']:.2f} | {b['predicted']} | {b['gold']} |")
        if cid.get("ner_end_to_end"):
            n = cid["ner_end_to_end"]
            lines.append(f"| (NER of the same run: P {n['p']:.2f} R {n['r']:.2f} F {n['f']:.2f}) | | | | | |")
        lines.append("")
        share, adds = cid["rel_share_of_pipeline"], cid["rel_adds_to_rest"]
        speed = f"{cid['words_per_second']:,} words/s end to end" if cid["words_per_second"] is not None else "no words"
        lines.append(
            f"Time on {cid['documents']} abstracts (batches of {cid.get('batch_size', BATCH)}): " + ", ".join(f"{k} {v} s" for k, v in cid["seconds"].items())
            + (f"; medllm_rel is {100 * share:.1f}% of the pipeline" if share is not None else "")
            + (f", adds {100 * adds:.1f}% to the rest" if adds is not None else "")
            + f"; {speed}. Thresholds: {cid['thresholds']}, relative: {cid['relative_thresholds']}."
        )
        lines.append("")
    for key, title in (("ade", "ADE v2 test"), ("chia", "Chia test")):
        r = results.get(key)
        if not r:
            continue
        lines += [f"| {title} (gold entities) | P | R | F | gold |", "|---|---:|---:|---:|---:|"]
        for label, s in r["per_label"].items():
            lines.append(f"| {label} | {s['p']:.2f} | {s['r']:.2f} | {s['f']:.2f} | {s['gold']} |")
        m = r["micro"]
        lines.append(f"| **micro** | {m['p']:.2f} | {m['r']:.2f} | {m['f']:.2f} | |")
        if r.get("baseline_all_candidate_pairs"):
            b = r["baseline_all_candidate_pairs"]
            lines.append(f"| baseline: every candidate pair, label by type | {b['p']:.2f} | {b['r']:.2f} | {b['f']:.2f} | |")
        lines.append("")
        e2e = r.get("end_to_end")
        if e2e:
            lines += [f"| {title} (end to end: the pipeline's own entities) | P | R | F | gold |", "|---|---:|---:|---:|---:|"]
            for label, s in e2e["per_label"].items():
                lines.append(f"| {label} | {s['p']:.2f} | {s['r']:.2f} | {s['f']:.2f} | {s['gold']} |")
            m, n = e2e["micro"], e2e["ner"]
            lines.append(f"| **micro** | {m['p']:.2f} | {m['r']:.2f} | {m['f']:.2f} | |")
            speed = f"{e2e['words_per_second']:,} words/s" if e2e.get("words_per_second") is not None else "no words"
            lines += ["", f"NER of the same run: P {n['p']:.2f} R {n['r']:.2f} F {n['f']:.2f}; {speed} end to end.", ""]
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    mem = "n/a" if results.get("peak_rss_mb") is None else f"{results['peak_rss_mb']} MB"
    lines.append(f"\npeak RSS {mem}")
    return "\n".join(lines) + "\n"
