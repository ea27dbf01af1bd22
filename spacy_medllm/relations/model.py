"""`spacy_medllm.RelationModel.v1` and its swappable pieces.

    tok2vec (shared encoder, usually a transformer listener)
      -> pair representation (`spacy_medllm.PairRepresentation.v1`: mention pooling,
         logsumexp entity pooling, localized context pooling, distance)
      -> classifier (`spacy_medllm.RelationClassifier.v1`: one logit per relation label)

The candidate pairs themselves come from the component's `@misc` instance generator
(`spacy_medllm.type_pairs.v1`), as a `RelBatch`.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import ArgsKwargs, Linear, Model, Relu, chain, torch2xp, xp2torch
from thinc.types import Floats2d

from ..layers.torch_io import module_of, replace_module, wrap_module
from .features import (
    MAX_BETWEEN, N_COUNT_BUCKETS, N_DISTANCE_IDS, N_POSITION_BUCKETS, N_SENTENCE_BUCKETS,
    between, count_bucket, distance_id, position_bucket, sentence_bucket,
)
from .knowledge import N_HIERARCHY, N_KNOWLEDGE, N_PAIR_NEG, N_PAIR_POS, N_RATE
from .pairs import Instances
from .torch_model import PairEncoder


@dataclass
class RelBatch:
    """The candidate pairs of a batch of Docs, as arrays, for the Docs that have any.

    docs: indices (in the batch) of the Docs with at least one pair; per such Doc:
    bounds (M, 2) mention token offsets, members (E, K) mention indices of each entity
    (-1 padded), feats (E, 3) entity label / mention count / first position ids,
    pairs (P, 2) entity indices, distances (P, 2) token-distance and sentence-distance
    ids, between (P, 2) the tokens between the closest mentions of each pair,
    knowledge (P, N_KNOWLEDGE) prior and hierarchy feature ids (`RelationKnowledge`;
    zeros when the component has none).
    """

    docs: List[int] = field(default_factory=list)
    bounds: List[numpy.ndarray] = field(default_factory=list)
    members: List[numpy.ndarray] = field(default_factory=list)
    feats: List[numpy.ndarray] = field(default_factory=list)
    pairs: List[numpy.ndarray] = field(default_factory=list)
    distances: List[numpy.ndarray] = field(default_factory=list)
    between: List[numpy.ndarray] = field(default_factory=list)
    knowledge: List[numpy.ndarray] = field(default_factory=list)

    @property
    def n_pairs(self) -> int:
        return sum(len(p) for p in self.pairs)


def make_batch(instances: Sequence[Instances], entity_labels: Sequence[str], n_label_rows: int) -> RelBatch:
    """Arrays for the model from the instances of each Doc.

    entity_labels: the labels seen in training; label i gets row i + 1, an unknown label
    (or one beyond the table) row 0.
    """
    rows = {label: i + 1 for i, label in enumerate(entity_labels) if i + 1 < n_label_rows}
    batch = RelBatch()
    for d, inst in enumerate(instances):
        if not inst.pairs:
            continue
        width = max(len(e.mentions) for e in inst.entities)
        members = numpy.full((len(inst.entities), width), -1, dtype="int64")
        feats = numpy.zeros((len(inst.entities), 3), dtype="int64")
        for i, ent in enumerate(inst.entities):
            members[i, : len(ent.mentions)] = ent.mentions
            first = min(inst.mentions[m][0] for m in ent.mentions)
            feats[i] = (rows.get(ent.label, 0), count_bucket(len(ent.mentions)), position_bucket(first))
        batch.docs.append(d)
        batch.bounds.append(numpy.asarray(inst.mentions, dtype="int64").reshape(-1, 2))
        batch.members.append(members)
        batch.feats.append(feats)
        batch.pairs.append(numpy.asarray(inst.pairs, dtype="int64").reshape(-1, 2))
        batch.distances.append(numpy.asarray(
            [(distance_id(g, a), sentence_bucket(s)) for g, a, s in zip(inst.gaps, inst.tail_after, inst.sentence_gaps)], dtype="int64"
        ).reshape(-1, 2))
        batch.between.append(numpy.asarray(
            [between(inst.mentions[h], inst.mentions[t]) for h, t in inst.evidence], dtype="int64"
        ).reshape(-1, 2))
        knowledge = inst.knowledge if inst.knowledge is not None else numpy.zeros((len(inst.pairs), N_KNOWLEDGE), dtype="int64")
        batch.knowledge.append(numpy.asarray(knowledge, dtype="int64").reshape(-1, N_KNOWLEDGE))
    return batch


# ---- the whole model -------------------------------------------------------------------------
@registry.architectures("spacy_medllm.RelationModel.v1")
def build_relation_model(
    tok2vec: Model[List[Doc], List[Floats2d]],
    pair_representation: Model[Tuple[List[Floats2d], RelBatch], Floats2d],
    classifier: Model[Floats2d, Floats2d],
) -> Model[Tuple[List[Doc], RelBatch], Floats2d]:
    """Score candidate relations: one logit per (pair, relation label).

    tok2vec (Model[List[Doc], List[Floats2d]]): token vectors, usually a listener of the
        shared transformer.
    pair_representation (Model[Tuple[List[Floats2d], RelBatch], Floats2d]): a vector per
        candidate pair, e.g. `spacy_medllm.PairRepresentation.v1`.
    classifier (Model[Floats2d, Floats2d]): pair vectors to label logits, e.g.
        `spacy_medllm.RelationClassifier.v1`; its output width is set to the number of
        labels when the component is initialized.
    """
    return Model(
        "medllm_relation_model",
        forward,
        init=init,
        layers=[tok2vec, pair_representation, classifier],
        refs={"tok2vec": tok2vec, "pair_representation": pair_representation, "classifier": classifier},
    )


def init(model: Model, X=None, Y=None) -> None:
    """Initialize tok2vec, size the pair representation to its width and the classifier
    to Y's width (the number of labels)."""
    tok2vec = model.get_ref("tok2vec")
    if X is not None:
        tok2vec.initialize(X=X[0])
    else:
        tok2vec.initialize()
    pairs = model.get_ref("pair_representation")
    set_input_width(pairs, tok2vec.get_dim("nO"))
    pairs.initialize()
    sample = model.ops.alloc2f(2, pairs.get_dim("nO"))
    model.get_ref("classifier").initialize(X=sample, Y=Y if Y is not None else model.ops.alloc2f(2, 1))


