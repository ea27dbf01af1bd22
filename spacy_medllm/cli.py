"""The `medllm` command line."""
import logging
import sys
from pathlib import Path
from typing import List, Optional

import srsly
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="spacy_medllm: clinical and biomedical NLP for spaCy.")


def _pairs(values: List[str], what: str) -> List[tuple]:
    out = []
    for v in values:
        if "=" not in v:
            raise typer.BadParameter(f"{what} {v!r}: expected NAME=PATH")
        name, path = v.split("=", 1)
        out.append((name, path))
    return out


@app.command()
def convert(
    corpus: str = typer.Argument(..., help="bc5cdr, ncbi_disease, ade or chia"),
    src: Path = typer.Argument(..., help="folder with the corpus files as published upstream"),
    out_dir: Path = typer.Argument(..., help="folder for train/dev/test .spacy files and stats.json"),
    skip_errors: bool = typer.Option(False, "--skip-errors", help="skip and count malformed records instead of stopping"),
) -> None:
    """Convert a raw corpus to .spacy files (one per split) and print its counts."""
    from .corpus.base import CorpusError
    from .corpus.convert import convert_corpus

    from tqdm import tqdm

    bars = {}

    def progress(split: str, n: int) -> None:
        bar = bars.get(split)
        if bar is None:
            bar = bars[split] = tqdm(desc=f"{corpus} {split}", unit=" docs", file=sys.stderr, leave=False)
        bar.update(n - bar.n)

    try:
        stats = convert_corpus(corpus, src, out_dir, on_error="skip" if skip_errors else "raise", progress=progress)
    except (CorpusError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    finally:
        for bar in bars.values():
            bar.close()
    for split, s in stats.items():
        skipped = sum(s["skipped"].values())
        typer.echo(
            f"{corpus} {split}: {s['documents']} documents, {s['mentions']} mentions, {s['relations']} relations"
            + (f", {skipped} skipped" if skipped else "")
        )
    typer.echo(f"wrote {out_dir}/{{{','.join(stats)}}}.spacy and stats.json")


@app.command()
def evaluate(
    model: List[str] = typer.Option(..., "--model", "-m", help="NAME=PATH of a pipeline (repeatable)"),
    data: List[str] = typer.Option(..., "--data", "-d", help="NAME=PATH of a gold .spacy file (repeatable)"),
    only: List[str] = typer.Option([], "--only", help="DATA=LABEL[,LABEL]: score only these labels on a data set"),
    output: Path = typer.Option(Path("metrics"), "--output", "-o", help="folder for <model>.json and ner.md"),
) -> None:
    """Score and time NER pipelines on the same texts; write metrics/*.json and a markdown table."""
    from .evaluate import markdown_table, run_isolated

    datasets = _pairs(data, "--data")
    labels = {k: v.split(",") for k, v in _pairs(only, "--only")}
    for name, path in datasets:
        if not Path(path).exists():
            typer.echo(f"error: --data {name}: {path} not found", err=True)
            raise typer.Exit(1)
    output.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, path in _pairs(model, "--model"):
        typer.echo(f"evaluating {name} ({path}) on {', '.join(n for n, _ in datasets)} ...", err=True)
        res = run_isolated(path, datasets, labels=labels)
        srsly.write_json(output / f"{name}.json", res)
        results[name] = res
        for ds, d in res["datasets"].items():
            typer.echo(f"  {ds}: F {d['overall']['f']:.2f}  P {d['overall']['p']:.2f}  R {d['overall']['r']:.2f}  {d['words_per_second']:,} words/s", err=True)
    table = markdown_table(results)
    (output / "ner.md").write_text(table, encoding="utf8")
    typer.echo(table)


@app.command()
def annotate(
    model: str = typer.Argument(..., help="pipeline package name or path"),
    input_path: Path = typer.Argument(..., help="text file (one document per line) or JSONL with a 'text' field"),
    output: Path = typer.Argument(..., help="JSONL output: text, entities (start, end, label, kb_id), relations"),
    batch_size: int = typer.Option(32, help="documents per batch"),
) -> None:
    """Run a pipeline over texts and write its entities, ids and relations as JSONL."""
    import spacy
    from tqdm import tqdm

    from .corpus.base import get_relations, read_text

    if input_path.suffix == ".jsonl":
        records = list(srsly.read_jsonl(input_path))
        for i, r in enumerate(records, start=1):
            if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                typer.echo(f"error: {input_path}, line {i}: expected an object with a 'text' string", err=True)
                raise typer.Exit(1)
        texts = [r["text"] for r in records]
    else:
        texts = [t for t in read_text(input_path).split("\n") if t.strip()]
    nlp = spacy.load(model)
    out = []
    for doc in tqdm(nlp.pipe(texts, batch_size=batch_size), total=len(texts), desc="annotate", file=sys.stderr):
        out.append(
            {
                "text": doc.text,
                "entities": [{"start": e.start_char, "end": e.end_char, "text": e.text, "label": e.label_, "kb_id": e.kb_id_ or None} for e in doc.ents],
                "relations": get_relations(doc),
            }
        )
    srsly.write_jsonl(output, out)
    typer.echo(f"wrote {len(out)} documents to {output}", err=True)


@app.command("build-kb")
def build_kb_cmd(
    out_dir: Path = typer.Argument(..., help="folder for the knowledge base (kb.msgpack) and its candidate index (index/)"),
    mesh: Optional[Path] = typer.Option(None, help="MeSH folder with terms.tsv and tree-numbers.tsv"),
    medic: Optional[Path] = typer.Option(None, help="CTD MEDIC CTD_diseases.tsv(.gz)"),
    mentions: List[Path] = typer.Option([], help="training-split .spacy file whose linked mentions add aliases (repeatable)"),
    umls: Optional[Path] = typer.Option(None, help="UMLS META folder with MRCONSO.RRF (+ MRSTY.RRF, MRDEF.RRF)"),
    scispacy_kb: List[Path] = typer.Option([], help="scispaCy KB file (.json list or .jsonl) (repeatable)"),
) -> None:
    """Build a knowledge base from vocabularies and training mentions, with its candidate index."""
    import time

    from .corpus.base import CorpusError
    from .kb import CandidateGenerator, build_kb

    t0 = time.perf_counter()
    try:
        kb = build_kb(mesh_dir=mesh, medic=medic, mention_files=mentions, umls_meta=umls, scispacy_kbs=scispacy_kb)
    except (CorpusError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not len(kb):
        typer.echo("error: no source given (--mesh, --medic, --mentions, --umls, --scispacy-kb)", err=True)
        raise typer.Exit(1)
    kb.to_disk(out_dir)
    typer.echo(f"{len(kb):,} concepts, {sum(len(c.names) for c in kb):,} names ({time.perf_counter() - t0:.1f} s)", err=True)
    t0 = time.perf_counter()
    CandidateGenerator(kb).to_disk(out_dir / "index")
    typer.echo(f"candidate index: {out_dir / 'index'} ({time.perf_counter() - t0:.1f} s)", err=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app()


if __name__ == "__main__":
    main()
