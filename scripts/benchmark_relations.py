"""Relation extraction benchmark: BC5CDR CID, ADE v2, Chia, and the component's time share.

Usage:
    python scripts/benchmark_relations.py OUT_DIR --cid MODEL --cid-data TEST.spacy
        [--ade MODEL --ade-data TEST.spacy] [--chia MODEL --chia-data TEST.spacy] [--limit N]

BC5CDR CID (MODEL: transformer + ner + medllm_linker + medllm_rel), at concept-pair level
per document, predicted (document, chemical id, disease id) against the gold CID pairs:
- gold entities: the gold mentions with their gold ids are given to the relation
  component (NER and linker skipped); a composite mention `D1|D2` belongs to both
  concepts; pairs with a `NIL` side are never counted (gold CID pairs all have ids);
- end to end: raw text through the pipeline's NER, linker and relation component (the
  shared task's protocol); only predicted pairs whose two entities were linked count;
- time: seconds per component over the test abstracts (end to end, batches of 32), the
  relation component's share of the pipeline and what it adds to the rest.
ADE (drug -> effect `ADE`, drug -> dose `DOSE`) and Chia (per label): mention-pair
P/R/F by character offsets on the held-out split, with gold entities. A model path that
does not exist is skipped with a note (Chia is optional). Writes OUT_DIR/relations.json
and OUT_DIR/relations.md.
"""
import resource
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import spacy
import srsly
import typer
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from spacy_medllm.corpus.base import get_relations, split_kb_id
from spacy_medllm.relations import RelationExtractor, concept_keys, concept_pairs, gold_entity_docs, score_relations
from spacy_medllm.relations.scorer import prf

BATCH = 32
ADE_TYPE_LABELS = {"Effect": "ADE", "Dose": "DOSE"}


def rel_name(nlp: Language) -> str:
    return next(name for name, pipe in nlp.pipeline if isinstance(pipe, RelationExtractor))


def read(nlp: Language, path: str, limit: int, min_entities: int = 0) -> List[Doc]:
    docs = [d for d in DocBin().from_disk(path).get_docs(nlp.vocab) if len(d.ents) >= min_entities]
    return docs[:limit] if limit else docs


def pct(scores: Dict[str, float]) -> Dict[str, float]:
    return {k: round(100 * v, 2) for k, v in scores.items()}


def doc_key(doc: Doc, i: int) -> str:
    return str(doc._.medllm_doc_id) if doc._.medllm_doc_id else str(i)


def cid_counts(pred_docs: List[Doc], gold_docs: List[Doc]) -> Dict[str, float]:
    pred, gold = set(), set()
    for i, (p, g) in enumerate(zip(pred_docs, gold_docs)):
        key = doc_key(g, i)
        pred.update((key, h, t) for _, h, t in concept_pairs(p, "CID"))
        gold.update((key, h, t) for _, h, t in concept_keys(get_relations(g), "CID"))
    return {**pct(prf(len(pred & gold), len(pred), len(gold))), "predicted": len(pred), "gold": len(gold)}


def benchmark_cid(model: str, data: str, limit: int) -> Dict[str, object]:
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - t0
    name = rel_name(nlp)
    gold_docs = read(nlp, data, limit)
    # (a) gold entities and ids
    examples = list(gold_entity_docs(nlp, gold_docs, upto=name, batch_size=BATCH))
    rel = nlp.get_pipe(name)
    pred = list(rel.pipe([eg.predicted for eg in examples], batch_size=BATCH))
    # candidate recall: gold pairs whose two concepts are among the (aligned) gold entities
    ceiling = 0
    for eg, g in zip(examples, gold_docs):
        ids = defaultdict(set)
        for e in eg.predicted.ents:
            ids[e.label_].update(split_kb_id(e.kb_id_))
        ceiling += sum(h in ids["Chemical"] and t in ids["Disease"] for _, h, t in concept_keys(get_relations(g), "CID"))
    gold_entities = cid_counts(pred, gold_docs)
    # baseline: every candidate concept pair with two mentions in one sentence
    cooccur = []
    for eg in examples:
        inst = rel.candidates(eg.predicted)
        doc = eg.predicted.copy()
        doc._.medllm_rels = [
            {"head": None, "tail": None, "head_id": inst.entities[h].concept_id, "tail_id": inst.entities[t].concept_id, "label": "CID", "score": 1.0}
            for (h, t), s in zip(inst.pairs, inst.sentence_gaps) if s == 0
        ]
        cooccur.append(doc)
    gold_entities["gold_pairs_with_both_concepts_among_entities"] = ceiling
    # (b) end to end, timed per component
    seconds: Dict[str, float] = defaultdict(float)
    e2e: List[Doc] = []
    n_words = 0
    for start in range(0, len(gold_docs), BATCH):
        docs = [nlp.make_doc(g.text) for g in gold_docs[start : start + BATCH]]
        n_words += sum(len(d) for d in docs)
        for pname, proc in nlp.pipeline:
            t = time.perf_counter()
            docs = list(proc.pipe(docs, batch_size=BATCH))
            seconds[pname] += time.perf_counter() - t
        e2e.extend(docs)
    total = sum(seconds.values())
    # the NER of the same run (a pipeline trained with the relation head fine-tunes the
    # shared encoder the NER reads)
    ner = Scorer.score_spans([Example(p, g) for p, g in zip(e2e, gold_docs)], "ents")
    return {
        "model": model, "data": data, "documents": len(gold_docs), "load_s": round(load_s, 2),
        "thresholds": {label: rel.threshold_of(label) for label in rel.labels},
        "relative_thresholds": {label: rel.relative_threshold_of(label) for label in rel.labels},
        "gold_entities": gold_entities,
        "end_to_end": cid_counts(e2e, gold_docs),
        "ner_end_to_end": {k: round(100 * float(ner[f"ents_{k}"] or 0.0), 2) for k in ("p", "r", "f")},
        "baseline_same_sentence_gold_entities": cid_counts(cooccur, gold_docs),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "words_per_second": round(n_words / total) if total else None,
        "rel_share_of_pipeline": round(seconds[name] / total, 4) if total else None,
        "rel_adds_to_rest": round(seconds[name] / (total - seconds[name]), 4) if total > seconds[name] else None,
    }


