"""Linking accuracy on gold mentions, end to end, and the linker's cost in the pipeline.

Usage: python scripts/benchmark_linker.py MODEL OUT_DIR NAME=GOLD.spacy [NAME=GOLD.spacy ...] [--peer CACHE]

For each data set:
- gold mentions: the gold entities are given to the linker (the NER is skipped);
  accuracy@1 of `ent.kb_id_` (an abstention, NIL, counts as wrong) and recall@k of
  `Span._.kb_candidates` (recall@1: the best candidate, answering always), per label,
  gold `NIL` excluded, any id of a `D1|D2` alternative counts as right;
- end to end: the whole pipeline from raw text; predicted (span, label, id) against the
  gold (span, label, id) triples: precision, recall, F1;
- time: seconds spent in each component over the texts, and the linker's share.
- the peer (with `--peer corpus/kb_scispacy`, the index cache that
  scripts/benchmark_scispacy_peer.py builds over the same KB): scispaCy's
  `CandidateGenerator` ranked as its `EntityLinker` ranks, on the same gold mentions in
  the same run, given the mention text and, as scispaCy's linker does with
  `resolve_abbreviations`, the long form where the document defines one.
Also: pipeline load time and peak memory (RSS) of this process (measured before the
peer's index is loaded).
"""
import importlib.util
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import spacy
import srsly
from spacy.tokens import DocBin

from spacy_medllm.corpus.base import NIL, split_kb_id

KS = (1, 5, 10, 30)
NCBI_TYPES = {"SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention"}


def load_peer(cache: str, kb):
    """scispaCy's generator over the cached index and the linker's own KB, ranked as its linker ranks."""
    spec = importlib.util.spec_from_file_location("benchmark_scispacy_peer", Path(__file__).parent / "benchmark_scispacy_peer.py")
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    from scispacy.linking_utils import Entity

    entities = [Entity(c.concept_id, c.canonical_name, list(c.aliases), list(c.types), c.definition) for c in kb]
    gen = peer.load_generator(Path(cache), entities)
    return lambda texts: [peer.rank(c, gen.kb) for c in gen(list(texts), peer.LINKER_K)]


