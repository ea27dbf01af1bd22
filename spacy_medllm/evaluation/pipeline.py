"""Every component of one pipeline, scored and timed on the same texts in one run.

`evaluate_pipeline(model, data)` loads the pipeline once and, for each data set, runs it
end to end over the raw texts (timed per component, `metrics.time_components`), then scores
what the pipeline has:
- `ner`: entity P/R/F, overall and per label (spaCy's span scorer, exact offsets), on a
  data set whose gold entity labels are the NER's (NCBI-disease's types read as Disease),
  and the label confusion of its entities (`ner.label_confusion`: gold label against
  predicted label, missed and spurious entities in a "none" column and row);
- `medllm_linker`: end to end (span, label, id) P/R/F, and accuracy@1 / recall@k on the
  gold mentions (`linker.link_gold_mentions`: a second pass of the linker alone);
- `medllm_rel`: document-level concept-pair P/R/F per relation label, end to end and with
  gold entities (`relations.concept_pair_counts`), and in `relations_pr` the precision-
  recall curve of the same pairs over the thresholds, with its average precision and the
  component's own threshold (`relations.precision_recall_curve`, from the probabilities of
  every candidate: the component's thresholds and predictions are left as they are);
- `textcat` / `textcat_multilabel`: per category P/R/F at the component's threshold and
  ROC AUC, on the documents that carry that category;
plus the pipeline's load time, size on disk, words per second end to end, and the peak
memory of the process (`evaluate_isolated` runs each pipeline in its own process).
"""
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import spacy
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import DocBin
from spacy.training import Example

from ..linker.pipe import MedLinker
from ..relations import RelationExtractor, gold_entity_docs
from .candidates import NCBI_DISEASE_LABELS, check_datasets
from .linker import end_to_end_links, link_gold_mentions
from .metrics import KS, peak_rss_mb, percent, run_in_fresh_process, time_components
from .ner import label_confusion
from .relations import candidate_pair_scores, concept_pair_counts, pipeline_kb, precision_recall_curve

BATCH = 32
TEXTCAT_FACTORIES = ("textcat", "textcat_multilabel")


def folder_mb(path: Union[str, Path]) -> float:
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 1)


def _ner(preds, golds) -> Dict[str, object]:
    s = Scorer.score_spans([Example(p, g) for p, g in zip(preds, golds)], "ents")
    return {
        "p": percent(s["ents_p"] or 0.0), "r": percent(s["ents_r"] or 0.0), "f": percent(s["ents_f"] or 0.0),
        "per_label": {k: {m: percent(v[m]) for m in "prf"} for k, v in (s["ents_per_type"] or {}).items()},
        "confusion": label_confusion(preds, golds),
    }


def _relations_pr(rel: RelationExtractor, labels: Sequence[str], settings: Dict[str, list], golds, kb, batch_size: int) -> Dict[str, object]:
    """Per label: the component's thresholds and, per setting (its predicted Docs), the
    precision-recall curve of its concept pairs."""
    scores = {setting: candidate_pair_scores(rel, docs, labels, batch_size=batch_size) for setting, docs in settings.items()}
    return {
        label: {
            "threshold": rel.threshold_of(label), "relative_threshold": rel.relative_threshold_of(label),
            **{setting: precision_recall_curve(s[label], golds, label, kb, threshold=rel.threshold_of(label)) for setting, s in scores.items()},
        }
        for label in labels
    }


def _cats(nlp: Language, name: str, preds, golds) -> Optional[Dict[str, object]]:
    pipe = nlp.get_pipe(name)
    labels = list(pipe.labels)
    examples = [Example(p, g) for p, g in zip(preds, golds) if any(label in g.cats for label in labels)]
    if not examples:
        return None
    multi = nlp.get_pipe_meta(name).factory == "textcat_multilabel"
    threshold = float(getattr(pipe, "cfg", {}).get("threshold", 0.5) or 0.5)
    s = Scorer.score_cats(examples, "cats", labels=labels, multi_label=multi, threshold=threshold)
    return {
        "documents": len(examples), "threshold": threshold,
        "per_label": {k: {m: percent(v[m]) for m in "prf"} for k, v in (s["cats_f_per_type"] or {}).items()},
        "macro_f": percent(s["cats_macro_f"] or 0.0), "macro_auc": percent(s["cats_macro_auc"] or 0.0),
    }


