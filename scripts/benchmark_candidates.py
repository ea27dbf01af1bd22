"""Recall@k of the candidate generator on gold mentions, with load time, speed and memory.

Usage: python scripts/benchmark_candidates.py KB_DIR OUT_DIR NAME=GOLD.spacy [NAME=GOLD.spacy ...]

KB_DIR is the output of `medllm build-kb` (kb.msgpack + index/). Gold mentions with
id `NIL` are excluded; a mention whose id string holds alternatives (`D1|D2`) counts
as found when any of them is among the first k candidates, and a candidate counts when
it is a gold id or another id of the same concept (`spacy_medllm.kb.ids_match`: a 2015
supplementary record and the 2024 descriptor it became). "id in KB" counts a gold id
that is a concept's primary or alternative id.
"""
import resource
import sys
import time
from pathlib import Path

import srsly
from spacy.tokens import DocBin
from spacy.vocab import Vocab

from spacy_medllm.corpus.base import split_kb_id
from spacy_medllm.kb import CandidateGenerator, KnowledgeBase, ids_match

KS = (1, 5, 10, 30)


def main(kb_dir: str, out_dir: str, *datasets: str) -> None:
    t0 = time.perf_counter()
    kb = KnowledgeBase.from_disk(kb_dir)
    gen = CandidateGenerator.from_disk(Path(kb_dir) / "index", kb)
    kb.alias_index  # built lazily; part of what loading costs
    load_s = time.perf_counter() - t0
    results = {"kb": kb_dir, "concepts": len(kb), "load_s": round(load_s, 2), "datasets": {}}
    for spec in datasets:
        name, path = spec.split("=", 1)
        mentions = []
        for doc in DocBin().from_disk(path).get_docs(Vocab()):
            for span in doc.spans["mentions"] if "mentions" in doc.spans else doc.ents:
                ids = split_kb_id(span.kb_id_)
                if ids:
                    label = "Disease" if span.label_ in ("SpecificDisease", "DiseaseClass", "Modifier", "CompositeMention") else span.label_
                    mentions.append((span.text, label, set(ids)))
        t0 = time.perf_counter()
        cands = gen([m[0] for m in mentions], k=max(KS))
        seconds = time.perf_counter() - t0
        per_label = {}
        for label in sorted({m[1] for m in mentions}) + ["overall"]:
            sel = [(m, c) for m, c in zip(mentions, cands) if label == "overall" or m[1] == label]
            in_kb = sum(any(kb.resolve(i) is not None for i in m[2]) for m, _ in sel)
            per_label[label] = {
                "mentions": len(sel),
                "id_in_kb": round(100 * in_kb / len(sel), 2),
                **{f"recall@{k}": round(100 * sum(any(ids_match(kb, cid, m[2]) for cid, _ in c[:k]) for m, c in sel) / len(sel), 2) for k in KS},
            }
        results["datasets"][name] = {"path": path, "mentions_per_second": round(len(mentions) / seconds), "per_label": per_label}
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srsly.write_json(out / "candidates.json", results)
    lines = ["| data | label | mentions | id in KB | R@1 | R@5 | R@10 | R@30 | mentions/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in results["datasets"].items():
        for label, s in d["per_label"].items():
            speed = f"{d['mentions_per_second']:,}" if label == "overall" else ""
            lines.append(f"| {name} | {label} | {s['mentions']:,} | {s['id_in_kb']:.1f} | " + " | ".join(f"{s[f'recall@{k}']:.1f}" for k in KS) + f" | {speed} |")
    table = "\n".join(lines) + f"\n\nKB: {results['concepts']:,} concepts, loaded with its index in {results['load_s']} s; peak RSS {results['peak_rss_mb']} MB.\n"
    (out / "candidates.md").write_text(table, encoding="utf8")
    print(table)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
