"""Which encoder layers to quantize: NER and ADE-textcat F1 and words/s on the dev sets,
fp32 against int8 variants (`medllm quantize --keep-fp32 ...`), one process per variant.

    python scripts/quantize_study.py training/multitask/model-tuned --output metrics/quantize_study.json
    python scripts/quantize_study.py training/medllm_bc5cdr --output metrics/quantize_study_channel.json \
        --only "int8 all Linear" --only "int8, first layer fp32" --only "int8, FFN expansion fp32" --only "int8, first and last layer fp32"

(`medllm quantize` scales per output channel since the first study, which was per tensor.)
`--activations per_call|per_token` is passed to `medllm quantize` (its default, per token,
since the studies before it, which were per call):

    python scripts/quantize_study.py training/medllm_bc5cdr --activations per_token \
        --only fp32 --only "int8, first layer fp32, smoothed 1.0" --only "int8 all Linear, smoothed 1.0"
The "smoothed" variants calibrate activation smoothing on the first 200 BC5CDR train
abstracts (`medllm quantize --calibrate corpus/bc5cdr/train.spacy --smooth-alpha A`).
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

import typer

VARIANTS = {
    "fp32": None,
    "int8 all Linear": [],
    "int8, attention fp32": ["attention"],
    "int8, last two layers fp32": ["encoder.layer.4.", "encoder.layer.5."],
    "int8, first layer fp32": ["encoder.layer.0."],
    "int8, FFN expansion fp32": ["intermediate"],
    "int8, first and last layer fp32": ["encoder.layer.0.", "encoder.layer.5."],
    # activation smoothing (SmoothQuant, `medllm quantize --calibrate`): (kept fp32, alpha)
    "int8 all Linear, smoothed 0.5": ([], 0.5),
    "int8 all Linear, smoothed 1.0": ([], 1.0),
    "int8, first layer fp32, smoothed 0.75": (["encoder.layer.0."], 0.75),
    "int8, first layer fp32, smoothed 1.0": (["encoder.layer.0."], 1.0),
}

CHILD = """
import json, sys, time
import spacy
from spacy.scorer import Scorer
from spacy.tokens import DocBin
from spacy.training import Example
nlp = spacy.load(sys.argv[1])
out = {}
for name, path in (("bc5cdr-dev", sys.argv[2]), ("ade-dev", sys.argv[3])):
    golds = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    list(nlp.pipe([g.text for g in golds[:8]]))
    t = time.perf_counter()
    preds = list(nlp.pipe([g.text for g in golds], batch_size=32))
    s = time.perf_counter() - t
    egs = [Example(p, g) for p, g in zip(preds, golds)]
    row = {"words_per_second": round(sum(len(p) for p in preds) / s)}
    if name == "bc5cdr-dev":
        row["ents_f"] = round(100 * Scorer.score_spans(egs, "ents")["ents_f"], 2)
    else:
        row["ade_f"] = round(100 * Scorer.score_cats(egs, "cats", labels=["ADE"], multi_label=True)["cats_f_per_type"]["ADE"]["f"], 2)
    out[name] = row
print(json.dumps(out))
"""


def main(model: Path, bc5cdr_dev: Path = Path("corpus/bc5cdr/dev.spacy"), ade_dev: Path = Path("corpus/ade/dev.spacy"),
         calibrate: Path = typer.Option(Path("corpus/bc5cdr/train.spacy"), help="training text for the smoothed variants"),
         output: Path = typer.Option(None), only: List[str] = typer.Option([], help="run only these variants (repeatable)"),
         activations: str = typer.Option("per_token", help="medllm quantize --activations: per_token or per_call")) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, keep in VARIANTS.items():
            if only and name not in only:
                continue
            path = model
            if keep is not None:
                path = Path(tmp) / name.replace(" ", "_").replace(",", "")
                cmd = [sys.executable, "-m", "spacy_medllm", "quantize", str(model), str(path), "--activations", activations]
                if isinstance(keep, tuple):
                    keep, alpha = keep
                    cmd += ["--calibrate", str(calibrate), "--calibrate-docs", "200", "--smooth-alpha", str(alpha)]
                for k in keep:
                    cmd += ["--keep-fp32", k]
                subprocess.run(cmd, check=True, capture_output=True)
            run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(bc5cdr_dev), str(ade_dev)], capture_output=True, text=True)
            if run.returncode != 0:
                typer.echo(run.stderr[-2000:], err=True)
                raise typer.Exit(1)
            results[name] = json.loads(run.stdout.strip().splitlines()[-1])
            if keep is not None:
                results[name]["activations"] = activations
            typer.echo(f"{name}: {results[name]}", err=True)
    print(json.dumps(results, indent=2))
    if output:
        output.write_text(json.dumps(results, indent=2), encoding="utf8")


if __name__ == "__main__":
    typer.run(main)
