"""`medllm annotate` throughput on MTSamples notes: the local engine at --n-process 1 and 2 and
the Ray engine with 1 and 2 workers, one after the other in one run, each a fresh
`medllm annotate` process on the same notes with the same pipeline. Peak memory is the
largest sum of resident memory over the process and all its descendants (pipeline worker
processes, Ray's own processes and actors), sampled every 0.2 s.

    python scripts/benchmark_annotate.py training/medllm_bc5cdr ../shared/corpus/mtsamples/mtsamples.tsv.gz \
        --notes 500 --output metrics/annotate
"""
import csv
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import srsly
import typer

app = typer.Typer(add_completion=False)

RUNS = (("local, --n-process 1", ["--n-process", "1"]), ("local, --n-process 2", ["--n-process", "2"]),
        ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]), ("ray, 2 workers", ["--engine", "ray", "--workers", "2"]))


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
    mtsamples: Path = typer.Argument(..., help="mtsamples.tsv.gz (column transcription, id note_id)"),
    notes: int = typer.Option(500, help="the first N non-empty notes"),
    batch_size: int = typer.Option(16),
    output: Path = typer.Option(Path("metrics/annotate")),
) -> None:
    output.mkdir(parents=True, exist_ok=True)
    work = output / "work"
    work.mkdir(exist_ok=True)
    notes_path = work / f"mtsamples_{notes}.jsonl"
    with gzip.open(mtsamples, "rt", encoding="utf8", newline="") as f, notes_path.open("w", encoding="utf8") as out:
        n = 0
        for row in csv.DictReader(f, delimiter="\t"):
            if n >= notes:
                break
            if row.get("transcription", "").strip():
                out.write(json.dumps({"id": row["note_id"], "text": row["transcription"]}) + "\n")
                n += 1
    results = []
    reference = None
    for name, args in RUNS:
        out_path, summary_path = work / "out.jsonl", work / "summary.json"
        cmd = [sys.executable, "-m", "spacy_medllm", "annotate", model, str(notes_path), str(out_path), "--force",
               "--batch-size", str(batch_size), "--summary", str(summary_path), *args]
        typer.echo(f"{name}: {' '.join(cmd[2:])}", err=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        ps, peak = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            try:
                peak = max(peak, tree_rss_mb(ps))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        err = proc.stderr.read()
        if proc.returncode != 0:
            typer.echo(err[-3000:], err=True)
            raise typer.Exit(1)
        wall = time.perf_counter() - start
        summary = srsly.read_json(summary_path)
        records = out_path.read_text(encoding="utf8")
        reference = reference or records
        row = {"run": name, "documents": summary["documents"], "words": summary["words"],
               "annotate_seconds": summary["seconds"], "process_seconds": round(wall, 1),
               "documents_per_second": summary["documents_per_second"], "words_per_second": summary["words_per_second"],
               "peak_rss_mb_all_processes": round(peak, 1), "same_output_as_first": records == reference}
        if summary.get("workers"):
            row["actor_peak_rss_mb"] = summary["workers"].get("actor_peak_rss_mb")
        results.append(row)
        typer.echo(json.dumps(row), err=True)
    report = {"model": model, "input": f"{mtsamples} (first {notes} notes)", "batch_size": batch_size, "runs": results}
    srsly.write_json(output / "throughput.json", report)
    lines = ["| run | docs/s | words/s | annotate s | process s (with load) | peak RSS, all processes (MB) | same output |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['run']} | {r['documents_per_second']} | {r['words_per_second']:,} | {r['annotate_seconds']} | "
                     f"{r['process_seconds']} | {r['peak_rss_mb_all_processes']:,.0f} | {'yes' if r['same_output_as_first'] else 'no'} |")
    (output / "throughput.md").write_text(
        f"`medllm annotate` on {report['input']}, {results[0]['words']:,} words, pipeline {model}, batch size {batch_size}\n\n"
        + "\n".join(lines) + "\n", encoding="utf8")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
