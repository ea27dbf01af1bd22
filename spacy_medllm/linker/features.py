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
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

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
    top_types: the types of the generator's best candidate (slot 1), whose MeSH tree
    numbers the hierarchy features compare this candidate's with.
    best_prior, best_count: the largest `prior` and `concept_count` among the mention's
    candidates (the convention features compare this candidate's with).
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
    top_types: frozenset = frozenset()
    best_prior: int = 0
    best_count: int = 0


FeatureFunction = Callable[[CandidateContext], float]


@dataclass
class BlockContext:
    """What `CandidateContext` holds, for all candidates of one mention at once: the
    per-candidate values as arrays (candidate order), the mention's as scalars.
    canonical_match: the concept's normalized canonical name is `key`."""

    label: str
    key: str
    expanded: bool
    best: float
    k: int
    total: int
    best_dense: float
    score: numpy.ndarray
    slot: numpy.ndarray
    types: List[frozenset]
    canonical_match: numpy.ndarray
    prior: numpy.ndarray
    concept_count: numpy.ndarray
    tfidf: numpy.ndarray
    dense: numpy.ndarray
    short_exact: numpy.ndarray


# the same feature for all candidates of a mention at once: one value per candidate
BlockFunction = Callable[[BlockContext], object]


class LinkerFeatures:
    """Named feature functions, in column order.

    features (Mapping[str, FeatureFunction]): name -> function, in order; the `nil`
        feature (if any) is 1 in slot 0 and the function's value elsewhere.
    blocks (Mapping[str, BlockFunction]): for some of the names, the same feature computed for
        all candidates of a mention at once (the same values); when every feature has one,
        `fill_block` uses them.
    type_labels (Mapping[str, Sequence[str]]): entity label -> the KB types it corresponds to
        (None: a label corresponds to the type of the same name).
    """

    def __init__(self, features: Mapping[str, FeatureFunction], blocks: Optional[Mapping[str, BlockFunction]] = None,
                 type_labels: Optional[Mapping[str, Sequence[str]]] = None):
        self.type_labels: Dict[str, frozenset] = {k: frozenset(v) for k, v in (type_labels or {}).items()}
        self.names: List[str] = list(features)
        self.functions: List[FeatureFunction] = list(features.values())
        self.nil_index: Optional[int] = self.names.index(NIL_FEATURE) if NIL_FEATURE in self.names else None
        blocks = blocks or {}
        self.blocks: Optional[List[BlockFunction]] = [blocks[n] for n in self.names] if all(n in blocks for n in self.names) else None

    def __len__(self) -> int:
        return len(self.names)

    def types_of(self, label: str) -> frozenset:
        """The KB types an entity label corresponds to."""
        return self.type_labels.get(label, frozenset([label]))

    def fill(self, row: numpy.ndarray, ctx: CandidateContext) -> None:
        """Write the features of one candidate into `row` (length len(self))."""
        for i, function in enumerate(self.functions):
            row[i] = function(ctx)

    def fill_block(self, rows: numpy.ndarray, block: BlockContext) -> None:
        """Write the features of all candidates of a mention into `rows` (candidates x len(self));
        only when `self.blocks` is set."""
        for i, function in enumerate(self.blocks):
            rows[:, i] = function(block)

    def fill_nil(self, row: numpy.ndarray) -> None:
        """Write the NIL slot's features into `row`."""
        if self.nil_index is not None:
            row[self.nil_index] = 1.0


def block_features(type_labels: Mapping[str, Sequence[str]]) -> Dict[str, BlockFunction]:
    """Every built-in feature computed for all candidates of a mention at once: the values of
    the per-candidate functions (the same float64 operations, written to float32 columns)."""
    types = type_features(type_labels)

    def per_type(name: str) -> BlockFunction:
        function = types[name]

        def column(b: BlockContext):
            ctx = CandidateContext(label=b.label, key=b.key, expanded=b.expanded, score=0.0, best=0.0, slot=1, k=1,
                                   types=frozenset(), canonical_name="", prior=0, total=0, concept_count=0)
            out = []
            for t in b.types:
                ctx.types = t
                out.append(function(ctx))
            return out

        return column

    return {
        "score": lambda b: b.score,
        "exact": lambda b: (b.score >= 1.0),
        "rank": lambda b: 1.0 - (b.slot - 1) / b.k,
        "type_match": per_type("type_match"),
        "type_conflict": per_type("type_conflict"),
        "prior": lambda b: b.prior / b.total if b.total else 0.0,
        "alias_count": lambda b: math.log1p(b.total) / 5,
        "concept_count": lambda b: [math.log1p(c) / 5 for c in b.concept_count.tolist()],
        "expanded": lambda b: float(b.expanded),
        "score_gap": lambda b: b.score - b.best,
        NIL_FEATURE: lambda b: 0.0,
        "canonical_name": lambda b: b.canonical_match,
        "tfidf": lambda b: b.tfidf,
        "dense": lambda b: b.dense,
        "dense_gap": lambda b: b.dense - b.best_dense,
        "short_exact": lambda b: b.short_exact,
        DOC_SUPPORT_FEATURE: lambda b: 0.0,
        "tree_depth": lambda b: [tree_depth(t) for t in b.types],
        "broader_than_top": lambda b: [float(is_ancestor(t, b.types[0])) for t in b.types],
        "narrower_than_top": lambda b: [float(is_ancestor(b.types[0], t)) for t in b.types],
        "prior_gap": lambda b: (b.prior - b.prior.max()) / b.total if b.total else 0.0,
        "concept_count_gap": lambda b: _count_gaps(b.concept_count.tolist()),
    }


def _count_gaps(counts: List[int]) -> List[float]:
    top = math.log1p(max(counts))
    return [(math.log1p(c) - top) / 5 for c in counts]


_TREE_NUMBER = re.compile(r"[A-Z][0-9]{2}(?:\.[0-9]{3})*(?:/[A-Z][0-9]+)?")


@lru_cache(maxsize=65536)
def tree_numbers(types: frozenset) -> Tuple[str, ...]:
    """The MeSH tree numbers among a concept's types, as dotted paths: a supplementary
    record's "C10.668.829.700/C565467" (the record under its heading) is one level below
    the heading."""
    return tuple(sorted(t.replace("/", ".") for t in types if _TREE_NUMBER.fullmatch(t)))


def tree_depth(types: frozenset) -> float:
    """The depth of the concept's shallowest tree number, over 10 (0 without one): how general it is."""
    trees = tree_numbers(types)
    return min(t.count(".") + 1 for t in trees) / 10 if trees else 0.0


def is_ancestor(types: frozenset, of: frozenset) -> bool:
    """Whether a tree number of `types` is a proper prefix of one of `of` (a broader concept)."""
    mine, theirs = tree_numbers(types), tree_numbers(of)
    return any(u.startswith(t + ".") for t in mine for u in theirs)


def hierarchy_features() -> Dict[str, FeatureFunction]:
    """Opt-in features of the candidate's place in the MeSH hierarchy (name them in `features`).

    tree_depth: the depth of its shallowest tree number, over 10 (0 without one).
    broader_than_top / narrower_than_top: it is an ancestor / a descendant of the generator's
        best candidate (a parent or child concept of the best string match: where corpora
        differ on how specific a vague mention's concept is).
    """
    return {
        "tree_depth": lambda c: tree_depth(c.types),
        "broader_than_top": lambda c: float(is_ancestor(c.types, c.top_types)),
        "narrower_than_top": lambda c: float(is_ancestor(c.top_types, c.types)),
    }


def convention_features() -> Dict[str, FeatureFunction]:
    """Opt-in features that compare a candidate's training counts with the other candidates'
    (name them in `features`): the scorer reads each candidate alone, so without them it cannot
    tell the concept a corpus annotates most from a near name of a rarer one.

    prior_gap: the candidate's share of this text's training links minus the largest share
        among the candidates (0 for the most linked; 0 for all when the text was never linked).
    concept_count_gap: log1p of the candidate's training mentions minus log1p of the most
        mentioned candidate's, over 5 (0 for the most mentioned, negative for the others).
    """
    return {
        "prior_gap": lambda c: (c.prior - c.best_prior) / c.total if c.total else 0.0,
        "concept_count_gap": lambda c: (math.log1p(c.concept_count) - math.log1p(c.best_count)) / 5,
    }


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
        "canonical_name": lambda c: float(normalize_alias(c.canonical_name) == c.key),
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
        cosine minus the best one's); short_exact, doc_support (`context_features`); and
        tree_depth, broader_than_top, narrower_than_top (`hierarchy_features`); prior_gap,
        concept_count_gap (`convention_features`).
    RETURNS (LinkerFeatures): the featurizer; its length is the scorer's feature width.
    """
    labels = DEFAULT_TYPE_LABELS if type_labels is None else type_labels
    known = base_features(labels)
    names = list(known) if features is None else list(features)
    known.update(generator_features())
    known.update(context_features())
    known.update(hierarchy_features())
    known.update(convention_features())
    for name in names:
        if name not in known:
            raise ValueError(Errors.E135.format(name="medllm_linker", feature=name, featurizer="spacy_medllm.linker_features.v1", known=", ".join(known)))
    return LinkerFeatures({name: known[name] for name in names}, blocks=block_features(labels), type_labels=labels)