def forward(model: Model, inputs: Tuple[List[Doc], RelBatch], is_train: bool) -> Tuple[Floats2d, Callable]:
    docs, batch = inputs
    ops = model.ops
    tokvecs, bp_tokvecs = model.get_ref("tok2vec")(docs, is_train)
    classifier = model.get_ref("classifier")
    if batch.n_pairs == 0:
        # still hand zero gradients back, so a shared encoder waiting for its listeners
        # finishes its update
        def backprop_empty(d_logits: Floats2d) -> List[Doc]:
            return bp_tokvecs([ops.alloc2f(*t.shape) for t in tokvecs])

        return ops.alloc2f(0, classifier.get_dim("nO")), backprop_empty
    vectors, bp_vectors = model.get_ref("pair_representation")((tokvecs, batch), is_train)
    logits, bp_logits = classifier(vectors, is_train)

    def backprop(d_logits: Floats2d) -> List[Doc]:
        return bp_tokvecs(bp_vectors(bp_logits(d_logits)))

    return logits, backprop


# ---- pair representation ---------------------------------------------------------------------
@registry.architectures("spacy_medllm.PairRepresentation.v1")
def build_pair_representation(
    hidden_width: int = 128,
    distance_width: int = 16,
    depth: int = 1,
    dropout: float = 0.1,
    n_entity_labels: int = 64,
) -> Model[Tuple[List[Floats2d], RelBatch], Floats2d]:
    """Candidate pairs as vectors: pooled mentions, logsumexp-pooled entities, localized
    context pooling, the words between the closest mentions, entity type/count/position
    and token/sentence distance embeddings (see `PairEncoder`).

    hidden_width (int): width of the token projection, entity and context vectors.
    distance_width (int): width of the distance embedding.
    depth (int): BiLSTM layers over the projected token vectors (0: none).
    dropout (float): dropout on the projected token vectors in training.
    n_entity_labels (int): rows of the entity label table (labels beyond it share row 0).
    RETURNS: a model with output width 4 * hidden_width + distance_width.
    """
    return _pair_model({
        "hidden_width": hidden_width, "distance_width": distance_width, "depth": depth,
        "dropout": dropout, "n_entity_labels": n_entity_labels,
    })


def _pair_model(attrs: dict) -> Model[Tuple[List[Floats2d], RelBatch], Floats2d]:
    encoder = _make_encoder(1, attrs)
    wrapped = wrap_module(
        encoder, name="medllm_pair_representation", build=PairEncoder, convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs, legacy_config=PairEncoder.config_from_state,
    )
    return Model(
        "medllm_pair_representation",
        _pair_forward,
        init=_pair_init,
        layers=[wrapped],
        dims={"nI": None, "nO": encoder.out_width},
        attrs=attrs,
    )


