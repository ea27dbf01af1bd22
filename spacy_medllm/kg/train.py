"""Knowledge graph embeddings with PyKEEN: train, score on held-out triples, export.

`train_kg` wraps `pykeen.pipeline.pipeline`: TransE by default (any PyKEEN model by
name), a held-out split of the triples (validation for early stopping, test for the
reported filtered MRR and Hits@1/3/10, overall and per relation), a fixed seed, CPU
by default. The entity embeddings are exported as an `EmbeddingTable` keyed by
entity id (KB concept ids). `umls_benchmark` trains the same model on PyKEEN's
built-in UMLS benchmark as a sanity anchor for the numbers.

PyKEEN writes checkpoints and data sets under `PYKEEN_HOME`; `set_pykeen_home` points
it away from the home folder and must run before pykeen is first imported (the
functions here call it themselves).
"""
import contextlib
import gc
import inspect
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy

from ..errors import Errors
from .build import Triple, read_triples
from .embeddings import EmbeddingTable

logger = logging.getLogger("spacy_medllm")

METRICS = {
    "mrr": "inverse_harmonic_mean_rank",
    "hits@1": "hits_at_1",
    "hits@3": "hits_at_3",
    "hits@10": "hits_at_10",
}


def set_pykeen_home(path: Optional[Union[str, Path]] = None) -> Path:
    """Set `PYKEEN_HOME` (to `path`, else keep the environment's, else a temp folder).

    PyKEEN reads it once, at import; by default it would create `~/.data/pykeen`.
    RETURNS (Path): the folder PyKEEN will use.
    """
    if path is not None:
        os.environ["PYKEEN_HOME"] = str(path)
    elif not os.environ.get("PYKEEN_HOME"):
        os.environ["PYKEEN_HOME"] = str(Path(tempfile.gettempdir()) / "spacy_medllm_pykeen")
    return Path(os.environ["PYKEEN_HOME"])


@contextlib.contextmanager
def _frozen_gc():
    """PyKEEN runs a full `gc.collect()` after every epoch; with torch and spaCy loaded
    that walks millions of objects (~0.5 s an epoch here, longer than a whole epoch
    of a 100k-triple graph). Objects alive before training are moved out of the
    collector's reach for the duration. torch's optimizers import torch._dynamo on
    first use: import it first so that its objects are frozen too."""
    import torch._dynamo  # noqa: F401

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass
class KGTrainResult:
    """What `train_kg` returns: the exported table, the metrics and the trained PyKEEN model."""

    table: EmbeddingTable
    metrics: Dict[str, Any]
    model: Any
    triples_factory: Any

    def predict_tails(self, head: str, relation: str, k: int = 10) -> List[Tuple[str, float]]:
        """The `k` best-scored tails of (head, relation, ?), best first: (entity id, score)."""
        import torch

        tf = self.triples_factory
        hr = torch.tensor([[tf.entity_to_id[head], tf.relation_to_id[relation]]], dtype=torch.long)
        self.model.eval()
        with torch.no_grad():
            scores = self.model.score_t(hr)[0].cpu().numpy()
        order = numpy.argsort(-scores)[:k]
        labels = tf.entity_id_to_label
        return [(labels[int(i)], float(scores[i])) for i in order]


def relation_group(label: str) -> str:
    """Relations scored together: the semantic network's 46 small relations as one `semnet:*`."""
    return label.split(":", 1)[0] + ":*" if ":" in label else label


def _metrics(metric_results: Any, side: str = "both") -> Dict[str, float]:
    flat = metric_results.to_flat_dict()
    return {name: round(float(flat[f"{side}.realistic.{key}"]), 4) for name, key in METRICS.items()}


