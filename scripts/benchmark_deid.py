"""De-identification benchmark: ours and the peers on the PhysioNet deid test split (thin;
the logic is in spacy_medllm/deid/evaluate.py).

    python scripts/benchmark_deid.py assemble training/deid_ner/model-best training/deid_pipeline
    python scripts/benchmark_deid.py run corpus/deid/test.spacy --pipeline training/deid_pipeline \
        --notes ../shared/corpus/physionet_deid --mtsamples-summary metrics/deid_mtsamples.json --output metrics
"""
import sys
from pathlib import Path
from typing import Optional

import srsly
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.command()
def assemble(ner_model: str, output: Path) -> None:
    """Write the de-identification pipeline: the trained PHI NER + medllm_deid."""
    from spacy_medllm.deid.evaluate import assemble_pipeline

    assemble_pipeline(ner_model, output)
    typer.echo(f"wrote {output}", err=True)


@app.command()
def run(
    test: Path,
    pipeline: Optional[str] = typer.Option(None, help="pipeline with the NER and medllm_deid (assemble)"),
    notes: Optional[Path] = typer.Option(None, help="PhysioNet deid folder: all its notes time the component"),
    peers: bool = typer.Option(True, "--peers/--no-peers"),
    n_process: int = typer.Option(2),
    mtsamples_summary: Optional[Path] = typer.Option(None, help="summary JSON of `medllm deidentify` on MTSamples"),
    note_timeout: float = typer.Option(60.0, help="seconds a peer may spend on one note"),
    output: Path = typer.Option(Path("metrics")),
) -> None:
    from spacy_medllm.deid.evaluate import markdown_report, run_benchmark, write_report
    from spacy_medllm.deid.physionet import read_records

    all_notes = [t for _, _, t, _ in read_records(notes / "id.text")] if notes else None
    result = run_benchmark(test, all_notes=all_notes, pipeline=pipeline, peers=peers, n_process=n_process,
                           progress=lambda m: typer.echo(m, err=True), note_timeout_s=note_timeout, output=output)
    if mtsamples_summary is not None and mtsamples_summary.exists():
        result["mtsamples"] = srsly.read_json(mtsamples_summary)
    write_report(result, output)
    sys.stdout.write(markdown_report(result))


if __name__ == "__main__":
    app()
