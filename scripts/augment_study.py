"""Low-resource augmentation study: a share of BC5CDR train, several seeds, each augmenter on/off.

python scripts/augment_study.py corpus/bc5cdr metrics/augment --kb corpus/kb --share 0.1 --seeds 0 1 2

For every seed a fixed random share of the training abstracts is drawn (the same for every
augmenter), spaCy's CNN NER (configs/ner_cnn.cfg, `--steps` steps) is trained on it with no
augmenter and with each registered augmenter of spacy_medllm, and the best dev F1 (all of
BC5CDR dev) is recorded. Writes metrics/augment/study.json and study.md (mean and standard
deviation per augmenter, the gain over no augmentation).
"""
import json
import random
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

import typer
from spacy.tokens import DocBin

from spacy_medllm.corpus.convert import blank_biomedical


def augmenters(train: Path, kb: Optional[Path]) -> Dict[str, Optional[dict]]:
    out: Dict[str, Optional[dict]] = {
        "none": None,
        "eda": {"@augmenters": "spacy_medllm.eda_augmenter.v1", "level": 0.5, "alpha": 0.1},
        "entity_swap": {"@augmenters": "spacy_medllm.entity_swap_augmenter.v1", "names_path": str(train), "level": 0.5, "swap_prob": 0.5},
    }
    if kb is not None:
        out["eda_kb"] = {"@augmenters": "spacy_medllm.eda_augmenter.v1", "level": 0.5, "alpha": 0.1, "kb_path": str(kb)}
        out["kb_alias"] = {"@augmenters": "spacy_medllm.kb_swap_augmenter.v1", "kb_path": str(kb), "mode": "alias", "level": 0.5, "swap_prob": 0.5}
        out["kb_concept"] = {"@augmenters": "spacy_medllm.kb_swap_augmenter.v1", "kb_path": str(kb), "mode": "concept", "level": 0.5, "swap_prob": 0.5}
    return out


def subset(src: Path, dest: Path, share: float, seed: int) -> int:
    nlp = blank_biomedical()
    docs = list(DocBin().from_disk(src).get_docs(nlp.vocab))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(docs)), max(1, round(share * len(docs)))))
    DocBin(docs=[docs[i] for i in chosen], store_user_data=True).to_disk(dest)
    return len(chosen)


def main(
    corpus: Path = typer.Argument(..., help="folder with train.spacy and dev.spacy"),
    output: Path = typer.Argument(..., help="folder for study.json, study.md and the runs"),
    kb: Optional[Path] = typer.Option(None, help="knowledge base folder: adds the KB-driven augmenters"),
    share: float = typer.Option(0.1, help="share of the training documents"),
    seeds: List[int] = typer.Option([0, 1, 2], help="subsets and training seeds"),
    steps: int = typer.Option(1000, help="training steps per run"),
    config: Path = typer.Option(Path("configs/ner_cnn.cfg")),
    only: List[str] = typer.Option([], help="run only these augmenters"),
) -> None:
    from spacy.cli.train import train

    output.mkdir(parents=True, exist_ok=True)
    results_path = output / "study.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": {}}
    for seed in seeds:
        train_path = output / f"train_{share}_{seed}.spacy"
        n_docs = subset(corpus / "train.spacy", train_path, share, seed)
        for name, aug in augmenters(train_path, kb).items():
            if only and name not in only:
                continue
            key = f"{name}/{seed}"
            if key in results["runs"]:  # resumable: a finished run is not redone
                continue
            run_dir = output / "runs" / name / str(seed)
            overrides = {
                "paths.train": str(train_path), "paths.dev": str(corpus / "dev.spacy"),
                "training.max_steps": steps, "training.eval_frequency": max(50, steps // 10),
                "training.patience": 0, "system.seed": seed, "corpora.train.augmenter": aug,
            }
            t0 = time.time()
            typer.echo(f"{key}: {n_docs} training documents, {steps} steps", err=True)
            train(config, run_dir, overrides=overrides)
            meta = json.loads((run_dir / "model-best" / "meta.json").read_text())
            perf = meta["performance"]
            results["runs"][key] = {
                "augmenter": name, "seed": seed, "documents": n_docs, "dev_f": round(100 * perf["ents_f"], 2),
                "dev_per_type": {k: round(100 * v["f"], 2) for k, v in (perf.get("ents_per_type") or {}).items()},
                "seconds": round(time.time() - t0, 1),
            }
            results_path.write_text(json.dumps(results, indent=1))
    rows = ["| augmenter | dev F1 (mean ± sd) | Chemical | Disease | gain | runs |", "|---|---:|---:|---:|---:|---:|"]
    by_aug: Dict[str, List[dict]] = {}
    for r in results["runs"].values():
        by_aug.setdefault(r["augmenter"], []).append(r)
    base = statistics.mean(r["dev_f"] for r in by_aug.get("none", [])) if by_aug.get("none") else None
    for name, runs in by_aug.items():
        fs = [r["dev_f"] for r in runs]
        mean = statistics.mean(fs)
        sd = statistics.stdev(fs) if len(fs) > 1 else 0.0
        chem = statistics.mean(r["dev_per_type"].get("Chemical", 0.0) for r in runs)
        dis = statistics.mean(r["dev_per_type"].get("Disease", 0.0) for r in runs)
        gain = f"{mean - base:+.2f}" if base is not None and name != "none" else "-"
        rows.append(f"| {name} | {mean:.2f} ± {sd:.2f} | {chem:.2f} | {dis:.2f} | {gain} | {len(fs)} |")
    (output / "study.md").write_text("\n".join(rows) + "\n")
    typer.echo("\n".join(rows))


if __name__ == "__main__":
    typer.run(main)