def train_kg(
    triples: Union[str, Path, Sequence[Triple]],
    *,
    model: str = "TransE",
    embedding_dim: int = 64,
    num_epochs: int = 200,
    batch_size: int = 1024,
    learning_rate: float = 0.005,
    negatives: int = 4,
    scoring_norm: Optional[int] = 2,
    heldout: Union[float, Sequence[Triple]] = 0.02,
    max_validation: Optional[int] = 1000,
    seed: int = 0,
    device: str = "cpu",
    early_stopping: bool = True,
    eval_every: int = 10,
    patience: int = 3,
    relative_delta: float = 0.002,
    per_relation: bool = True,
    model_kwargs: Optional[Dict[str, Any]] = None,
    progress: bool = False,
) -> KGTrainResult:
    """Train a PyKEEN model on `triples` and export its entity embeddings.

    triples (Union[Path, Sequence[Triple]]): a triples TSV (`medllm build-kg`) or the triples.
    model (str): a PyKEEN model name ("TransE", "RotatE", "DistMult", ...).
    embedding_dim (int): entity / relation dimension.
    num_epochs (int): the most epochs; early stopping may end sooner.
    negatives (int): corrupted triples per true triple (PyKEEN's basic negative sampler).
    scoring_norm (Optional[int]): p of the L_p distance for models that have one
        (PyKEEN's default is 1; on the MeSH / MEDIC graph, L2 with learning rate 0.005
        more than doubled the validation MRR of L1 with 0.01); ignored by other models;
        None: PyKEEN's default.
    heldout (Union[float, Sequence[Triple]]): fraction of the triples held out for
        validation and, as much again, for the test score; or explicit test triples
        (then validation, if early stopping, is split off the rest).
    max_validation (Optional[int]): at most this many validation triples (None: as many
        as the test triples).
    seed (int): PyKEEN's random seed and the split's random state.
    device (str): "cpu" (default) or "cuda".
    early_stopping (bool): stop when the validation MRR, computed every `eval_every`
        epochs, has not improved by `relative_delta` for `patience` evaluations; the
        best weights are restored.
    per_relation (bool): also score the test triples of each relation (the semantic
        network's as one group) separately; this evaluates the test triples a second time.
    RETURNS (KGTrainResult): the embedding table (ids = entity labels) with metadata,
        the metrics, the PyKEEN model and triples factory.
    """
    set_pykeen_home()
    from pykeen.pipeline import pipeline

    model_cls = _model_class(model)
    source = str(triples) if isinstance(triples, (str, Path)) else "<triples>"
    labeled = read_triples(triples) if isinstance(triples, (str, Path)) else [tuple(t) for t in triples]
    if not labeled:
        raise ValueError(Errors.E022.format(path=source))
    split = _split(labeled, heldout, early_stopping=early_stopping, max_validation=max_validation, seed=seed)
    kwargs: Dict[str, Any] = {"embedding_dim": embedding_dim}
    if scoring_norm is not None and "scoring_fct_norm" in inspect.signature(model_cls.__init__).parameters:
        kwargs["scoring_fct_norm"] = scoring_norm
    kwargs.update(model_kwargs or {})
    stopper_kwargs = dict(frequency=eval_every, patience=patience, relative_delta=relative_delta, metric="inverse_harmonic_mean_rank")
    t0 = time.perf_counter()
    with _frozen_gc(), warnings.catch_warnings():
        # PyKEEN asks its DataLoader for pinned memory, which CPU-only torch declines with a warning
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        result = pipeline(
            training=split.training,
            validation=split.validation,
            testing=split.testing,
            model=model_cls,
            model_kwargs=kwargs,
            optimizer="Adam",
            optimizer_kwargs={"lr": learning_rate},
            negative_sampler_kwargs={"num_negs_per_pos": negatives},
            training_kwargs={"num_epochs": num_epochs, "batch_size": batch_size, "use_tqdm": progress, "use_tqdm_batch": False},
            stopper="early" if early_stopping else None,
            stopper_kwargs=stopper_kwargs if early_stopping else None,
            evaluation_kwargs={"use_tqdm": progress},
            random_seed=seed,
            device=device,
            use_tqdm=progress,
        )
    seconds = time.perf_counter() - t0
    trained = result.model
    metrics = _train_metrics(result, split, early_stopping=early_stopping, seconds=seconds)
    if per_relation:
        metrics["heldout_by_relation"] = _metrics_by_relation(trained, split)
    vectors = _entity_vectors(trained)
    labels = split.full.entity_id_to_label
    ids = [labels[i] for i in range(split.full.num_entities)]
    meta = {
        "model": model_cls.__name__,
        "dimension": int(vectors.shape[1]),
        "embedding_dim": embedding_dim,
        "epochs": metrics["epochs"],
        "max_epochs": num_epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "negatives": negatives,
        **_table_meta(kwargs, seed, heldout, split, metrics, source),
    }
    logger.info("%s: held-out MRR %.3f, Hits@10 %.3f after %d epochs (%.0f s)", model_cls.__name__, metrics["heldout"]["mrr"], metrics["heldout"]["hits@10"], metrics["epochs"], seconds)
    return KGTrainResult(EmbeddingTable(vectors, ids, meta), metrics, trained, split.full)


