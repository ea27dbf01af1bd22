"""How long `medllm_linker` takes on its own, and what the dense name-vector reuse changes.

The linker runs alone (a blank pipeline: no transformer, no NER) over the gold entity spans
of a corpus, with a features-only scorer initialized on a few training abstracts: its
links are not the point, its time is, and that time does not depend on what the scorer
learned (the candidates, the features and the scorer's size are those of a trained one).
Each setting runs in a fresh process, interleaved with the others, `--runs` times.

Settings: the candidate index as given (`INDEX`: a `medllm build-kb` or
`medllm build-dense-index` output's `index/`), and, for a dense index, with and without
the reuse of a KB name's stored vector for a mention with that exact text
(`DenseIndex.reuse_name_vectors`). For a dense index it also reports candidate recall
(R@1/10/30) of gold mentions on the `--recall` corpora with and without the reuse.

    python scripts/benchmark_linker_speed.py corpus/kb_dense --data corpus/bc5cdr/test.spacy \\
        --train corpus/bc5cdr/train.spacy --recall corpus/bc5cdr/dev.spacy \\
        --recall corpus/ncbi_disease/dev.spacy --runs 2 --output metrics/linker_speed
"""
import json
import subprocess
import sys
from pathlib import Path
from typing import List

import srsly
import typer

app = typer.Typer(add_completion=False)

FEATURES = ["score", "exact", "rank", "type_match", "type_conflict", "prior", "alias_count", "concept_count",
            "expanded", "score_gap", "nil", "canonical_name", "tfidf", "dense", "dense_gap"]


def run_once(kb_dir: Path, data: Path, train: Path, reuse: bool, batch_size: int) -> dict:
    """One timed pass of the linker over `data`'s gold spans, in this process."""
    import time

    import spacy
    from spacy.tokens import DocBin
    from spacy.training import Example
    from thinc.api import fix_random_seed

    from spacy_medllm.kb import CandidateGenerator, KnowledgeBase

    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker", config={
        "top_k": 30, "use_abbreviations": True,
        "features": {"@misc": "spacy_medllm.linker_features.v1", "features": FEATURES},
        "model": {"@architectures": "spacy_medllm.LinkerModel.v2", "tok2vec": None, "n_features": len(FEATURES),
                  "hidden_width": 64, "n_concept_rows": 65536}})
    kb = KnowledgeBase.from_disk(kb_dir)
    gen = CandidateGenerator.from_disk(kb_dir / "index", kb)
    if gen.dense is not None:
        gen.dense.reuse_name_vectors = reuse
    linker.set_kb(kb, gen)
    sample = list(DocBin().from_disk(train).get_docs(nlp.vocab))[:50]
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in sample])
    docs = []
    for gold in DocBin().from_disk(data).get_docs(nlp.vocab):
        doc = nlp.make_doc(gold.text)
        spans = [doc.char_span(e.start_char, e.end_char, label=e.label_) for e in gold.ents]
        doc.ents = [s for s in spans if s is not None]
        docs.append(doc)
    kb.alias_index  # built once per process at the first lookup, whatever the setting
    t0 = time.perf_counter()
    for _ in linker.pipe(docs, batch_size=batch_size):
        pass
    seconds = time.perf_counter() - t0
    return {"dense": gen.dense is not None, "reuse": reuse, "linker_s": round(seconds, 2),
            "docs": len(docs), "mentions": sum(len(d.ents) for d in docs),
            "encoded": getattr(gen.dense, "encoded", None)}


def recall(kb_dir: Path, corpora: List[Path]) -> List[dict]:
    """Candidate recall of gold mentions with and without the name-vector reuse (scored as
    `medllm evaluate-candidates` scores them)."""
    from spacy_medllm.evaluation.candidates import gold_mentions, score_candidates
    from spacy_medllm.kb import CandidateGenerator, KnowledgeBase

    kb = KnowledgeBase.from_disk(kb_dir)
    gen = CandidateGenerator.from_disk(kb_dir / "index", kb)
    rows = []
    for corpus in corpora:
        mentions = gold_mentions(corpus)
        for reuse in (False, True):
            gen.dense.reuse_name_vectors = reuse
            gen._cache.clear()
            gen.dense._cache.clear()
            gen.dense.encoded = 0
            found = gen([m.text for m in mentions], k=30)
            overall = score_candidates(kb, mentions, found, ks=(1, 10, 30))["overall"]
            rows.append({"corpus": str(corpus), "reuse": reuse, "mentions": overall["mentions"], "encoded": gen.dense.encoded,
                         **{f"R@{k}": overall[f"recall@{k}"] for k in (1, 10, 30)}})
            typer.echo(json.dumps(rows[-1]), err=True)
    return rows


@app.command()
def main(
    kb_dir: Path = typer.Argument(..., exists=True, help="A knowledge base folder with its index/ (medllm build-kb or build-dense-index output)"),
    data: Path = typer.Option(..., "--data", exists=True, help="Corpus (.spacy) whose gold spans are linked"),
    train: Path = typer.Option(..., "--train", exists=True, help="Training corpus: 50 abstracts initialize the scorer"),
    recall_on: List[Path] = typer.Option([], "--recall", help="Corpora for the candidate recall check (dense index only)"),
    runs: int = typer.Option(2, "--runs", min=1, help="Fresh processes per setting (interleaved)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    output: Path = typer.Option(Path("metrics/linker_speed"), "--output", help="Folder for linker_speed.json"),
    child: bool = typer.Option(False, "--child", hidden=True),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", hidden=True),
):
    if child:
        print(json.dumps(run_once(kb_dir, data, train, reuse, batch_size)))
        return
    dense = (kb_dir / "index" / "dense" / "dense.json").exists()
    settings = [True, False] if dense else [False]
    results = []
    for i in range(runs):
        for setting in settings:
            cmd = [sys.executable, "-W", "ignore", __file__, str(kb_dir), "--data", str(data), "--train", str(train),
                   "--batch-size", str(batch_size), "--child", "--reuse" if setting else "--no-reuse"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"the linker run failed (exit code {proc.returncode}):\n{proc.stderr[-2000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            typer.echo(f"run {i + 1}/{runs}: {json.dumps(results[-1])}", err=True)
    report = {"kb": str(kb_dir), "data": str(data), "runs": results,
              "recall": recall(kb_dir, recall_on) if dense and recall_on else []}
    output.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output / "linker_speed.json", report)
    typer.echo(f"wrote {output / 'linker_speed.json'}")


if __name__ == "__main__":
    app()
