"""`spacy_medllm.TextCatReduce.v1`: spaCy's TextCatReduce.v1 that takes empty documents.

spaCy's `reduce_max` raises ("all sequence lengths must be > 0") on a batch in which
an empty document sits beside non-empty ones (`TextCategorizer.predict` only guards a
batch of empty documents), so `nlp.pipe(["text", ""])` fails with `use_reduce_max = true`.
This architecture builds exactly spaCy's model (same layers, names and weights: a pipeline
trained with spacy.TextCatReduce.v1 loads with it) and swaps `reduce_max` for one that gives
an empty document a zero vector and no gradient.
"""
from typing import Callable, List, Optional, Tuple

from spacy.ml.models.textcat import build_reduce_text_classifier
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d, Ragged


def safe_reduce_max() -> Model[Ragged, Floats2d]:
    """thinc's reduce_max, with a zero row (and no gradient) for an empty sequence."""
    return Model("reduce_max", _forward)


def _forward(model: Model, Xr: Ragged, is_train: bool) -> Tuple[Floats2d, Callable]:
    ops = model.ops
    lengths = ops.to_numpy(Xr.lengths)
    empty = lengths == 0
    if not empty.any():
        Y, which = ops.reduce_max(Xr.dataXd, Xr.lengths)

        def backprop(dY: Floats2d) -> Ragged:
            return Ragged(ops.backprop_reduce_max(dY, which, Xr.lengths), Xr.lengths)

        return Y, backprop
    keep = ops.xp.asarray((~empty).nonzero()[0])
    width = Xr.dataXd.shape[1]
    Y = ops.alloc2f(len(lengths), width)
    kept_lengths = ops.asarray1i(lengths[~empty])
    which = None
    if len(keep):
        Yk, which = ops.reduce_max(Xr.dataXd, kept_lengths)
        Y[keep] = Yk

    def backprop(dY: Floats2d) -> Ragged:
        if which is None:
            return Ragged(ops.alloc2f(0, width), Xr.lengths)
        return Ragged(ops.backprop_reduce_max(ops.as_contig(dY[keep]), which, kept_lengths), Xr.lengths)

    return Y, backprop


@registry.architectures("spacy_medllm.TextCatReduce.v1")
def build_text_classifier(
    tok2vec: Model[List[Doc], List[Floats2d]], exclusive_classes: bool, use_reduce_first: bool, use_reduce_last: bool,
    use_reduce_max: bool, use_reduce_mean: bool, nO: Optional[int] = None,
) -> Model[List[Doc], Floats2d]:
    """spacy.TextCatReduce.v1 (same arguments) whose max pooling takes empty documents."""
    model = build_reduce_text_classifier(
        tok2vec, exclusive_classes, use_reduce_first, use_reduce_last, use_reduce_max, use_reduce_mean, nO=nO,
    )
    for node in list(model.walk()):
        if node.name == "reduce_max" and node._func is not _forward:
            model.replace_node(node, safe_reduce_max())
    return model
