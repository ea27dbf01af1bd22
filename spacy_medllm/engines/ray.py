"""`medllm annotate --engine ray`: the same pipeline over a Ray Data dataset, with an actor pool.

Each actor loads the pipeline (`model`: a package name installed on every node, or a path
every node can read) once per window: a pool of `workers` actors serves each window of
`window` documents, so with the default 10,000 the load is a few seconds per actor in
every ~10,000 documents and annotates batches of documents (`Dataset.map_batches` with a
callable class, `concurrency=workers`, `num_gpus` per actor where the cluster has GPUs, the
pipeline then on the GPU). The driver reads the input with the local engine's readers (the
same ids, the same corrupt-record handling), feeds the pool in windows of `window`
documents (a million notes never sit in memory at once), each row of the dataset one batch
of `batch_size` documents, the batch the local engine would form (so the same padding and
the same records), and writes each record as it comes back, in input order, flushed: the output and `--resume` are the local engine's
(`engines.local.write_records`), so a run can be continued with either engine.

`address`: None starts a local Ray instance on this machine (loopback, no dashboard) unless
one is already running in this process; "auto" joins the cluster this node belongs to;
"ray://HOST:10001" connects to a remote cluster through Ray Client. Ray is an optional
extra: `pip install spacy_medllm[ray]`.
"""
import json
import os
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

from ..errors import Errors
from ..evaluation.metrics import peak_rss_mb
from .local import AnnotateSummary, check_output, write_records
from .records import doc_record, free_tensors, runs_context


class Annotator:
    """One Ray actor: a loaded pipeline that turns batches of (id, text) into records."""

    def __init__(self, model: str, with_text: bool, gpu: bool, threads: int) -> None:
        import spacy
        import torch

        torch.set_num_threads(max(1, threads))
        if gpu:
            spacy.require_gpu()
        self.nlp = free_tensors(spacy.load(model))
        self.with_text = with_text
        self.context = runs_context(self.nlp)

    def __call__(self, rows: Dict[str, object]) -> Dict[str, object]:
        """Each row is one pipeline batch, [[id, text], ...] as JSON: the documents the local
        engine would batch together, so padding and results are the local engine's."""
        import numpy

        out = []
        for row in rows["batch"]:
            items = json.loads(str(row))
            records, words = [], []
            for doc, doc_id in self.nlp.pipe(((t, i) for i, t in items), as_tuples=True, batch_size=max(1, len(items))):
                records.append(doc_record(doc_id, doc, text=self.with_text, context=self.context))
                words.append(len(doc))
            out.append(json.dumps({"records": records, "words": words}, ensure_ascii=False))
        rss = peak_rss_mb() or 0.0
        return {"result": numpy.array(out, dtype=object), "pid": numpy.full(len(out), os.getpid()),
                "rss_mb": numpy.full(len(out), rss)}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(Errors.E149) from None
    return ray


def start(address: Optional[str] = None) -> bool:
    """Connect to Ray (see the module docstring); RETURNS whether this call started it."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return True


def annotate(
    model: Union[str, Path], input_path: Union[str, Path], output: Union[str, Path], *, batch_size: int = 32,
    workers: int = 1, address: Optional[str] = None, gpus_per_worker: Optional[float] = None,
    cpus_per_worker: Optional[float] = None, window: int = 10000, on_error: str = "skip", resume: bool = False,
    force: bool = False, with_text: bool = False, progress: bool = True, report: Optional[Callable[[str], None]] = None,
    **read_options,
) -> AnnotateSummary:
    """Annotate every record of `input_path` into the JSONL file `output` with `workers`
    Ray actors, each holding the pipeline `model`; see the module docstring.

    gpus_per_worker: GPUs per actor (default: 1 where the cluster has GPUs, else 0).
    cpus_per_worker: CPUs per actor (default: on a local instance, this machine's cores
        shared among the workers; on a cluster, 1).
    window: documents handed to the actor pool at a time (rounded up to whole batches).
    """
    if not isinstance(model, (str, Path)):
        raise TypeError(Errors.E150.format(model=type(model).__name__))
    if workers < 1 or window < 1 or batch_size < 1:
        raise ValueError(Errors.E151.format(workers=workers, window=window, batch_size=batch_size))
    input_path, output = Path(input_path), Path(output)
    check_output(input_path, output, resume=resume, force=force)
    import spacy

    if Path(model).exists():
        model = str(Path(model).resolve())
    elif address is None and not spacy.util.is_package(str(model)):  # a cluster's nodes may have packages this one lacks
        raise FileNotFoundError(Errors.E152.format(model=model))
    model = str(model)
    ray = _import_ray()
    started = start(address)
    try:
        cluster = ray.cluster_resources()
        if gpus_per_worker is None:  # one GPU per actor, shared when there are more actors than GPUs
            gpus_per_worker = min(1.0, float(cluster.get("GPU", 0)) / workers)
        if cpus_per_worker is None:
            cpus_per_worker = max(1.0, float(cluster.get("CPU", 1)) // workers) if address is None else 1.0
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # records come back in input order
        context.enable_progress_bars = False  # the driver's bar counts documents
        summary_workers: Dict[str, object] = {"workers": workers, "cpus_per_worker": cpus_per_worker,
                                              "gpus_per_worker": gpus_per_worker, "address": address or "local"}
        rss: Dict[int, float] = {}  # actor process -> its peak RSS (MB)

        per_window = -(-window // batch_size) * batch_size  # whole pipeline batches

        def run(todo: Iterator[Tuple[str, str]]) -> Iterator[Tuple[Dict[str, object], int]]:
            while True:
                docs = [(doc_id, text) for text, doc_id in islice(todo, per_window)]
                if not docs:
                    return
                rows = [{"batch": json.dumps(docs[i : i + batch_size], ensure_ascii=False)} for i in range(0, len(docs), batch_size)]
                ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 8 * workers)).map_batches(
                    Annotator, batch_size=1, concurrency=workers, num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                    fn_constructor_kwargs={"model": model, "with_text": with_text, "gpu": gpus_per_worker > 0,
                                           "threads": int(cpus_per_worker)},
                )
                for row in ds.iter_rows():
                    rss[int(row["pid"])] = max(float(row["rss_mb"]), rss.get(int(row["pid"]), 0.0))
                    result = json.loads(row["result"])
                    yield from zip(result["records"], result["words"])

        try:
            summary = write_records(input_path, output, run=run, engine="ray", on_error=on_error, resume=resume, force=force,
                                    progress=progress, report=report, **read_options)
        except ray.exceptions.RayError as err:  # an actor failed (e.g. the pipeline does not load on a node)
            raise RuntimeError(Errors.E153.format(output=output, error=str(err).strip().splitlines()[-1][:500])) from err
        summary.workers = {**summary_workers, "actors_started": len(rss),
                           "actor_peak_rss_mb": round(max(rss.values()), 1) if rss else None}
        return summary
    finally:
        if started:
            ray.shutdown()