def main(model: str, out_dir: str, *datasets: str) -> None:
    peer_cache = None
    if "--peer" in datasets:
        i = datasets.index("--peer")
        peer_cache = datasets[i + 1]
        datasets = datasets[:i] + datasets[i + 2:]
    t0 = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - t0
    linker_name = next(name for name, pipe in nlp.pipeline if pipe.__class__.__name__ == "MedLinker")
    linker = nlp.get_pipe(linker_name)
    results = {"model": model, "load_s": round(load_s, 2), "datasets": {}}
    peer_queries = {}
    for spec in datasets:
        name, path = spec.split("=", 1)
        gold_docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
        # gold mentions
        hits = defaultdict(lambda: defaultdict(int))
        queries = []  # (label, gold ids, mention text, text the linker linked)
        for gold in gold_docs:
            doc = nlp.make_doc(gold.text)
            ents, ids = [], []
            for ent in gold.ents:
                span = doc.char_span(ent.start_char, ent.end_char, label="Disease" if ent.label_ in NCBI_TYPES else ent.label_)
                gids = split_kb_id(ent.kb_id_)
                if not gids:
                    continue
                for label in (span.label_ if span is not None else ent.label_, "overall"):
                    hits[label]["mentions"] += 1
                if span is None:
                    continue  # the tokenizer cannot represent it: counted as a miss
                ents.append(span)
                ids.append(set(gids))
            doc.ents = ents
            for pname, proc in nlp.pipeline:
                if pname != "ner":
                    doc = proc(doc)
            linked_text = {(e.start, e.end): text for e, text, _ in linker._mentions(doc)}
            for ent, gids in zip(doc.ents, ids):
                queries.append((ent.label_, gids, ent.text, linked_text.get((ent.start, ent.end), ent.text)))
                for label in (ent.label_, "overall"):
                    hits[label]["acc@1"] += ent.kb_id_ in gids
                    for k in KS:
                        hits[label][f"recall@{k}"] += any(cid in gids for cid, _ in (ent._.kb_candidates or [])[:k])
        peer_queries[name] = (queries, {label: h["mentions"] for label, h in hits.items()})
        gold_scores = {
            label: {"mentions": h["mentions"], **{m: round(100 * h[m] / h["mentions"], 2) for m in ["acc@1"] + [f"recall@{k}" for k in KS]}}
            for label, h in sorted(hits.items())
        }
        # end to end, timed per component
        seconds = defaultdict(float)
        tp = n_pred = n_gold = 0
        for gold in gold_docs:
            doc = nlp.make_doc(gold.text)
            for pname, proc in nlp.pipeline:
                t = time.perf_counter()
                doc = proc(doc)
                seconds[pname] += time.perf_counter() - t
            pred = {(e.start_char, e.end_char, e.label_, e.kb_id_) for e in doc.ents if e.kb_id_ not in ("", NIL)}
            want = [(e.start_char, e.end_char, "Disease" if e.label_ in NCBI_TYPES else e.label_, set(split_kb_id(e.kb_id_))) for e in gold.ents if split_kb_id(e.kb_id_)]
            n_pred += len(pred)
            n_gold += len(want)
            tp += sum(any((s, e, l, cid) in pred for cid in ids) for s, e, l, ids in want)
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        total = sum(seconds.values())
        results["datasets"][name] = {
            "gold_mentions": gold_scores,
            "end_to_end": {"p": round(100 * p, 2), "r": round(100 * r, 2), "f": round(100 * (2 * p * r / (p + r) if p + r else 0.0), 2)},
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "linker_share_of_pipeline": round(seconds[linker_name] / total, 4) if total else None,
            "linker_overhead_vs_rest": round(seconds[linker_name] / (total - seconds[linker_name]), 4) if total else None,
        }
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if peer_cache is not None:
        peer = load_peer(peer_cache, linker.kb)
        for name, (queries, totals) in peer_queries.items():
            scores = {}
            for variant, idx in (("mention text", 2), ("long form resolved", 3)):
                ranked = peer([q[idx] for q in queries])
                h = defaultdict(lambda: defaultdict(int))
                for (label, gids, *_), r in zip(queries, ranked):
                    for lab in (label, "overall"):
                        h[lab]["acc@1"] += bool(r) and r[0][0] in gids
                        for k in KS:
                            h[lab][f"recall@{k}"] += any(cid in gids for cid, _ in r[:k])
                scores[variant] = {lab: {m: round(100 * v / totals[lab], 2) for m, v in hh.items()} for lab, hh in sorted(h.items())}
            results["datasets"][name]["peer_scispacy"] = scores
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srsly.write_json(out / "linker.json", results)
    table = markdown(results)
    (out / "linker.md").write_text(table, encoding="utf8")
    print(table)


def markdown(results: dict) -> str:
    """The results as markdown tables."""
    # acc@1: the id the pipeline sets (NIL, the linker abstaining, counts as wrong);
    # R@1: the best-ranked candidate, always answering, as the peer's ranking does
    lines = ["| data | label | mentions | acc@1 | R@1 | R@5 | R@10 | R@30 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, d in results["datasets"].items():
        for label, s in d["gold_mentions"].items():
            lines.append(f"| {name} | {label} | {s['mentions']:,} | {s['acc@1']:.1f} | {s['recall@1']:.1f} | {s['recall@5']:.1f} | {s['recall@10']:.1f} | {s['recall@30']:.1f} |")
    for name, d in results["datasets"].items():
        for variant, per_label in d.get("peer_scispacy", {}).items():
            for label, sc in per_label.items():
                lines.append(f"| {name} (scispaCy peer, {variant}) | {label} | {d['gold_mentions'][label]['mentions']:,} | {sc['acc@1']:.1f} | {sc['recall@1']:.1f} | {sc['recall@5']:.1f} | {sc['recall@10']:.1f} | {sc['recall@30']:.1f} |")
    lines.append("")
    for name, d in results["datasets"].items():
        e = d["end_to_end"]
        lines.append(f"{name} end to end (span, label, id): P {e['p']:.1f} R {e['r']:.1f} F {e['f']:.1f}; linker adds {100 * d['linker_overhead_vs_rest']:.1f}% to the rest of the pipeline's time")
    lines.append(f"\nload {results['load_s']} s, peak RSS {results['peak_rss_mb']} MB")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
