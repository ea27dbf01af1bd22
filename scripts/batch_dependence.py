"""Whether a pipeline's entities depend on the other texts of their batch: the first N
documents of a gold file run through the pipeline in batches (`--batch-size`) and one text
at a time, up to its last component that sets entities or links them (`ner`,
`medllm_linker`: what comes after reads the entities and sets none); per document, the
entities with their ids, (start, end, label, kb_id), are compared: `entities_differing`
counts those found by one run and not the other (an entity whose id changed counts twice,
its old and its new version). The transformer's outputs are compared too, each window's
real pieces (the padding, which no alignment reads, left out): `windows_differing` counts
the windows whose outputs are not the same bits.

An fp32 encoder rounds a little differently with the batch's padded length; an int8 one
quantizes its activations per call (one scale for the whole batch) or per token
(`medllm quantize --activations`), and its rounding steps can carry such differences on.

    python scripts/batch_dependence.py training/medllm_bc5cdr_int8 training/medllm_bc5cdr \\
        --data corpus/bc5cdr/test.spacy --limit 200 --output metrics/batch_dependence.json
"""
from pathlib import Path
from typing import List, Optional

import numpy
import spacy
import srsly
import typer
from spacy.tokens import DocBin
from tqdm import tqdm

import spacy_medllm  # noqa: F401  (registers the factories)

app = typer.Typer(add_completion=False)

# the factories whose components set entities or their ids
ENTITY_FACTORIES = {"ner", "beam_ner", "entity_ruler", "span_ruler", "entity_linker", "medllm_linker"}


def entities(doc):
    return {(e.start_char, e.end_char, e.label_, e.kb_id_) for e in doc.ents}


def real_pieces(doc) -> Optional[List[numpy.ndarray]]:
    """Each window's transformer outputs on its real pieces, or None without them."""
    data = doc._.trf_data if doc.has_extension("trf_data") else None
    if data is None or not getattr(data, "tensors", None) or "attention_mask" not in getattr(data, "tokens", {}):
        return None
    out = numpy.asarray(data.tensors[0])
    lengths = numpy.asarray(data.tokens["attention_mask"]).sum(axis=1)
    return [out[w, : int(n)] for w, n in enumerate(lengths)]


def compare(model: Path, texts: List[str], batch_size: int) -> dict:
    nlp = spacy.load(model)
    setting = [i for i, name in enumerate(nlp.pipe_names) if nlp.get_pipe_meta(name).factory in ENTITY_FACTORIES]
    keep = nlp.pipe_names[: setting[-1] + 1] if setting else list(nlp.pipe_names)
    with nlp.select_pipes(enable=keep):
        batched = list(tqdm(nlp.pipe(texts, batch_size=batch_size), total=len(texts), desc=f"{model.name}, batches of {batch_size}", leave=False))
        alone = [nlp(text) for text in tqdm(texts, desc=f"{model.name}, one at a time", leave=False)]
    docs_differ = ents_differ = windows = windows_differ = 0
    for a, b in zip(batched, alone):
        diff = entities(a) ^ entities(b)
        docs_differ += bool(diff)
        ents_differ += len(diff)
        x, y = real_pieces(a), real_pieces(b)
        if x is not None and y is not None:
            windows += len(x)
            windows_differ += len(x) if len(x) != len(y) else sum(not numpy.array_equal(u, v) for u, v in zip(x, y))
    return {
        "model": str(model), "components": keep, "documents": len(texts), "batch_size": batch_size,
        "entities_batched": sum(len(d.ents) for d in batched),
        "documents_whose_entities_differ": docs_differ, "entities_differing": ents_differ,
        "windows": windows, "windows_differing": int(windows_differ),
    }


@app.command()
def main(
    models: List[Path] = typer.Argument(..., help="pipeline folders"),
    data: Path = typer.Option(..., "--data", help="a .spacy file whose texts are run"),
    limit: int = typer.Option(200, "--limit", help="its first N documents"),
    batch_size: int = typer.Option(32, "--batch-size"),
    output: Optional[Path] = typer.Option(None, "--output", help="a JSON file for the results"),
) -> None:
    for model in models:
        if not (model / "config.cfg").exists():
            raise SystemExit(f"{model}: not a pipeline folder (no config.cfg)")
    if not data.exists():
        raise SystemExit(f"{data}: not found")
    texts = [doc.text for doc in DocBin().from_disk(data).get_docs(spacy.blank("en").vocab)][:limit]
    if not texts:
        raise SystemExit(f"{data}: holds no documents")
    results = []
    for model in models:
        r = compare(model, texts, batch_size)
        results.append(r)
        typer.echo(f"{model}: {r['documents']} documents, {r['entities_batched']} entities batched; entities differing "
                   f"{r['entities_differing']} in {r['documents_whose_entities_differ']} documents; transformer outputs "
                   f"differing in {r['windows_differing']} of {r['windows']} windows")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(output, {"data": str(data), "results": results})


if __name__ == "__main__":
    app()
