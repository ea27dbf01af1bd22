"""Relation extraction benchmark: BC5CDR CID, ADE v2, Chia, and the component's time share.

Usage:
    python scripts/benchmark_relations.py OUT_DIR --cid MODEL --cid-data TEST.spacy
        [--ade MODEL --ade-data TEST.spacy] [--chia MODEL --chia-data TEST.spacy] [--limit N]

The same as `medllm evaluate-relations --output OUT_DIR --cid MODEL ...`; the evaluation
is `spacy_medllm.evaluation.relations`. Writes OUT_DIR/relations.json and OUT_DIR/relations.md.
"""
from pathlib import Path
from typing import Optional

import typer

from spacy_medllm.cli import evaluate_relations_cmd


def main(
    out_dir: Path = typer.Argument(..., help="folder for relations.json and relations.md"),
    cid: Optional[str] = typer.Option(None, help="BC5CDR CID pipeline (transformer + ner + medllm_linker + medllm_rel)"),
    cid_data: str = typer.Option("corpus/bc5cdr/test.spacy", help="BC5CDR gold .spacy file"),
    ade: Optional[str] = typer.Option(None, help="ADE relation pipeline"),
    ade_data: str = typer.Option("corpus/ade/test.spacy", help="ADE gold .spacy file"),
    chia: Optional[str] = typer.Option(None, help="Chia relation pipeline"),
    chia_data: str = typer.Option("corpus/chia/test.spacy", help="Chia gold .spacy file"),
    limit: int = typer.Option(0, help="at most this many documents per data set (0: all)"),
) -> None:
    evaluate_relations_cmd(output=out_dir, cid=cid, cid_data=cid_data, ade=ade, ade_data=ade_data, chia=chia, chia_data=chia_data, limit=limit)


if __name__ == "__main__":
    typer.run(main)
