"""Tune the per-label thresholds of a trained pipeline's `medllm_rel` on dev, in place.

Usage: python scripts/tune_relation_thresholds.py MODEL DEV.spacy [OUT.json]

The dev documents get their gold entities and ids (aligned to the pipeline's tokens);
the shared encoder runs on them (components that write entities or ids are skipped);
each relation label's threshold is the one that maximizes its F1 on dev, in the
scorer's units (concept pairs with ids for a concept-level component, mention pairs
otherwise). The thresholds are written to MODEL/<component>/cfg (only that file
changes); OUT.json (optional) receives the per-label report.
"""
import sys
from pathlib import Path

import spacy
import srsly
from spacy.tokens import DocBin

from spacy_medllm.relations import RelationExtractor, gold_entity_docs


def main(model: str, dev: str, out: str = "") -> None:
    nlp = spacy.load(model)
    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, RelationExtractor)]
    if not names:
        sys.exit(f"{model}: no medllm_rel component")
    gold_docs = list(DocBin().from_disk(dev).get_docs(nlp.vocab))
    report = {}
    for name in names:
        rel = nlp.get_pipe(name)
        before = dict(rel.cfg["thresholds"])
        report[name] = rel.tune_thresholds(gold_entity_docs(nlp, gold_docs, upto=name))
        srsly.write_json(Path(model) / name / "cfg", rel.cfg)
        for label, r in report[name].items():
            print(f"{name} {label}: threshold {before.get(label, rel.cfg['threshold'])} -> {r['threshold']} (dev F1 {100 * r['f']:.2f}, {r['gold']} gold)")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(out, {"model": model, "dev": dev, "thresholds": report})


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
