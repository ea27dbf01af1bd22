"""Install a built pipeline package into a fresh folder with pip and check, in a fresh
process that imports it by name (offline), that it predicts what the pipeline folder it
was built from predicts, on the texts of a .spacy file; with the load time, words per second
and peak memory of that process (a user's: the package loaded by name, texts streamed
through `nlp.pipe`, nothing kept but the predictions).

    python scripts/check_package.py training/medllm_bc5cdr packages/en_medllm_bc5cdr-0.2.0/dist/en_medllm_bc5cdr-0.2.0.tar.gz corpus/bc5cdr/test.spacy --output metrics/package_check.json

`--python` runs the install and both processes with another interpreter, e.g. that of a
fresh virtual environment holding spacy_medllm without the benchmark extras
(`bash scripts/user_venv.sh /tmp/user-venv`): spaCy imports every installed package that
registers a spaCy factory when it builds a pipeline, so a benchmark peer installed beside
(Presidio's analyzer: 0.7 s of imports, measured) shows in the load time of `.venv`, not in a user's.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import spacy
import srsly
import typer
from spacy.tokens import DocBin

CHILD = """
import json, resource, sys, time
t = time.perf_counter()
import spacy
nlp = spacy.load(sys.argv[1])
load_s = time.perf_counter() - t
load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
texts = json.load(open(sys.argv[2]))
out = []
words = 0
t = time.perf_counter()
for doc in nlp.pipe(texts, batch_size=32):
    words += len(doc)
    out.append({"ents": [[e.start_char, e.end_char, e.label_, e.kb_id_] for e in doc.ents],
                "cats": {k: round(v, 4) for k, v in doc.cats.items()},
                "rels": sorted(([r["head_id"], r["tail_id"], r["label"]] for r in (doc._.medllm_rels if doc.has_extension("medllm_rels") else [])), key=str)})
seconds = time.perf_counter() - t
import importlib, os
where = sys.argv[1] if os.path.isdir(sys.argv[1]) else os.path.dirname(importlib.import_module(sys.argv[1]).__file__)
print(json.dumps({"load_s": load_s, "preds": out, "file": where, "seconds": seconds, "words": words,
                  "peak_rss_load_mb": load_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(
    folder: Path, sdist: Path, data: Path, limit: int = typer.Option(100, help="documents"), output: Path = typer.Option(None),
    package: str = typer.Option(None, help="the package's import name (default: from the folder's meta.json)"),
    python: Path = typer.Option(None, help="interpreter to install into and run with (default: this one)"),
) -> None:
    python_bin = str(python) if python else sys.executable
    if package is None:
        meta = srsly.read_json(folder / "meta.json")
        package = f"{meta['lang']}_{meta['name']}"
    texts = [d.text for d in DocBin().from_disk(data).get_docs(spacy.blank("en").vocab)][:limit]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        subprocess.run([python_bin, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(tmp / "site"), str(sdist)], check=True)
        install_s = time.perf_counter() - t
        (tmp / "texts.json").write_text(json.dumps(texts), encoding="utf8")
        env = dict(os.environ, PYTHONPATH=str(tmp / "site"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        results = []
        for target in (package, str(folder.resolve())):
            run = subprocess.run([python_bin, "-c", CHILD, target, str(tmp / "texts.json")], capture_output=True, text=True, env=env, cwd=tmp)
            if run.returncode != 0:
                typer.echo(run.stderr[-3000:], err=True)
                raise typer.Exit(1)
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    by_name, by_folder = results
    same = sum(a == b for a, b in zip(by_name["preds"], by_folder["preds"]))
    report = {
        "package": package, "sdist": str(sdist), "sdist_mb": round(sdist.stat().st_size / 2**20, 1), "data": str(data),
        "documents": len(texts), "identical_documents": same, "pip_install_s": round(install_s, 1),
        "load_s_by_name": round(by_name["load_s"], 2), "load_s_folder": round(by_folder["load_s"], 2), "loaded_from": by_name["file"],
        "entities": sum(len(p["ents"]) for p in by_name["preds"]), "relations": sum(len(p["rels"]) for p in by_name["preds"]),
        "python": python_bin, "words": by_name["words"],
        "words_per_second_by_name": round(by_name["words"] / by_name["seconds"]) if by_name["seconds"] else None,
        "peak_rss_mb_by_name": round(by_name["peak_rss_mb"]), "peak_rss_after_load_mb_by_name": round(by_name["peak_rss_load_mb"]),
    }
    typer.echo(json.dumps(report, indent=2))
    if output:
        srsly.write_json(output, report)
    if same != len(texts):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
