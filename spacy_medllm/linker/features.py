"""`spacy_medllm.linker_features.v1`: the named features `medllm_linker` gives each candidate.

A featurizer is an ordered list of named feature functions; the scorer reads one
column per feature, in that order, so the model's feature width is the number of
features. Each function takes a `CandidateContext` (the mention, the candidate and
the counts the component knows) and returns a float. Slot 0 of every mention is NIL:
all its features are zero but `nil`.

The entity labels and the KB types they correspond to are configuration
(`type_labels`), not code: a corpus whose labels are `Drug` and `Disorder` maps them to
its KB's types there.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy
from spacy.util import registry

from ..errors import Errors
from ..kb.knowledge_base import normalize_alias

# the labels of the BC5CDR-style corpora and the KB types of the same name: the
# default of v1, which is how the component behaved before the mapping was configurable
DEFAULT_TYPE_LABELS: Dict[str, List[str]] = {"Chemical": ["Chemical"], "Disease": ["Disease"]}

NIL_FEATURE = "nil"
# a feature of the candidate in its document, not of the mention alone: the component
# writes its column after the (cached) per-mention features, see `MedLinker._batch`
DOC_SUPPORT_FEATURE = "doc_support"


@dataclass
class CandidateContext:
    """What a feature function may read about one (mention, candidate) pair.

    label: the entity label; key: the normalized text linked (the long form for an
    expanded abbreviation); expanded: whether it was; score, best: the candidate
    generator's score for this candidate and for the best one; slot (1-based) and k:
    the candidate's rank and the number of slots; types: the concept's types;
    canonical_name: the concept's name; prior, total: training counts of concept ids
    for this alias and their sum (the mention's own count left out in training);
    concept_count: training mentions of this concept (own count left out).
    tfidf, dense: the candidate's character 3-gram TF-IDF cosine and dense name-encoder
    cosine (0.0 without a dense index), before the generator merged them into `score`.
    short_exact: for a mention linked through its abbreviation's long form, whether the
    concept also has a name equal to the short form itself (normalized).
    """

    label: str
    key: str
    expanded: bool
    score: float
    best: float
    slot: int
    k: int
    types: frozenset
    canonical_name: str
    prior: int
    total: int
    concept_count: int
    tfidf: float = 0.0
    dense: float = 0.0
    best_dense: float = 0.0
    short_exact: bool = False
    canonical_key: Optional[str] = None  # normalize_alias(canonical_name), where known


FeatureFunction = Callable[[CandidateContext], float]


class LinkerFeatures:
    """Named feature functions, in column order.

    features (Mapping[str, FeatureFunction]): name -> function, in order; the `nil`
        feature (if any) is 1 in slot 0 and the function's value elsewhere.
    """

    def __init__(self, features: Mapping[str, FeatureFunction]):
        self.names: List[str] = list(features)
        self.functions: List[FeatureFunction] = list(features.values())
        self.nil_index: Optional[int] = self.names.index(NIL_FEATURE) if NIL_FEATURE in self.names else None

    def __len__(self) -> int:
        return len(self.names)

    def fill(self, row: numpy.ndarray, ctx: CandidateContext) -> None:
        """Write the features of one candidate into `row` (length len(self))."""
        for i, function in enumerate(self.functions):
            row[i] = function(ctx)

    def fill_nil(self, row: numpy.ndarray) -> None:
        """Write the NIL slot's features into `row`."""
        if self.nil_index is not None:
            row[self.nil_index] = 1.0


def type_features(type_labels: Mapping[str, Sequence[str]]) -> Dict[str, FeatureFunction]:
    """`type_match` and `type_conflict` for a label -> KB types mapping.

    type_match: the concept has a type of the entity's label (a label not in the mapping
    matches the type of the same name). type_conflict: the entity's label is in the
    mapping, the concept has a type of some mapped label, but none of this label's.
    """
    mapped = {label: frozenset(types) for label, types in type_labels.items()}
    all_mapped = frozenset().union(*mapped.values()) if mapped else frozenset()

    def type_match(c: CandidateContext) -> float:
        own = mapped.get(c.label)
        return float(bool(own & c.types)) if own is not None else float(c.label in c.types)

    def type_conflict(c: CandidateContext) -> float:
        own = mapped.get(c.label)
        return float(own is not None and bool(c.types & all_mapped) and not (own & c.types))

    return {"type_match": type_match, "type_conflict": type_conflict}


def base_features(type_labels: Mapping[str, Sequence[str]]) -> Dict[str, FeatureFunction]:
    """All features of v1, in the column order of the pipelines trained before features
    were named."""
    types = type_features(type_labels)
    return {
        "score": lambda c: c.score,
        "exact": lambda c: float(c.score >= 1.0),
        "rank": lambda c: 1.0 - (c.slot - 1) / c.k,
        "type_match": types["type_match"],
        "type_conflict": types["type_conflict"],
        "prior": lambda c: c.prior / c.total if c.total else 0.0,
        "alias_count": lambda c: math.log1p(c.total) / 5,
        "concept_count": lambda c: math.log1p(c.concept_count) / 5,
        "expanded": lambda c: float(c.expanded),
        "score_gap": lambda c: c.score - c.best,
        NIL_FEATURE: lambda c: 0.0,
        "canonical_name": lambda c: float((c.canonical_key if c.canonical_key is not None else normalize_alias(c.canonical_name)) == c.key),
    }


DEFAULT_FEATURES = list(base_features(DEFAULT_TYPE_LABELS))


def generator_features() -> Dict[str, FeatureFunction]:
    """The two scores a generator with a dense index merges, as separate columns (opt-in:
    name them in `features`)."""
    return {"tfidf": lambda c: c.tfidf, "dense": lambda c: c.dense, "dense_gap": lambda c: c.dense - c.best_dense}


def context_features() -> Dict[str, FeatureFunction]:
    """Opt-in features beyond the mention's text (name them in `features`).

    short_exact: the mention was linked through its abbreviation's long form and the
        concept also has the short form as a name.
    doc_support: the concept is the generator's best candidate for another mention of the
        same document with another text (the component fills this column per batch).
    """
    return {"short_exact": lambda c: float(c.short_exact), DOC_SUPPORT_FEATURE: lambda c: 0.0}


@registry.misc("spacy_medllm.linker_features.v1")
def make_linker_features(
    type_labels: Optional[Dict[str, List[str]]] = None,
    features: Optional[List[str]] = None,
) -> LinkerFeatures:
    """The candidate features of `medllm_linker`.

    type_labels (Optional[Dict[str, List[str]]]): entity label -> the KB types it
        corresponds to (None: Chemical -> Chemical, Disease -> Disease).
    features (Optional[List[str]]): the names of the features to use, in column order
        (None: all twelve: score, exact, rank, type_match, type_conflict, prior,
        alias_count, concept_count, expanded, score_gap, nil, canonical_name). Also known,
        for a generator with a dense index: tfidf, dense, dense_gap (the candidate's dense
        cosine minus the best one's); and short_exact, doc_support (`context_features`).
    RETURNS (LinkerFeatures): the featurizer; its length is the scorer's feature width.
    """
    known = base_features(DEFAULT_TYPE_LABELS if type_labels is None else type_labels)
    names = list(known) if features is None else list(features)
    known.update(generator_features())
    known.update(context_features())
    for name in names:
        if name not in known:
            raise ValueError(Errors.E135.format(name="medllm_linker", feature=name, featurizer="spacy_medllm.linker_features.v1", known=", ".join(known)))
    return LinkerFeatures({name: known[name] for name in names})