def benchmark_mentions(model: str, data: str, limit: int, type_labels: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Mention-pair P/R/F with gold entities; with `type_labels` (tail entity label ->
    relation label) also the baseline that gives every candidate pair its type's label."""
    nlp = spacy.load(model)
    name = rel_name(nlp)
    rel = nlp.get_pipe(name)
    gold_docs = read(nlp, data, limit, min_entities=2)  # fewer entities: no candidate, no gold relation
    examples = list(gold_entity_docs(nlp, gold_docs, upto=name, batch_size=BATCH))
    t = time.perf_counter()
    preds = list(rel.pipe([eg.predicted for eg in examples], batch_size=BATCH))
    rel_s = time.perf_counter() - t
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
        baseline = pct({k: b[f"medllm_rel_{k}"] or 0.0 for k in "prf"})
    n_gold = defaultdict(int)
    for g in gold_docs:
        for r in get_relations(g):
            n_gold[r["label"]] += 1
    return {
        "model": model, "data": data, "documents": len(gold_docs),
        "thresholds": {label: rel.threshold_of(label) for label in rel.labels},
        "relative_thresholds": {label: rel.relative_threshold_of(label) for label in rel.labels},
        "micro": pct({k: scores[f"medllm_rel_{k}"] or 0.0 for k in "prf"}),
        "per_label": {label: {**pct(s), "gold": n_gold[label]} for label, s in scores["medllm_rel_per_type"].items()},
        "rel_seconds": round(rel_s, 2),
        "baseline_all_candidate_pairs": baseline,
    }


def markdown(results: Dict[str, object]) -> str:
    lines = []
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
        lines.append(f"Time on {cid['documents']} abstracts (batches of {BATCH}): " + ", ".join(f"{k} {v} s" for k, v in cid["seconds"].items())
                     + f"; medllm_rel is {100 * cid['rel_share_of_pipeline']:.1f}% of the pipeline, adds {100 * cid['rel_adds_to_rest']:.1f}% to the rest; "
                     f"{cid['words_per_second']:,} words/s end to end. Thresholds: {cid['thresholds']}, relative: {cid['relative_thresholds']}.")
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
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    lines.append(f"\npeak RSS {results['peak_rss_mb']} MB")
    return "\n".join(lines) + "\n"


def main(
    out_dir: Path = typer.Argument(..., help="folder for relations.json and relations.md"),
    cid: Optional[str] = typer.Option(None, help="BC5CDR CID pipeline (transformer + ner + medllm_linker + medllm_rel)"),
    cid_data: str = typer.Option("corpus/bc5cdr/test.spacy", help="BC5CDR gold .spacy file"),
    ade: Optional[str] = typer.Option(None, help="ADE relation pipeline"),
    ade_data: str = typer.Option("corpus/ade/test.spacy", help="ADE gold .spacy file"),
    chia: Optional[str] = typer.Option(None, help="Chia relation pipeline"),
    chia_data: str = typer.Option("corpus/chia/test.spacy", help="Chia gold .spacy file"),
    limit: int = typer.Option(0, help="at most this many documents per data set (0: all)"),
) -> None:
    results: Dict[str, object] = {"notes": []}
    runs = (
        ("cid", cid, cid_data, benchmark_cid),
        ("ade", ade, ade_data, lambda m, d, n: benchmark_mentions(m, d, n, ADE_TYPE_LABELS)),
        ("chia", chia, chia_data, benchmark_mentions),
    )
    for key, model, data, run in runs:
        if model is None:
            continue
        if not Path(model).exists():
            results["notes"].append(f"{key}: {model} not found, skipped")
            continue
        typer.echo(f"{key}: {model} on {data} ...", err=True)
        results[key] = run(model, data, limit)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    srsly.write_json(out_dir / "relations.json", results)
    table = markdown(results)
    (out_dir / "relations.md").write_text(table, encoding="utf8")
    typer.echo(table)


if __name__ == "__main__":
    typer.run(main)
