"""Relation instances: which entities and which (head, tail) pairs the model scores.

An *entity* is what a relation connects. At the `"mention"` level every entity span is
its own entity (ADE, Chia: a relation links two mentions of one sentence). At the
`"concept"` level the mentions of a document are grouped by concept id, so that the
model classifies concept pairs, as BC5CDR's chemical-induced-disease (CID) relations are
annotated: a mention with `D1|D2` belongs to both concepts `D1` and `D2`, and a mention
without an id (empty or `NIL`) is grouped with the mentions of the same label and the
same lower-cased text.

`spacy_medllm.type_pairs.v1` (a registered `@misc` function, so a config can swap it)
builds the instances of a Doc: the entities, the ordered pairs whose (head label, tail
label) is allowed, the token gap between the closest mentions of each pair (a feature of
the model, and the evidence mentions of a predicted concept pair), bounded by
`max_distance` and `max_pairs` so a long document with many entities cannot blow up.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Corpus, Example
from spacy.util import filter_spans, registry

from ..corpus.base import get_relations, split_kb_id
from ..errors import Errors

LEVELS = ("concept", "mention")
WILDCARD = "*"
N_GAP_BUCKETS = 12
N_DISTANCE_IDS = 2 * N_GAP_BUCKETS  # gap bucket, times tail-after-head or tail-before-head
N_COUNT_BUCKETS = 8
N_POSITION_BUCKETS = 12
N_SENTENCE_BUCKETS = 4  # same sentence, next, two apart, further
MAX_BETWEEN = 32  # tokens between two mentions that the model reads (closer pairs only)
SENTENCE_ENDS = {".", "!", "?"}


@dataclass
class Entity:
    """One side of a relation: a mention, or the mentions of one concept in a Doc.

    label: the entity label; concept_id: the concept id at the concept level (None for
    a group of unlinked mentions, and at the mention level); mentions: indices into
    `Instances.mentions`.
    """

    label: str
    concept_id: Optional[str]
    mentions: List[int]


@dataclass
class Instances:
    """The candidate relations of one Doc.

    mentions: (start, end) token offsets of the entity spans; mention_ids: their
    `kb_id_`; entities: see `Entity`; pairs: (head entity, tail entity) indices;
    gaps: tokens between the closest mentions of each pair; tail_after: whether that tail
    mention starts after the head mention; evidence: the closest (head mention,
    tail mention) of each pair; sentence_gaps: sentence boundaries between them
    (the Doc's sentences when set, else tokens ".", "!" and "?" end a sentence).
    """

    level: str
    mentions: List[Tuple[int, int]] = field(default_factory=list)
    mention_ids: List[str] = field(default_factory=list)
    entities: List[Entity] = field(default_factory=list)
    pairs: List[Tuple[int, int]] = field(default_factory=list)
    gaps: List[int] = field(default_factory=list)
    tail_after: List[bool] = field(default_factory=list)
    evidence: List[Tuple[int, int]] = field(default_factory=list)
    sentence_gaps: List[int] = field(default_factory=list)
    n_candidates: int = 0  # allowed pairs before the max_pairs bound
    knowledge: Optional[numpy.ndarray] = None  # (pairs, N_KNOWLEDGE) ids, set by the component


class TypePairs:
    """Type-constrained candidate pairs; built by `spacy_medllm.type_pairs.v1`."""

    def __init__(self, pairs: Sequence[Sequence[str]], level: str = "mention", max_pairs: int = 1000, max_distance: Optional[int] = None):
        if level not in LEVELS:
            raise ValueError(Errors.E031.format(level=level, levels=", ".join(LEVELS)))
        allowed = []
        for p in pairs:
            if isinstance(p, str) or len(p) != 2 or not all(isinstance(x, str) for x in p):
                raise ValueError(Errors.E033.format(value=p))
            allowed.append((p[0], p[1]))
        if not allowed:
            raise ValueError(Errors.E033.format(value=list(pairs)))
        if max_pairs < 1 or (max_distance is not None and max_distance < 0):
            raise ValueError(Errors.E034.format(max_pairs=max_pairs, max_distance=max_distance))
        self.pairs = allowed
        self.level = level
        self.max_pairs = max_pairs
        self.max_distance = max_distance

    def allows(self, head: str, tail: str) -> bool:
        return any((h == WILDCARD or h == head) and (t == WILDCARD or t == tail) for h, t in self.pairs)

    def __call__(self, doc: Doc, spans: Optional[Sequence[Span]] = None) -> Instances:
        """The instances of `doc`; `spans` are its entities (default `doc.ents`)."""
        spans = list(doc.ents if spans is None else spans)
        out = Instances(self.level)
        out.mentions = [(s.start, s.end) for s in spans]
        out.mention_ids = [s.kb_id_ for s in spans]
        labels = [s.label_ for s in spans]
        if self.level == "mention":
            out.entities = [Entity(s.label_, None, [i]) for i, s in enumerate(spans)]
        else:
            groups: Dict[Tuple[str, str], Entity] = {}
            for i, s in enumerate(spans):
                ids = split_kb_id(s.kb_id_)
                keys = [(cid, cid) for cid in ids] or [(f"text:{s.text.lower()}", None)]
                for key, cid in keys:
                    ent = groups.get((s.label_, key))
                    if ent is None:
                        ent = groups[(s.label_, key)] = Entity(s.label_, cid, [])
                    ent.mentions.append(i)
            out.entities = list(groups.values())
        if len(spans) < 2:
            return out
        # allowed (head mention, tail mention) pairs and their gaps, vectorized: a long
        # document may hold hundreds of mentions
        label_set = sorted(set(labels))
        ok_labels = numpy.array([[self.allows(h, t) for t in label_set] for h in label_set], dtype=bool)
        lab = numpy.array([label_set.index(x) for x in labels])
        starts = numpy.array([m[0] for m in out.mentions])
        ends = numpy.array([m[1] for m in out.mentions])
        after = starts[None, :] >= starts[:, None]  # tail starts at or after the head
        gap = numpy.where(after, starts[None, :] - ends[:, None], starts[:, None] - ends[None, :]).clip(min=0)
        mask = ok_labels[lab[:, None], lab[None, :]]
        numpy.fill_diagonal(mask, False)
        if self.max_distance is not None:
            mask &= gap <= self.max_distance
        owners: List[List[int]] = [[] for _ in spans]
        for e, ent in enumerate(out.entities):
            for m in ent.mentions:
                owners[m].append(e)
        best: Dict[Tuple[int, int], Tuple[int, int, int]] = {}
        for h, t in zip(*numpy.nonzero(mask)):
            g = int(gap[h, t])
            for eh in owners[h]:
                for et in owners[t]:
                    if eh == et:
                        continue
                    old = best.get((eh, et))
                    if old is None or g < old[0]:
                        best[(eh, et)] = (g, int(h), int(t))
        out.n_candidates = len(best)
        keys = sorted(best)
        if len(keys) > self.max_pairs:
            # keep the closest pairs: relations between far-apart entities are the rarest
            keys = sorted(sorted(keys, key=lambda k: (best[k][0], k))[: self.max_pairs])
        sentence = sentence_ids(doc)
        for key in keys:
            g, h, t = best[key]
            out.pairs.append(key)
            out.gaps.append(g)
            out.tail_after.append(bool(after[h, t]))
            out.evidence.append((h, t))
            out.sentence_gaps.append(abs(int(sentence[out.mentions[t][0]]) - int(sentence[out.mentions[h][0]])))
        return out


def sentence_ids(doc: Doc) -> numpy.ndarray:
    """The sentence number of every token: from the Doc's sentence boundaries when set,
    else a token ".", "!" or "?" ends a sentence (abstracts without a sentencizer)."""
    if doc.has_annotation("SENT_START"):
        starts = numpy.array([bool(t.is_sent_start) for t in doc], dtype="int64")
        starts[:1] = 0
        return starts.cumsum()
    ends = numpy.array([t.text in SENTENCE_ENDS for t in doc], dtype="int64")
    return numpy.concatenate([[0], ends.cumsum()[:-1]]) if len(doc) else ends


@registry.misc("spacy_medllm.type_pairs.v1")
def make_type_pairs(
    pairs: List[List[str]],
    level: str = "mention",
    max_pairs: int = 1000,
    max_distance: Optional[int] = None,
) -> Callable[[Doc, Optional[Sequence[Span]]], Instances]:
    """Candidate (head, tail) pairs whose entity labels are allowed.

    pairs (List[List[str]]): allowed [head label, tail label] pairs; "*" matches any label
        (e.g. [["Chemical", "Disease"]], or [["*", "*"]] for every ordered pair).
    level (str): "concept" groups the mentions of a Doc by concept id and pairs the
        concepts (document-level relations such as BC5CDR CID); "mention" pairs mentions.
    max_pairs (int): at most this many pairs per Doc, the closest ones.
    max_distance (Optional[int]): drop pairs whose closest mentions are more than this
        many tokens apart (None: no limit).
    RETURNS (Callable[[Doc, Optional[Sequence[Span]]], Instances]): builds the instances
        of a Doc from its entities (default `doc.ents`).
    """
    return TypePairs(pairs, level=level, max_pairs=max_pairs, max_distance=max_distance)


# ---- feature buckets ---------------------------------------------------------------------
def gap_bucket(gap: int) -> int:
    """0, 1, 2, 3, 4, 5-7, 8-15, 16-31, ... up to 256+: log-spaced beyond 4 tokens."""
    if gap < 5:
        return gap
    return min(3 + int(gap).bit_length() - 1, N_GAP_BUCKETS - 1)


def distance_id(gap: int, tail_after: bool) -> int:
    return gap_bucket(gap) + (0 if tail_after else N_GAP_BUCKETS)


def sentence_bucket(gap: int) -> int:
    return min(gap, N_SENTENCE_BUCKETS - 1)


def between(head: Tuple[int, int], tail: Tuple[int, int]) -> Tuple[int, int]:
    """The tokens between two mentions, (start, end); empty when they touch or overlap,
    or when more than MAX_BETWEEN tokens apart (words in between rarely matter then)."""
    start, end = (head[1], tail[0]) if tail[0] >= head[0] else (tail[1], head[0])
    if end <= start or end - start > MAX_BETWEEN:
        return (0, 0)
    return (start, end)


def count_bucket(n: int) -> int:
    """Number of mentions of an entity: 1, 2, 3, 4, 5-6, 7-9, 10-14, 15+ (the main
    chemical and disease of an abstract are usually its most frequent ones)."""
    for i, upper in enumerate((1, 2, 3, 4, 6, 9, 14)):
        if n <= upper:
            return i
    return N_COUNT_BUCKETS - 1


def position_bucket(token: int) -> int:
    """Where an entity is first mentioned: 0-1, 2-3, 4-7, ... (titles come first)."""
    return min(int(token).bit_length(), N_POSITION_BUCKETS - 1)


# ---- examples with gold entities -----------------------------------------------------------
def aligned_gold_entities(eg: Example) -> Tuple[List[Span], Dict[Tuple[int, int], Tuple[int, int]]]:
    """The reference entities of `eg` as spans of the predicted Doc, with their label and
    id, and a map from reference to predicted token offsets. A mention that the predicted
    tokens cannot represent is left out."""
    spans: List[Span] = []
    mapping: Dict[Tuple[int, int], Tuple[int, int]] = {}
    for ent in eg.reference.ents:
        aligned = eg.get_aligned_spans_y2x([ent])
        if aligned:
            span = Span(eg.predicted, aligned[0].start, aligned[0].end, label=ent.label_, kb_id=ent.kb_id_)
            spans.append(span)
            mapping[(ent.start, ent.end)] = (span.start, span.end)
    return spans, mapping


def with_gold_entities(eg: Example) -> Example:
    """`eg` with the reference entities (labels and ids) set on the predicted Doc."""
    spans, _ = aligned_gold_entities(eg)
    eg.predicted.ents = filter_spans(spans)
    return eg


@registry.readers("spacy_medllm.RelationCorpus.v1")
def create_relation_corpus(
    path: Optional[Path],
    gold_entities: bool = True,
    min_entities: int = 2,
    limit: int = 0,
    shuffle: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """Examples for relation training and evaluation from a `.spacy` file.

    path (Path): the DocBin (saved with user data, so `doc._.medllm_rels` is there).
    gold_entities (bool): copy the reference entities (with their ids) onto the predicted
        Docs, so that evaluation during training scores relations on gold entities when
        no component of the pipeline predicts entities (ADE, Chia).
    min_entities (int): skip Docs with fewer reference entities: they hold no candidate
        pair, and leaving them out saves the encoder's time (ADE's negative sentences).
    limit (int): at most this many Docs (0: all), counted before filtering.
    shuffle (bool): shuffle the Docs each time the corpus is read.
    """
    corpus = Corpus(path, limit=limit, shuffle=shuffle)

    def read(nlp: Language) -> Iterator[Example]:
        for eg in corpus(nlp):
            if len(eg.reference.ents) < min_entities:
                continue
            yield with_gold_entities(eg) if gold_entities else eg

    return read


def assigns_entities(nlp: Language, name: str) -> bool:
    """Whether the component `name` writes entities or their ids (NER, entity linker...)."""
    assigns = set(nlp.get_pipe_meta(name).assigns)
    return bool(assigns & {"doc.ents", "token.ent_iob", "token.ent_type", "token.ent_kb_id"})


def gold_entity_docs(nlp: Language, gold_docs: Iterable[Doc], *, upto: Optional[str] = None, batch_size: int = 32) -> Iterator[Example]:
    """Examples whose predicted Docs carry the gold entities and ids of `gold_docs`.

    The predicted Doc is the pipeline's tokenization of the gold text; gold mentions are
    aligned to it (expanded to token boundaries when a mention ends inside a token, the
    longest kept where they then overlap) and the pipeline's components up to `upto`
    (exclusive; default: all) run on it, except those that write entities or ids, so a
    relation component reads the shared encoder's output but the gold entities.
    """
    names = []
    for name in nlp.pipe_names:
        if name == upto:
            break
        if not assigns_entities(nlp, name):
            names.append(name)
    batch: List[Example] = []

    def flush() -> Iterator[Example]:
        docs = [eg.predicted for eg in batch]
        for name in names:
            docs = list(nlp.get_pipe(name).pipe(docs, batch_size=batch_size))
        for eg, doc in zip(batch, docs):
            eg.predicted = doc
            yield eg
        batch.clear()

    for gold in gold_docs:
        doc = nlp.make_doc(gold.text)
        spans = []
        for ent in gold.ents:
            span = doc.char_span(ent.start_char, ent.end_char, label=ent.label_, kb_id=ent.kb_id_, alignment_mode="expand")
            if span is not None:
                spans.append(span)
        doc.ents = filter_spans(spans)
        batch.append(Example(doc, gold))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


def concept_keys(records: Iterable[Dict[str, object]], label: Optional[str] = None) -> Dict[Tuple[str, str, str], float]:
    """The concept-pair view of relation records: {(label, head id, tail id): best score}.

    `D1|D2` ids give a key for each id; records without ids or with `NIL` give none.
    """
    out: Dict[Tuple[str, str, str], float] = {}
    for r in records:
        if label is not None and r["label"] != label:
            continue
        for h in split_kb_id(str(r.get("head_id") or "")):
            for t in split_kb_id(str(r.get("tail_id") or "")):
                key = (str(r["label"]), h, t)
                out[key] = max(out.get(key, 0.0), float(r.get("score", 1.0)))
    return out


def concept_pairs(doc: Doc, label: Optional[str] = None) -> Dict[Tuple[str, str, str], float]:
    """The relations of `doc` as concept pairs: {(label, head concept id, tail concept id): score}.

    Works for predicted records (one per concept pair, or per mention pair) and for gold
    records without offsets (BC5CDR CID) alike; see `concept_keys`.
    """
    return concept_keys(get_relations(doc), label)
