"""Accuracy and speed of NER pipelines on gold `.spacy` files, measured in one run.

`evaluate_ner` runs one pipeline over the texts of each data set once, each component
timed on the same batches (`metrics.time_components`): words per second (tokens of the
pipeline's tokenizer, as spaCy counts them) and seconds per component. The predicted
Docs of that run are scored against the gold ones with spaCy's span scorer (exact
matches, per label and overall; the scorer of `spacy evaluate` and of training, so the
numbers compare with both). Each pipeline is measured in its own process
(`run_isolated`), so the peak resident memory reported is that of loading that pipeline
and annotating those texts, nothing else.

`label_confusion` counts which label the predicted entities give the gold ones (an
entity-level confusion matrix with a "none" row and column for spurious and missed
entities), for `medllm evaluate-pipeline`.
"""
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import spacy
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from .metrics import peak_rss_mb, percent, run_in_fresh_process, time_components

NONE = "none"  # the confusion matrix's row of spurious entities and column of missed ones


def _prf(scores: Dict[str, float]) -> Dict[str, float]:
    return {k: percent(scores[k] or 0.0) for k in ("p", "r", "f")}


def evaluate_ner(
    model: str,
    datasets: Sequence[Tuple[str, str]],
    *,
    labels: Optional[Dict[str, Sequence[str]]] = None,
    batch_size: int = 32,
    warmup_docs: int = 8,
) -> Dict[str, object]:
    """Score and time the pipeline `model` on each (name, path to .spacy) data set.

    labels (Dict[str, Sequence[str]]): per data set, the labels to score (predictions of
        other labels are dropped first, e.g. only "Disease" on NCBI-disease).
    batch_size (int): batch size, the same for every pipeline compared (a CNN
        pipeline's own default of 1000 documents takes ~9 GB with BC5CDR abstracts).
    warmup_docs (int): documents run once, untimed, before the timed run.
    RETURNS (dict): {"model", "pipeline", "batch_size", "load_s", "peak_rss_mb",
        "datasets": {name: {"path", "docs", "words", "seconds", "words_per_second",
        "seconds_per_component", "overall", "per_type"}}}.
    """
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - t0
    out: Dict[str, object] = {"model": str(model), "pipeline": list(nlp.pipe_names), "batch_size": batch_size, "load_s": round(load_s, 2), "datasets": {}}
    for name, path in datasets:
        refs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        preds, times = time_components(nlp, [d.text for d in refs], batch_size=batch_size, warmup=warmup_docs)
        keep = set(labels[name]) if labels and name in labels else None
        examples = []
        for pred, ref in zip(preds, refs):
            if keep is not None:
                pred.ents = [e for e in pred.ents if e.label_ in keep]
                ref.ents = [e for e in ref.ents if e.label_ in keep]
            examples.append(Example(pred, ref))
        scores = Scorer.score_spans(examples, "ents")
        per_type = {label: _prf(s) for label, s in sorted((scores.get("ents_per_type") or {}).items())}
        out["datasets"][name] = {
            "path": str(path),
            "docs": len(refs),
            "words": times.words,
            "seconds": round(times.total_s, 2),
            "words_per_second": times.words_per_second,
            "seconds_per_component": times.to_dict()["seconds"],
            "overall": {k: percent(scores[f"ents_{k}"] or 0.0) for k in ("p", "r", "f")},
            "per_type": per_type,
        }
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def label_confusion(preds: Iterable[Doc], golds: Iterable[Doc]) -> Dict[str, object]:
    """The entity-level label confusion of predicted against gold entities (`doc.ents`).

    A predicted entity with the character offsets of a gold one is matched to it, with its
    label or another (row: the gold label, column: the predicted one); a gold entity that
    no predicted entity matches counts in column "none" (missed), a predicted entity that
    matches no gold one in row "none" (spurious). On the same tokens, the diagonal holds
    the true positives of spaCy's span scorer and the other cells its errors, so the matrix
    gives the NER's P/R/F. A missed and a spurious entity that overlap are also counted as
    a pair in `partial_overlaps` (a boundary error rather than two unrelated ones), in
    total and where the labels agree.
    RETURNS (Dict[str, object]): {"labels": the labels (sorted) then "none", "matrix":
        counts, one row per gold label, one column per predicted label, "partial_overlaps":
        {"pairs", "same_label"}}.
    """
    counts: Dict[Tuple[str, str], int] = {}
    pairs = same_label = 0
    for pred, gold in zip(preds, golds):
        predicted = {(e.start_char, e.end_char): e.label_ for e in pred.ents}
        expected = {(e.start_char, e.end_char): e.label_ for e in gold.ents}
        for key, label in expected.items():
            cell = (label, predicted.get(key, NONE))
            counts[cell] = counts.get(cell, 0) + 1
        spurious = [(key, label) for key, label in predicted.items() if key not in expected]
        for key, label in spurious:
            counts[(NONE, label)] = counts.get((NONE, label), 0) + 1
        missed = [(key, label) for key, label in expected.items() if key not in predicted]
        for (g_start, g_end), g_label in missed:
            for (p_start, p_end), p_label in spurious:
                if p_start < g_end and g_start < p_end:
                    pairs += 1
                    same_label += p_label == g_label
    labels = sorted({label for cell in counts for label in cell} - {NONE}) + [NONE]
    return {
        "labels": labels,
        "matrix": [[counts.get((g, p), 0) for p in labels] for g in labels],
        "partial_overlaps": {"pairs": pairs, "same_label": same_label},
    }


def run_isolated(model: str, datasets: Sequence[Tuple[str, str]], **kwargs) -> Dict[str, object]:
    """`evaluate_ner` in a fresh process, so its peak memory is its own."""
    return run_in_fresh_process(evaluate_ner, model, datasets, **kwargs)


def markdown_table(results: Dict[str, Dict[str, object]]) -> str:
    """One row per (pipeline, data set, label): P / R / F, words per second, peak memory."""
    lines = [
        "| pipeline | data | label | P | R | F | words/s | peak RSS (MB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        for ds, d in res["datasets"].items():
            rows: List[Tuple[str, Dict[str, float]]] = [("overall", d["overall"])] + list(d["per_type"].items())
            for label, s in rows:
                speed = f"{d['words_per_second']:,}" if label == "overall" and d["words_per_second"] is not None else ""
                mem = ("n/a" if res["peak_rss_mb"] is None else f"{res['peak_rss_mb']:,}") if label == "overall" else ""
                lines.append(f"| {name} | {ds} | {label} | {s['p']:.2f} | {s['r']:.2f} | {s['f']:.2f} | {speed} | {mem} |")
    return "\n".join(lines) + "\n"
