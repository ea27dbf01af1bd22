"""`spacy_medllm.LinkerModel.v1`: tok2vec -> mention pooling -> candidate scorer."""
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.types import Floats2d, Floats3d, Ints2d

from ..layers.torch_io import module_of, replace_module, wrap_module
from .torch_scorer import CandidateScorer


@dataclass
class LinkerBatch:
    """The mentions of a batch of Docs and their candidates, as arrays.

    spans: (doc index, start token, end token) per mention.
    feats: (mentions, slots, features); slot 0 is NIL.
    rows: (mentions, slots) hashed concept rows; mask: which slots are real.
    """

    spans: List[Tuple[int, int, int]]
    feats: Floats3d
    rows: Ints2d
    mask: numpy.ndarray


@registry.architectures("spacy_medllm.LinkerModel.v1")
def build_linker_model(
    tok2vec: Model[List[Doc], List[Floats2d]],
    n_features: Optional[int] = 12,
    hidden_width: int = 64,
    n_concept_rows: int = 65536,
    n_heads: int = 1,
) -> Model[Tuple[List[Doc], LinkerBatch], Floats2d]:
    """Score the KB candidates of each mention.

    tok2vec (Model[List[Doc], List[Floats2d]]): token vectors, usually a listener of
        the shared transformer.
    n_features (Optional[int]): width of the per-candidate feature vector; None: the
        component sets it to its featurizer's number of features.
    hidden_width (int): width of the feature MLP and of the mention/concept space.
    n_concept_rows (int): rows of the hashed concept-id table.
    n_heads (int): feature MLPs trained side by side, each on its own loss, their
        log-probabilities averaged in prediction (an ensemble; 1: one MLP).
    """
    scorer = _wrap(_scorer(tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else 1, n_features, hidden_width, n_concept_rows, n_heads))
    return Model(
        "medllm_linker_model",
        forward,
        init=init,
        layers=[tok2vec, scorer],
        refs={"tok2vec": tok2vec, "scorer": scorer},
        attrs={"hidden_width": hidden_width, "n_features": n_features, "n_concept_rows": n_concept_rows},
    )


@registry.architectures("spacy_medllm.LinkerModel.v2")
def build_linker_model_v2(
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]] = None,
    n_features: Optional[int] = 12,
    hidden_width: int = 64,
    n_concept_rows: int = 65536,
    n_heads: int = 1,
) -> Model[Tuple[List[Doc], LinkerBatch], Floats2d]:
    """Score the KB candidates of each mention; the encoder is optional.

    Without `tok2vec` the model reads the per-candidate string, type, prior and
    abbreviation features alone: it needs no encoder, so it adds almost nothing to
    a pipeline's time and trains in minutes on CPU. With `tok2vec` it is v1.

    tok2vec (Optional[Model[List[Doc], List[Floats2d]]]): token vectors (a listener of
        the shared transformer), or None for the features-only scorer.
    n_features (Optional[int]): width of the per-candidate feature vector; None: the
        component sets it to its featurizer's number of features.
    hidden_width (int): width of the feature MLP and of the mention/concept space.
    n_concept_rows (int): rows of the hashed concept-id table (context term only).
    n_heads (int): feature MLPs trained side by side, each on its own loss (each
        initialized apart), their log-probabilities averaged in prediction: an ensemble
        that evens out what one training's initialization and dropout draw; 1: one MLP.
    """
    if tok2vec is not None:
        return build_linker_model(tok2vec, n_features, hidden_width, n_concept_rows, n_heads)
    scorer = _wrap(_scorer(0, n_features, hidden_width, n_concept_rows, n_heads))
    return Model(
        "medllm_linker_model",
        forward_features,
        layers=[scorer],
        refs={"scorer": scorer},
        attrs={"hidden_width": hidden_width, "n_features": n_features, "n_concept_rows": n_concept_rows},
    )


def _scorer(width: int, n_features: Optional[int], hidden_width: int, n_concept_rows: int, n_heads: int = 1) -> CandidateScorer:
    if n_features is not None:
        return CandidateScorer(width, n_features, hidden_width, n_concept_rows, n_heads)
    import torch

    # a placeholder until the component sets the width; drawn aside, so that the real
    # module gets the random initialization it would have had in the model's place
    with torch.random.fork_rng(devices=[]):
        return CandidateScorer(width, 1, hidden_width, n_concept_rows, n_heads)


def _wrap(module: CandidateScorer) -> Model:
    return wrap_module(
        module, name="medllm_linker_model", build=CandidateScorer, convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs, legacy_config=CandidateScorer.config_from_state,
    )


