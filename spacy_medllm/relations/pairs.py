"""Candidate pairs: which entities and which (head, tail) pairs the relation model scores.

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc, Span
from spacy.util import registry

from ..errors import Errors
from ..tokens import split_kb_id

LEVELS = ("concept", "mention")
WILDCARD = "*"
# head mentions whose candidate pairs are enumerated at a time: (block x mentions) arrays
PAIR_BLOCK = 512
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
        owners: List[List[int]] = [[] for _ in spans]
        for e, ent in enumerate(out.entities):
            for m in ent.mentions:
                owners[m].append(e)
        best: Dict[Tuple[int, int], Tuple[int, int, int]] = {}
        n = len(spans)
        for b in range(0, n, PAIR_BLOCK):  # head mentions a block at a time: (block x n) arrays, not (n x n)
            rows = numpy.arange(b, min(n, b + PAIR_BLOCK))
            after = starts[None, :] >= starts[rows, None]  # tail starts at or after the head
            gap = numpy.where(after, starts[None, :] - ends[rows, None], starts[rows, None] - ends[None, :]).clip(min=0)
            mask = ok_labels[lab[rows, None], lab[None, :]]
            mask[rows - b, rows] = False
            if self.max_distance is not None:
                mask &= gap <= self.max_distance
            for r, t in zip(*numpy.nonzero(mask)):
                g, h = int(gap[r, t]), int(rows[r])
                for eh in owners[h]:
                    for et in owners[t]:
                        if eh == et:
                            continue
                        old = best.get((eh, et))
                        if old is None or g < old[0]:
                            best[(eh, et)] = (g, h, int(t))
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
            out.tail_after.append(bool(starts[t] >= starts[h]))
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
