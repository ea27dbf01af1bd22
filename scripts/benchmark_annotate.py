"""`medllm annotate` throughput on MTSamples notes (or the texts of a .spacy file): the local
engine at --n-process 1 and 2 and the Ray engine with 1 and 2 workers (`--runs`), one after
the other in one run, each a fresh `medllm annotate` process on the same texts with the same
pipeline. Peak memory is the
largest sum of resident memory over the process and all its descendants (pipeline worker
processes, Ray's own processes and actors), sampled every 0.2 s.

    python scripts/benchmark_annotate.py training/medllm_bc5cdr ../shared/corpus/mtsamples/mtsamples.tsv.gz \
        --notes 500 --output metrics/annotate
    python scripts/benchmark_annotate.py training/medllm_bc5cdr corpus/bc5cdr/test.spacy --runs local1 \
        --model-also training/medllm_bc5cdr_int8 --name bc5cdr_test --output metrics/annotate
"""
import csv
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import psutil
import srsly
import typer

app = typer.Typer(add_completion=False)

RUNS = {"local1": ("local, --n-process 1", ["--n-process", "1"]), "local2": ("local, --n-process 2", ["--n-process", "2"]),
        "ray1": ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]), "ray2": ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])}


def write_texts(texts: Path, limit: int, out_path: Path) -> None:
    """The benchmark's input as JSONL (id, text): MTSamples transcriptions or a .spacy file's texts."""
    n = 0
    with out_path.open("w", encoding="utf8") as out:
        if texts.suffix == ".spacy":
            import spacy
            from spacy.tokens import DocBin

            rows = ((f"doc {i}", d.text) for i, d in enumerate(DocBin().from_disk(texts).get_docs(spacy.blank("en").vocab), start=1))
        else:
            f = gzip.open(texts, "rt", encoding="utf8", newline="")
            rows = ((r["note_id"], r.get("transcription", "")) for r in csv.DictReader(f, delimiter="\t"))
        for doc_id, text in rows:
            if limit and n >= limit:
                break
            if text.strip():
                out.write(json.dumps({"id": doc_id, "text": text}) + "\n")
                n += 1


def tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


@app.command()
def main(
    model: str = typer.Argument(..., help="pipeline name or path"),
    texts: Path = typer.Argument(..., help="mtsamples.tsv.gz (column transcription, id note_id), or a .spacy file"),
    notes: int = typer.Option(500, help="the first N non-empty texts (0: all)"),
    batch_size: int = typer.Option(16),
    runs: str = typer.Option("local1,local2,ray1,ray2", help="comma-separated: local1, local2, ray1, ray2"),
    model_also: List[str] = typer.Option([], help="further pipelines, each run with the first of --runs (e.g. the int8 copy)"),
    name: str = typer.Option("throughput", help="the report's name: OUTPUT/NAME.json and .md"),
    output: Path = typer.Option(Path("metrics/annotate")),
) -> None:
    output.mkdir(parents=True, exist_ok=True)
    work = output / "work"
    work.mkdir(exist_ok=True)
    notes_path = work / f"{name}_{notes}.jsonl"
    write_texts(texts, notes, notes_path)
    chosen = [RUNS[r.strip()] for r in runs.split(",")]
    plan = [(model, label, args) for label, args in chosen] + [(m, chosen[0][0], chosen[0][1]) for m in model_also]
    results = []
    reference = None
    for run_model, label, args in plan:
        out_path, summary_path = work / "out.jsonl", work / "summary.json"
        cmd = [sys.executable, "-m", "spacy_medllm", "annotate", run_model, str(notes_path), str(out_path), "--force",
               "--batch-size", str(batch_size), "--summary", str(summary_path), *args]
        typer.echo(f"{label}: {' '.join(cmd[2:])}", err=True)
        start = time.perf_counter()
        log_path = work / "annotate.log"  # a file, not a pipe: the progress bar never fills a pipe nobody reads
        log = log_path.open("w", encoding="utf8")
        proc = subprocess.Popen(cmd, stderr=log, text=True)
        ps, peak = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            try:
                peak = max(peak, tree_rss_mb(ps))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        proc.wait()
        log.close()
        err = log_path.read_text(encoding="utf8", errors="replace")
        if proc.returncode != 0:
            typer.echo(err[-3000:], err=True)
            raise typer.Exit(1)
        wall = time.perf_counter() - start
        summary = srsly.read_json(summary_path)
        records = out_path.read_text(encoding="utf8")
        if run_model == model:
            reference = reference or records
        row = {"run": label, "model": run_model, "documents": summary["documents"], "words": summary["words"],
               "annotate_seconds": summary["seconds"], "process_seconds": round(wall, 1),
               "documents_per_second": summary["documents_per_second"], "words_per_second": summary["words_per_second"],
               "peak_rss_mb_all_processes": round(peak, 1), "same_output_as_first": records == reference if run_model == model else None}
        if summary.get("workers"):
            row["actor_peak_rss_mb"] = summary["workers"].get("actor_peak_rss_mb")
        results.append(row)
        typer.echo(json.dumps(row), err=True)
    report = {"model": model, "input": f"{texts} ({f'first {notes}' if notes else 'all'} texts)", "batch_size": batch_size, "runs": results}
    srsly.write_json(output / f"{name}.json", report)
    lines = ["| pipeline | run | docs/s | words/s | annotate s | process s (with load) | peak RSS, all processes (MB) | same output |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        same = {True: "yes", False: "no", None: ""}[r["same_output_as_first"]]
        lines.append(f"| {Path(r['model']).name} | {r['run']} | {r['documents_per_second']} | {r['words_per_second']:,} | {r['annotate_seconds']} | "
                     f"{r['process_seconds']} | {r['peak_rss_mb_all_processes']:,.0f} | {same} |")
    (output / f"{name}.md").write_text(
        f"`medllm annotate` on {report['input']}, {results[0]['words']:,} words, pipeline {model}, batch size {batch_size}\n\n"
        + "\n".join(lines) + "\n", encoding="utf8")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