def evaluate_pipeline(
    model: Union[str, Path], datasets: Sequence[Tuple[str, Union[str, Path]]], *, batch_size: int = BATCH, ks: Sequence[int] = KS,
) -> Dict[str, object]:
    """Score and time every component of the pipeline `model` on each (name, .spacy path)."""
    check_datasets(datasets)
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - t0
    kb = pipeline_kb(nlp)
    linkers = [n for n, p in nlp.pipeline if isinstance(p, MedLinker)]
    rels = [n for n, p in nlp.pipeline if isinstance(p, RelationExtractor)]
    textcats = [n for n in nlp.pipe_names if nlp.get_pipe_meta(n).factory in TEXTCAT_FACTORIES]
    results: Dict[str, object] = {
        "model": str(model), "pipeline": list(nlp.pipe_names), "load_s": round(load_s, 2),
        "size_mb": folder_mb(model) if Path(model).is_dir() else None,
        "quantized": nlp.meta.get("quantized"), "datasets": {},
    }
    for ds, path in datasets:
        golds = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        preds, times = time_components(nlp, [g.text for g in golds], batch_size=batch_size, warmup=min(8, len(golds)))
        out: Dict[str, object] = {
            "path": str(path), "documents": len(golds), "words": times.words,
            "words_per_second": times.words_per_second, "seconds": times.to_dict()["seconds"],
        }
        # entities are scored where the gold labels are the NER's (not the ADE corpus's Drug / Effect)
        gold_labels = {NCBI_DISEASE_LABELS.get(e.label_, e.label_) for g in golds for e in g.ents}
        ner_labels = set(nlp.get_pipe("ner").labels) if "ner" in nlp.pipe_names else set()
        score_ents = bool(gold_labels) and gold_labels <= ner_labels
        if score_ents:
            out["ner"] = _ner(preds, golds)
        if linkers and score_ents:
            name = linkers[0]
            e2e = end_to_end_links(preds, golds, kb, label_map=NCBI_DISEASE_LABELS)
            hits, _, _ = link_gold_mentions(nlp, name, golds, ks=ks, batch_size=batch_size)
            out["linker"] = {"end_to_end": {**e2e["overall"], "per_label": e2e["per_label"]}, "gold_mentions": hits.scores()}
        if rels:
            name = rels[0]
            rel = nlp.get_pipe(name)
            gold_rels = {r["label"] for g in golds for r in (g._.medllm_rels or [])}
            labels = [label for label in rel.labels if label in gold_rels]
            if labels:
                examples = list(gold_entity_docs(nlp, golds, upto=name, batch_size=batch_size))
                with_gold = list(rel.pipe([eg.predicted for eg in examples], batch_size=batch_size))
                out["relations"] = {
                    label: {
                        "end_to_end": concept_pair_counts(preds, golds, label, kb),
                        "gold_entities": concept_pair_counts(with_gold, golds, label, kb),
                    }
                    for label in labels
                }
                out["relations_pr"] = _relations_pr(rel, labels, {"end_to_end": preds, "gold_entities": with_gold}, golds, kb, batch_size)
        for name in textcats:
            cats = _cats(nlp, name, preds, golds)
            if cats is not None:
                out.setdefault("textcat", {})[name] = cats
        results["datasets"][ds] = out
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def evaluate_isolated(model: Union[str, Path], datasets: Sequence[Tuple[str, Union[str, Path]]], **kwargs) -> Dict[str, object]:
    """`evaluate_pipeline` in a fresh process, so that its peak memory is its own."""
    return run_in_fresh_process(evaluate_pipeline, str(model), list(datasets), **kwargs)


def _f(x) -> str:
    return "" if x is None else f"{x:.2f}"


def markdown(results: Dict[str, Dict[str, object]]) -> str:
    """One table: a row per (pipeline, data set), a column per task; then, per (pipeline,
    data set), the NER's label confusion and the relations' average precision."""
    rows = [
        "| pipeline | data | NER F | link acc@1 (gold) | link F (e2e) | relation F (gold ents) | relation F (e2e) | textcat F / AUC | words/s | load s | peak RSS MB | size MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for ds, d in res["datasets"].items():
            link = d.get("linker") or {}
            rel = next(iter((d.get("relations") or {}).items()), None)
            cat = next(iter((d.get("textcat") or {}).values()), None)
            cat_label = next(iter(cat["per_label"].values()), {}) if cat else {}
            rows.append(
                f"| {name} | {ds} | {_f((d.get('ner') or {}).get('f'))} "
                f"| {_f(link['gold_mentions']['overall']['acc@1']) if link else ''} "
                f"| {_f(link['end_to_end']['f']) if link else ''} "
                f"| {(rel[0] + ' ' + _f(rel[1]['gold_entities']['f'])) if rel else ''} "
                f"| {_f(rel[1]['end_to_end']['f']) if rel else ''} "
                f"| {(_f(cat_label.get('f')) + ' / ' + _f(cat['macro_auc'])) if cat else ''} "
                f"| {d['words_per_second']:,} | {res['load_s']} | {res['peak_rss_mb']} | {res['size_mb']} |"
            )
    for name, res in results.items():
        for ds, d in res["datasets"].items():
            confusion = (d.get("ner") or {}).get("confusion")
            if confusion:
                labels, overlaps = confusion["labels"], confusion["partial_overlaps"]
                rows += [
                    "", f"NER label confusion, {name} on {ds} (rows: gold, columns: predicted; none: missed or spurious; "
                    f"{overlaps['pairs']} missed and spurious pairs overlap, {overlaps['same_label']} of them with the same label):", "",
                    "| gold \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels),
                ]
                rows += [f"| {label} | " + " | ".join(str(n) for n in row) + " |" for label, row in zip(labels, confusion["matrix"])]
            for label, pr in (d.get("relations_pr") or {}).items():
                rows += ["", (
                    f"{label} relations, {name} on {ds}: average precision {_f(pr['gold_entities']['average_precision'])} with gold entities, "
                    f"{_f(pr['end_to_end']['average_precision'])} end to end (threshold {pr['threshold']:.4g}"
                    + (f", relative {pr['relative_threshold']:.4g}" if pr["relative_threshold"] is not None else "") + ")."
                )]
    return "\n".join(rows) + "\n"
