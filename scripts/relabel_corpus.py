"""Write .spacy files whose entities are re-chosen among the mentions of some labels.

python scripts/relabel_corpus.py corpus/chia corpus/chia_ner train dev test
(the labels default to Chia's entity types, spacy_medllm.corpus.readers.CHIA_NER_LABELS)
"""
from pathlib import Path
from typing import List, Optional

import typer
from spacy.tokens import DocBin

from spacy_medllm.corpus.convert import blank_biomedical
from spacy_medllm.corpus.readers import CHIA_NER_LABELS, create_labelled_corpus


def main(src: Path, dest: Path, splits: List[str], labels: Optional[str] = typer.Option(None, help="comma-separated; Chia's entity types by default")) -> None:
    keep = labels.split(",") if labels else CHIA_NER_LABELS
    nlp = blank_biomedical()
    dest.mkdir(parents=True, exist_ok=True)
    for split in splits:
        db = DocBin(store_user_data=True)
        n = 0
        for ex in create_labelled_corpus(src / f"{split}.spacy", keep)(nlp):
            db.add(ex.reference)
            n += len(ex.reference.ents)
        db.to_disk(dest / f"{split}.spacy")
        typer.echo(f"{split}: {len(db)} documents, {n} entities -> {dest / (split + '.spacy')}")


if __name__ == "__main__":
    typer.run(main)