@registry.architectures("spacy_medllm.PairRepresentation.v2")
def build_pair_representation_v2(
    hidden_width: int = 128,
    distance_width: int = 16,
    knowledge_width: int = 32,
    depth: int = 0,
    dropout: float = 0.1,
    n_entity_labels: int = 64,
) -> Model[Tuple[List[Floats2d], RelBatch], Floats2d]:
    """`spacy_medllm.PairRepresentation.v1` plus what the component knows beyond the
    text (`spacy_medllm.relations.knowledge`): embeddings of the pair's prior counts in
    the training relations (documents where it held / did not), of the head's and the
    tail's relation rates, and of the hierarchy flags (a more specific or more general
    co-mentioned concept), summed into a `knowledge_width` vector appended to the pair
    vector. With no prior and no hierarchy (a component initialized without them) the
    features are all zero ids and the vector is a learned constant.

    RETURNS: a model with output width 4 * hidden_width + distance_width + knowledge_width.
    """
    return _pair_model({
        "hidden_width": hidden_width, "distance_width": distance_width, "depth": depth,
        "dropout": dropout, "n_entity_labels": n_entity_labels, "knowledge_width": knowledge_width,
    })


def _make_encoder(width: int, attrs: dict) -> PairEncoder:
    knowledge = (N_PAIR_POS, N_PAIR_NEG, N_HIERARCHY, N_RATE, N_RATE) if attrs.get("knowledge_width") else ()
    return PairEncoder(
        width, attrs["hidden_width"], attrs["n_entity_labels"], N_COUNT_BUCKETS, N_POSITION_BUCKETS,
        N_DISTANCE_IDS, N_SENTENCE_BUCKETS, MAX_BETWEEN, attrs["distance_width"], attrs["depth"], attrs["dropout"],
        knowledge_sizes=knowledge, knowledge_width=int(attrs.get("knowledge_width") or 0),
    )


def set_input_width(model: Model, width: int) -> None:
    """Rebuild the pair encoder for token vectors of `width`.

    A listener's width is known only once the pipeline is initialized. Saved weights
    carry their shapes, so loading needs no call to this (a call is harmless).
    """
    wrapper = model.layers[0]
    if module_of(wrapper).project.in_features != width:
        # on the device of the module it replaces (the one `--gpu-id` chose)
        replace_module(model, wrapper, _make_encoder(width, model.attrs))
    model.set_dim("nI", width, force=True)


def _pair_init(model: Model, X=None, Y=None) -> None:
    if X is not None and X[0]:
        set_input_width(model, X[0][0].shape[1])
    elif model.has_dim("nI"):
        set_input_width(model, model.get_dim("nI"))


def _pair_forward(model: Model, inputs: Tuple[List[Floats2d], RelBatch], is_train: bool) -> Tuple[Floats2d, Callable]:
    return model.layers[0](inputs, is_train)


def _convert_inputs(model: Model, X: Tuple[List[Floats2d], RelBatch], is_train: bool):
    tokvecs, batch = X
    ops = model.ops
    device = model.shims[0].device

    def ints(arrays: List[numpy.ndarray]):
        return [xp2torch(ops.asarray(a, dtype="int64"), device=device) for a in arrays]

    args = (
        [xp2torch(tokvecs[d], requires_grad=is_train, device=device) for d in batch.docs],
        ints(batch.bounds), ints(batch.members), ints(batch.feats), ints(batch.pairs), ints(batch.distances),
        ints(batch.between), ints(batch.knowledge),
    )

    def reverse(d_inputs: ArgsKwargs) -> List[Floats2d]:
        d_tokvecs = [ops.alloc2f(*t.shape) for t in tokvecs]
        for d, grad in zip(batch.docs, d_inputs.args[0]):
            if grad is not None:
                d_tokvecs[d] = torch2xp(grad)
        return d_tokvecs

    return ArgsKwargs(args=args, kwargs={}), reverse


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, vectors = inputs_outputs

    def reverse(d_vectors: Floats2d) -> ArgsKwargs:
        return ArgsKwargs(args=(vectors,), kwargs={"grad_tensors": (xp2torch(d_vectors, device=model.shims[0].device),)})

    return torch2xp(vectors), reverse


# ---- classifier ------------------------------------------------------------------------------
@registry.architectures("spacy_medllm.RelationClassifier.v1")
def build_relation_classifier(hidden_width: int = 128, dropout: float = 0.1) -> Model[Floats2d, Floats2d]:
    """Pair vectors to one logit per relation label: a ReLU layer and a linear output.

    The labels are independent (multi-label): the component applies a sigmoid, trains
    with binary cross-entropy and compares each probability with its label's threshold.
    hidden_width (int): width of the hidden layer.
    dropout (float): dropout after the hidden layer in training.
    """
    return chain(Relu(nO=hidden_width, dropout=dropout), Linear())