def _model_class(name: str) -> Any:
    """The PyKEEN model class of `name` (E023 for an unknown one)."""
    from pykeen.models import model_resolver

    try:
        return model_resolver.lookup(name)
    except (KeyError, ValueError) as err:
        raise ValueError(Errors.E023.format(name=name, reason=err)) from None


@dataclass
class _Split:
    """The triples factories of a training run; `explicit`: the test triples were given."""

    full: Any
    training: Any
    validation: Any
    testing: Any
    explicit: bool


def _split(
    labeled: List[Tuple[str, ...]], heldout: Union[float, Sequence[Triple]], *, early_stopping: bool,
    max_validation: Optional[int], seed: int,
) -> _Split:
    """Training, validation and test triples: a random split by the `heldout` fraction, or
    the given test triples (validation, if early stopping, split off the rest)."""
    from pykeen.triples import TriplesFactory

    if not isinstance(heldout, (int, float)):
        test_set = {tuple(t) for t in heldout}
        rest = [t for t in labeled if t not in test_set]
        full = TriplesFactory.from_labeled_triples(numpy.array(rest + sorted(test_set), dtype=str))
        training = TriplesFactory.from_labeled_triples(
            numpy.array(rest, dtype=str), entity_to_id=full.entity_to_id, relation_to_id=full.relation_to_id
        )
        testing = TriplesFactory.from_labeled_triples(
            numpy.array(sorted(test_set), dtype=str), entity_to_id=full.entity_to_id, relation_to_id=full.relation_to_id
        )
        validation = testing
        if early_stopping:
            training, validation = training.split([0.95, 0.05], random_state=seed)
        return _Split(full, training, validation, testing, explicit=True)
    if not 0.0 < float(heldout) <= 0.5:
        raise ValueError(Errors.E024.format(value=heldout))
    h = float(heldout)
    full = TriplesFactory.from_labeled_triples(numpy.array(labeled, dtype=str))
    # early stopping scores the validation triples every `eval_every` epochs against
    # every entity: capped, so that on a large graph it does not outweigh training
    v = min(h, max_validation / len(labeled)) if max_validation else h
    training, validation, testing = full.split([1.0 - h - v, v, h], random_state=seed)
    return _Split(full, training, validation, testing, explicit=False)


def _train_metrics(result: Any, split: _Split, *, early_stopping: bool, seconds: float) -> Dict[str, Any]:
    """Held-out scores (both sides, tail, head), triple counts, epochs, loss and time."""
    return {
        "heldout": _metrics(result.metric_results),
        "heldout_tail": _metrics(result.metric_results, "tail"),
        "heldout_head": _metrics(result.metric_results, "head"),
        "triples": {
            "training": split.training.num_triples,
            "validation": split.validation.num_triples if not split.explicit or early_stopping else 0,
            "testing": split.testing.num_triples,
        },
        "epochs": len(result.losses),
        "best_epoch": getattr(result.stopper, "best_epoch", None),
        "final_loss": round(float(result.losses[-1]), 5) if result.losses else None,
        "train_seconds": round(float(result.train_seconds), 1),
        "seconds": round(seconds, 1),
    }