def init(model: Model, X=None, Y=None) -> None:
    tok2vec = model.get_ref("tok2vec")
    if X is not None:
        tok2vec.initialize(X=X[0])
    else:
        tok2vec.initialize()
    set_input_width(model, tok2vec.get_dim("nO"))


def input_width(model: Model) -> int:
    """The width of the token vectors the model reads (0: features only)."""
    return int(model.get_ref("tok2vec").get_dim("nO")) if model.has_ref("tok2vec") else 0


def set_input_width(model: Model, width: int) -> None:
    """Rebuild the torch scorer for token vectors of `width`.

    A listener's width is known only once the pipeline is initialized. Saved weights
    carry their shapes, so loading a pipeline needs no call to this.
    """
    scorer = model.get_ref("scorer")
    current = module_of(scorer)
    if current.width != width:
        attrs = model.attrs
        replace_module(model, scorer, CandidateScorer(width, attrs["n_features"], attrs["hidden_width"], attrs["n_concept_rows"], current.n_heads))


def set_feature_width(model: Model, n_features: int) -> None:
    """Rebuild the torch scorer for `n_features` features per candidate (the component's
    featurizer decides; a model config with `n_features = null` leaves it to it)."""
    model.attrs["n_features"] = n_features
    scorer = model.get_ref("scorer")
    current = module_of(scorer)
    if current.config["n_features"] != n_features:
        attrs = model.attrs
        replace_module(model, scorer, CandidateScorer(current.width, n_features, attrs["hidden_width"], attrs["n_concept_rows"], current.n_heads))


def forward(model: Model, inputs: Tuple[List[Doc], LinkerBatch], is_train: bool) -> Tuple[Floats2d, Callable]:
    docs, batch = inputs
    ops = model.ops
    tokvecs, bp_tokvecs = model.get_ref("tok2vec")(docs, is_train)
    if not batch.spans:
        # no mention: zero gradients still go back, so that a shared encoder whose last
        # listener this is finishes its update (the other listeners' gradients included)
        def backprop_empty(d_logits: Floats2d) -> List[Doc]:
            return bp_tokvecs([ops.alloc2f(*t.shape) for t in tokvecs])

        return ops.alloc2f(0, batch.feats.shape[1]), backprop_empty
    width = tokvecs[0].shape[1] if tokvecs else 1
    pooled = ops.alloc2f(len(batch.spans), width)
    for i, (d, start, end) in enumerate(batch.spans):
        pooled[i] = tokvecs[d][start:end].mean(axis=0)
    logits, bp_scorer = model.get_ref("scorer")((pooled, batch), is_train)

    def backprop(d_logits: Floats2d) -> List[Doc]:
        d_pooled = bp_scorer(d_logits)
        d_tokvecs = [ops.alloc2f(*t.shape) for t in tokvecs]
        for i, (d, start, end) in enumerate(batch.spans):
            d_tokvecs[d][start:end] += d_pooled[i] / (end - start)
        return bp_tokvecs(d_tokvecs)

    return logits, backprop


def forward_features(model: Model, inputs: Tuple[List[Doc], LinkerBatch], is_train: bool) -> Tuple[Floats2d, Callable]:
    docs, batch = inputs
    if not batch.spans:
        return model.ops.alloc2f(0, batch.feats.shape[1]), lambda d_logits: docs
    pooled = model.ops.alloc2f(len(batch.spans), 0)
    logits, bp_scorer = model.get_ref("scorer")((pooled, batch), is_train)

    def backprop(d_logits: Floats2d) -> List[Doc]:
        bp_scorer(d_logits)
        return docs

    return logits, backprop


def _convert_inputs(model: Model, X, is_train: bool):
    pooled, batch = X
    device = model.shims[0].device
    with_context = pooled.shape[1] > 0
    args = (
        xp2torch(pooled, requires_grad=is_train and with_context, device=device),
        xp2torch(model.ops.asarray(batch.feats, dtype="float32"), device=device),
        xp2torch(model.ops.asarray(batch.rows, dtype="int64"), device=device),
        xp2torch(model.ops.asarray(batch.mask, dtype="bool"), device=device),
    )

    def reverse(d_inputs: ArgsKwargs):
        return torch2xp(d_inputs.args[0]) if with_context else None

    return ArgsKwargs(args=args, kwargs={}), reverse


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, logits = inputs_outputs

    def reverse(d_logits):
        return ArgsKwargs(args=(logits,), kwargs={"grad_tensors": (xp2torch(d_logits, device=model.shims[0].device),)})

    return torch2xp(logits), reverse
