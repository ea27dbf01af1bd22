"""Tune the per-label thresholds of a trained pipeline's `medllm_rel` on dev, in place.

Usage: python scripts/tune_relation_thresholds.py MODEL DEV.spacy [OUT.json] [--or OTHER_MODEL] [--relative]
       python scripts/tune_relation_thresholds.py MODEL --from SOURCE_MODEL

The dev documents get their gold entities and ids (aligned to the pipeline's tokens);
the shared encoder runs on them (components that write entities or ids are skipped);
each relation label's threshold is the one that maximizes its F1 on dev, in the
scorer's units (concept pairs with ids for a concept-level component, mention pairs
otherwise). The thresholds are written to MODEL/<component>/cfg (only that file
changes); OUT.json (optional) receives the per-label report.

With `--or OTHER_MODEL` (e.g. `model-last` beside `model-best`) both are tuned and the one
with the higher tuned dev F1 (averaged over labels, weighted by their gold counts) is copied to MODEL: training
selects checkpoints at a fixed threshold of 0.5, which says little about a model whose
tuned threshold is far from it.

With `--relative` each label's relative threshold (a fraction of a document's highest
probability for it, see the `medllm_rel` factory) is tuned too, jointly with the absolute
one; dev keeps it off where it does not help.

With `--from SOURCE_MODEL` nothing is tuned: MODEL's relation components take the
thresholds of SOURCE_MODEL's components of the same name. This is for a final model
trained on train + dev with the settings of a run trained on train alone: dev can no
longer choose its threshold, the train-only run's tuned one stands in.
"""
import shutil
import sys
from pathlib import Path

import spacy
import srsly
from spacy.tokens import DocBin

from spacy_medllm.relations import RelationExtractor, gold_entity_docs


def tune(model: str, dev: str, relative: bool = False) -> dict:
    nlp = spacy.load(model)
    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, RelationExtractor)]
    if not names:
        sys.exit(f"{model}: no medllm_rel component")
    gold_docs = list(DocBin().from_disk(dev).get_docs(nlp.vocab))
    report = {}
    for name in names:
        rel = nlp.get_pipe(name)
        before = dict(rel.cfg["thresholds"])
        report[name] = rel.tune_thresholds(gold_entity_docs(nlp, gold_docs, upto=name), relative=relative)
        srsly.write_json(Path(model) / name / "cfg", rel.cfg)
        for label, r in report[name].items():
            extra = f", relative threshold {r['relative_threshold']}" if relative else ""
            print(f"{model} {name} {label}: threshold {before.get(label, rel.cfg['threshold'])} -> {r['threshold']}{extra} (dev F1 {100 * r['f']:.2f}, {r['gold']} gold)")
    return report


def micro_f(report: dict) -> float:
    rows = [r for per_label in report.values() for r in per_label.values()]
    gold = sum(r["gold"] for r in rows)
    return sum(r["f"] * r["gold"] for r in rows) / gold if gold else 0.0


def main(model: str, dev: str, out: str = "", other: str = "", relative: bool = False) -> None:
    report = tune(model, dev, relative)
    chosen = model
    if other:
        other_report = tune(other, dev, relative)
        print(f"tuned dev F1: {model} {100 * micro_f(report):.2f}, {other} {100 * micro_f(other_report):.2f}")
        if micro_f(other_report) > micro_f(report):
            shutil.rmtree(model)
            shutil.copytree(other, model)
            report, chosen = other_report, other
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(out, {"model": model, "chosen": chosen, "dev": dev, "thresholds": report})


def copy_thresholds(model: str, source: str) -> None:
    """Give MODEL's relation components the thresholds of SOURCE's (all checked before any
    file is written)."""
    updates = []
    for path in sorted(Path(model).iterdir()):
        cfg_path = path / "cfg"
        if not cfg_path.exists():
            continue
        cfg = srsly.read_json(cfg_path)
        if "thresholds" not in cfg:
            continue
        source_cfg = Path(source) / path.name / "cfg"
        if not source_cfg.exists():
            sys.exit(f"{source}: no component {path.name} to take thresholds from")
        source_data = srsly.read_json(source_cfg)
        cfg["thresholds"] = dict(source_data.get("thresholds", {}))
        cfg["relative_thresholds"] = dict(source_data.get("relative_thresholds") or {})
        if not cfg["thresholds"]:
            sys.exit(f"{source_cfg}: no tuned thresholds (run this script on {source} with its dev set first)")
        updates.append((cfg_path, cfg))
    if not updates:
        sys.exit(f"{model}: no medllm_rel component")
    for cfg_path, cfg in updates:
        srsly.write_json(cfg_path, cfg)
        print(f"{model} {cfg_path.parent.name}: thresholds {cfg['thresholds']}, relative {cfg['relative_thresholds']} (from {source})")


if __name__ == "__main__":
    args = sys.argv[1:]
    relative = "--relative" in args
    args = [a for a in args if a != "--relative"]
    if "--from" in args:
        i = args.index("--from")
        if len(args) != 3 or i != 1:
            sys.exit(__doc__)
        copy_thresholds(args[0], args[2])
        sys.exit(0)
    other = ""
    if "--or" in args:
        i = args.index("--or")
        other = args[i + 1]
        args = args[:i] + args[i + 2:]
    if len(args) < 2:
        sys.exit(__doc__)
    main(*args, other=other, relative=relative)