def _metrics_by_relation(trained: Any, split: _Split) -> Dict[str, Any]:
    """The held-out scores of each relation (the semantic network's as one group), filtered
    by every known triple; this evaluates the test triples a second time."""
    import torch
    from pykeen.evaluation import RankBasedEvaluator

    evaluator = RankBasedEvaluator()
    filters = [split.training.mapped_triples, split.validation.mapped_triples, split.testing.mapped_triples]
    by_relation: Dict[str, Any] = {}
    mapped = split.testing.mapped_triples
    groups: Dict[str, List[int]] = {}
    for label, rid in split.testing.relation_to_id.items():
        groups.setdefault(relation_group(label), []).append(rid)
    for group, rids in sorted(groups.items()):
        subset = mapped[torch.isin(mapped[:, 1], torch.tensor(rids))]
        if len(subset) == 0:
            continue
        res = evaluator.evaluate(trained, subset, additional_filter_triples=filters, use_tqdm=False)
        by_relation[group] = dict(_metrics(res), n=int(len(subset)))
    return by_relation


def _table_meta(
    kwargs: Dict[str, Any], seed: int, heldout: Union[float, Sequence[Triple]], split: _Split, metrics: Dict[str, Any], source: str,
) -> Dict[str, Any]:
    """The rest of the embedding table's metadata: model arguments, seed, split, relations,
    metrics, PyKEEN version and the triples' source."""
    from pykeen.version import get_version

    return {
        "model_kwargs": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))},
        "seed": seed,
        "heldout": heldout if not split.explicit else len(split.testing.mapped_triples),
        "relations": sorted(split.full.relation_to_id),
        "metrics": {k: metrics[k] for k in ("heldout", "heldout_tail", "heldout_head", "triples", "best_epoch")},
        "pykeen_version": get_version(),
        "source": source,
    }


def _entity_vectors(trained: Any) -> numpy.ndarray:
    """The entity vectors as the model scores them (normalized for TransE; complex ones as
    real and imaginary parts), float32, one row per entity id."""
    import torch

    trained.eval()
    with torch.no_grad():
        vectors = trained.entity_representations[0](indices=None).detach().cpu()
    if torch.is_complex(vectors):
        vectors = torch.view_as_real(vectors)
    return vectors.reshape(vectors.shape[0], -1).numpy().astype("float32")


def umls_benchmark(
    *,
    model: str = "TransE",
    embedding_dim: int = 128,
    num_epochs: int = 200,
    batch_size: int = 256,
    learning_rate: float = 0.01,
    seed: int = 42,
    device: str = "cpu",
    progress: bool = False,
) -> Dict[str, Any]:
    """Filtered MRR and Hits@k of `model` on PyKEEN's UMLS benchmark (ships with PyKEEN, no download).

    Untuned, with the settings that give MRR about 0.57 for TransE; a number far below
    that means the training set-up is broken, not the graph.
    """
    set_pykeen_home()
    from pykeen.datasets import UMLS
    from pykeen.pipeline import pipeline

    t0 = time.perf_counter()
    with _frozen_gc(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        result = pipeline(
            dataset=UMLS(),
            model=model,
            model_kwargs={"embedding_dim": embedding_dim},
            optimizer="Adam",
            optimizer_kwargs={"lr": learning_rate},
            training_kwargs={"num_epochs": num_epochs, "batch_size": batch_size, "use_tqdm": progress, "use_tqdm_batch": False},
            evaluation_kwargs={"use_tqdm": progress},
            random_seed=seed,
            device=device,
            use_tqdm=progress,
        )
    return {
        "dataset": "UMLS (PyKEEN)",
        "model": model,
        "embedding_dim": embedding_dim,
        "epochs": num_epochs,
        "test": _metrics(result.metric_results),
        "seconds": round(time.perf_counter() - t0, 1),
    }
