"""Print a seeded random sample of notes with every replacement marked, for a hand check.

    python scripts/deid_handcheck.py training/deid_pipeline ../shared/corpus/mtsamples/mtsamples.tsv.gz \
        --column transcription --n 20 --seed 20 > handcheck.md

Each replaced span is shown in place as ⟦original → surrogate · LABEL⟧, so a reader sees what
was replaced (over-replacement) and what was left (a miss) in one pass. The sample is
`random.Random(seed).sample(range(number of notes), n)`, the same notes every time. The output
holds the original PHI next to its surrogates: it is for the reviewer's eyes only and is not
to be shared or committed.
"""
import csv
import gzip
import random
import sys
from pathlib import Path

import spacy
import typer

app = typer.Typer(add_completion=False)


def mark(text: str, new_text: str, offsets) -> str:
    out, pos = [], 0
    for start, end, new_start, new_end, label in offsets:
        out.append(text[pos:start])
        out.append(f"⟦{text[start:end]} → {new_text[new_start:new_end]} · {label}⟧")
        pos = end
    out.append(text[pos:])
    return "".join(out)


@app.command()
def main(
    model: str,
    notes: Path,
    column: str = typer.Option("transcription", help="the text column of a TSV / CSV"),
    n: int = typer.Option(20, help="number of notes"),
    seed: int = typer.Option(20, help="seed of the sample"),
    surrogate_seed: int = typer.Option(0, help="seed of the surrogates"),
) -> None:
    opener = gzip.open if notes.suffix == ".gz" else open
    delimiter = "\t" if ".tsv" in notes.name else ","
    csv.field_size_limit(sys.maxsize)
    with opener(notes, "rt", encoding="utf8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    if not rows or column not in rows[0]:
        raise typer.BadParameter(f"{notes}: no column {column!r} (columns: {', '.join(rows[0]) if rows else 'none'})")
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    nlp = spacy.load(model, config={"components": {"medllm_deid": {"seed": surrogate_seed}}})
    total = 0
    for i in picked:
        text = rows[i][column] or ""
        doc = nlp(text)
        total += len(doc._.deid_offsets)
        print(f"## note {i + 1} (row {i}, {len(text.split())} words, {len(doc._.deid_offsets)} replacements)\n")
        print(mark(text, doc._.deid_text, doc._.deid_offsets))
        print()
    print(f"<!-- {len(picked)} notes, {total} replacements -->")


if __name__ == "__main__":
    app()
