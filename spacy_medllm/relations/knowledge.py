"""What the relation component knows beyond the text: pair features from the training
relations and from a concept hierarchy.

Prior: counted over the training Docs (the component's `initialize` examples), per
candidate pair key (head key, tail key), where an entity's keys are its concept ids: in how
many Docs the pair was a candidate and in how many it held a relation; per entity key and
role (head or tail), the same counts. A drug that often causes the effect it co-occurs
with, or an effect often caused, is a strong hint (as curated knowledge bases such as CTD
are for the CID shared task systems); the model sees these counts as bucketed embeddings.
While training on a Doc that was counted, that Doc's own contribution is left out
(leave-one-out), so the model cannot read its own label from the prior.

What travels with a saved pipeline: the counts by concept id and the hierarchy, nothing
else. Mention texts are keys only when asked for (`text_keys=True`, the component's
`initialize` setting, for corpora without concept ids such as Chia): an entity without ids
then gets its lowercased mention texts as keys, and those strings are saved with the
model, so opt in only for data whose mention strings may be shared. Without the opt-in,
an entity without ids has no prior. Which Docs were counted (for the leave-one-out) is
training state, held in memory as hashes of the Doc texts and never serialized: a loaded
pipeline leaves nothing out until it is initialized (counted) again.

Hierarchy: concept -> parents (MeSH `isa`, MEDIC parents: the `triples.tsv` of
`medllm build-kg`). BC5CDR annotates the most specific disease: a pair whose tail (or
head) has a more specific co-mentioned concept of the same label is rarely a relation
(the shared task's "hypernym filtering"); the flags go to the model as a feature rather
than a hard filter.
"""
import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy
import srsly

from ..errors import Errors
from ..io import msgpack_loads, no_cyclic_gc
from ..tokens import split_kb_id
from .pairs import Instances

N_PAIR_POS = 5  # documents where the pair held: 0, 1, 2, 3-4, 5+
N_PAIR_NEG = 5  # documents where it was a candidate only: 0, 1, 2-3, 4-7, 8+
N_HIERARCHY = 16  # 4 flags: tail/head has a more specific / more general co-mention
N_RATE = 6  # an entity's relation rate: unseen, 0, (0, 1/3], (1/3, 2/3], (2/3, 1), 1
N_KNOWLEDGE = 5  # features per pair: pair pos, pair neg, hierarchy, head rate, tail rate
HIERARCHY_RELATIONS = ("isa", "medic_parent")
NIL = "NIL"
TEXT_KEY = "text:"  # prefix of a mention-text key (text_keys=True)


def doc_fingerprint(text: str) -> str:
    """The in-memory key of a counted Doc (training state only, never saved)."""
    return hashlib.blake2b(text.encode("utf8"), digest_size=16).hexdigest()


def pos_bucket(n: int) -> int:
    return 0 if n <= 0 else 1 if n == 1 else 2 if n == 2 else 3 if n <= 4 else 4


def neg_bucket(n: int) -> int:
    return 0 if n <= 0 else 1 if n == 1 else 2 if n <= 3 else 3 if n <= 7 else 4


def rate_bucket(pos: int, total: int) -> int:
    if total <= 0:
        return 0
    r = pos / total
    if pos <= 0:
        return 1
    if pos >= total:
        return 5
    return 2 if r <= 1 / 3 else 3 if r <= 2 / 3 else 4


class RelationKnowledge:
    """The prior counts and the hierarchy of a relation component (see the module).

    text_keys (bool): key entities without concept ids by their lowercased mention texts
        (saved with the model); default: concept ids only.
    """

    def __init__(self, text_keys: bool = False) -> None:
        self.text_keys = bool(text_keys)
        self.pairs: Dict[Tuple[str, str], List[int]] = {}  # (head key, tail key) -> [docs, positive docs]
        self.entities: Dict[Tuple[str, str], List[int]] = {}  # (role, key) -> [docs, positive docs]
        self.counted: Set[str] = set()  # the counted Docs, for the leave-one-out; training state, not saved
        self.parents: Dict[str, List[str]] = {}
        self._ancestors: Dict[str, Set[str]] = {}

    # ---- keys ---------------------------------------------------------------------------
    def entity_keys(self, doc, inst: Instances, e: int) -> List[str]:
        """The prior keys of entity `e`: its concept ids; without ids, its lowercased
        mention texts with `text_keys`, else none."""
        ent = inst.entities[e]
        ids = [ent.concept_id] if ent.concept_id else [i for m in ent.mentions for i in split_kb_id(inst.mention_ids[m])]
        ids = [i for i in ids if i and i != NIL]
        if ids:
            return sorted(set(ids))
        if not self.text_keys:
            return []
        return sorted({TEXT_KEY + doc[s:t].text.lower() for s, t in (inst.mentions[m] for m in ent.mentions)})

    def _doc_keys(self, doc, inst: Instances, positive: numpy.ndarray):
        """The pair keys and entity keys of one Doc's candidates, and which held."""
        keys = [self.entity_keys(doc, inst, e) for e in range(len(inst.entities))]
        pairs: Dict[Tuple[str, str], bool] = {}
        ents: Dict[Tuple[str, str], bool] = {}
        for p, (eh, et) in enumerate(inst.pairs):
            pos = bool(positive[p]) if len(positive) else False
            for h in keys[eh]:
                ents[("head", h)] = ents.get(("head", h), False) or pos
                for t in keys[et]:
                    pairs[(h, t)] = pairs.get((h, t), False) or pos
            for t in keys[et]:
                ents[("tail", t)] = ents.get(("tail", t), False) or pos
        return keys, pairs, ents

    # ---- counting -----------------------------------------------------------------------
    def reset_prior(self) -> None:
        self.pairs, self.entities, self.counted = {}, {}, set()

    def count(self, doc, inst: Instances, targets: numpy.ndarray) -> None:
        """Add a training Doc (its candidates and their (pairs, labels) targets)."""
        fp = doc_fingerprint(doc.text)
        if fp in self.counted:
            return
        self.counted.add(fp)
        positive = targets.any(axis=1) if targets.size else numpy.zeros(len(inst.pairs), dtype=bool)
        _, pairs, ents = self._doc_keys(doc, inst, positive)
        for table, items in ((self.pairs, pairs), (self.entities, ents)):
            for key, pos in items.items():
                row = table.setdefault(key, [0, 0])
                row[0] += 1
                row[1] += int(pos)

    # ---- hierarchy ----------------------------------------------------------------------
    def load_hierarchy(self, path: Union[str, Path], relations: Sequence[str] = HIERARCHY_RELATIONS) -> int:
        """Read concept -> parent edges from a `head<TAB>relation<TAB>tail` file."""
        path = Path(path)
        if not path.exists():
            raise ValueError(Errors.E036.format(path=path, reason="no such file"))
        parents: Dict[str, Set[str]] = {}
        wanted = set(relations)
        with path.open(encoding="utf8") as f:
            for n, line in enumerate(f, 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 3:
                    raise ValueError(Errors.E036.format(path=path, reason=f"line {n}: expected 3 tab-separated fields, got {len(fields)}"))
                if fields[1] in wanted and fields[0] != fields[2]:
                    parents.setdefault(fields[0], set()).add(fields[2])
        self.parents = {k: sorted(v) for k, v in parents.items()}
        self._ancestors = {}
        return sum(len(v) for v in self.parents.values())

    def ancestors(self, concept: str) -> Set[str]:
        out = self._ancestors.get(concept)
        if out is None:
            out, stack = set(), list(self.parents.get(concept, ()))
            while stack:
                c = stack.pop()
                if c not in out:
                    out.add(c)
                    stack.extend(self.parents.get(c, ()))
            self._ancestors[concept] = out
        return out

    # ---- features -----------------------------------------------------------------------
    def features(self, doc, inst: Instances, targets: Optional[numpy.ndarray] = None) -> numpy.ndarray:
        """(pairs, N_KNOWLEDGE) feature ids of the candidates of `doc`. With `targets`
        (training) and a Doc that was counted, its own contribution is left out."""
        out = numpy.zeros((len(inst.pairs), N_KNOWLEDGE), dtype="int64")
        if not inst.pairs:
            return out
        own_pairs: Dict[Tuple[str, str], bool] = {}
        own_ents: Dict[Tuple[str, str], bool] = {}
        if targets is not None and self.counted and doc_fingerprint(doc.text) in self.counted:
            positive = targets.any(axis=1) if targets.size else numpy.zeros(len(inst.pairs), dtype=bool)
            keys, own_pairs, own_ents = self._doc_keys(doc, inst, positive)
        else:
            keys = [self.entity_keys(doc, inst, e) for e in range(len(inst.entities))]

        def counts(table, own, key) -> Tuple[int, int]:
            row = table.get(key)
            if row is None:
                return 0, 0
            n, pos = row
            if key in own:
                n, pos = n - 1, pos - int(own[key])
            return n, pos

        flags = self._hierarchy_flags(inst, keys) if self.parents else numpy.zeros((len(inst.entities), 2), dtype="int64")
        for p, (eh, et) in enumerate(inst.pairs):
            best_pos, best_neg = 0, 0
            for h in keys[eh]:
                for t in keys[et]:
                    n, pos = counts(self.pairs, own_pairs, (h, t))
                    if (pos, n - pos) > (best_pos, best_neg):
                        best_pos, best_neg = pos, n - pos
            rates = []
            for role, e in (("head", eh), ("tail", et)):
                n_best, pos_best = 0, 0
                for k in keys[e]:
                    n, pos = counts(self.entities, own_ents, (role, k))
                    if n > n_best:
                        n_best, pos_best = n, pos
                rates.append(rate_bucket(pos_best, n_best))
            hier = flags[et, 0] + 2 * flags[et, 1] + 4 * flags[eh, 0] + 8 * flags[eh, 1]
            out[p] = (pos_bucket(best_pos), neg_bucket(best_neg), hier, rates[0], rates[1])
        return out

    def _hierarchy_flags(self, inst: Instances, keys: List[List[str]]) -> numpy.ndarray:
        """Per entity: (has a more specific co-mentioned entity of its label, has a more
        general one)."""
        flags = numpy.zeros((len(inst.entities), 2), dtype="int64")
        ancestors = [set().union(*(self.ancestors(k) for k in ks)) if ks else set() for ks in keys]
        for a, ent_a in enumerate(inst.entities):
            for b, ent_b in enumerate(inst.entities):
                if a == b or ent_a.label != ent_b.label:
                    continue
                if any(k in ancestors[b] for k in keys[a]):
                    flags[a, 0] = 1  # b is more specific than a
                    flags[b, 1] = 1  # a is more general than b
        return flags

    # ---- serialization ------------------------------------------------------------------
    def to_dict(self) -> Dict[str, object]:
        """The counts, the key setting and the hierarchy; not the counted Docs (training state)."""
        return {
            "text_keys": self.text_keys,
            "pairs": [[h, t, n, pos] for (h, t), (n, pos) in self.pairs.items()],
            "entities": [[r, k, n, pos] for (r, k), (n, pos) in self.entities.items()],
            "parents": self.parents,
        }

    def from_dict(self, data: Dict[str, object], source: str = "<dict>") -> "RelationKnowledge":
        """Load what `to_dict` wrote. The counted Docs are not in it: a loaded prior leaves
        nothing out until counted again. `source` names the file in errors."""
        if not isinstance(data, dict):
            raise ValueError(Errors.E050.format(path=source, reason=f"expected a mapping, found {type(data).__name__}"))
        try:
            pairs = {(str(h), str(t)): [int(n), int(pos)] for h, t, n, pos in data.get("pairs", [])}
            entities = {(str(r), str(k)): [int(n), int(pos)] for r, k, n, pos in data.get("entities", [])}
            parents = {str(k): [str(p) for p in v] for k, v in dict(data.get("parents", {})).items()}
        except (TypeError, ValueError) as err:
            raise ValueError(Errors.E050.format(path=source, reason=f"malformed counts or hierarchy ({err})")) from None
        if "text_keys" in data:
            self.text_keys = bool(data["text_keys"])
        else:  # saved before the setting existed: as it was counted
            self.text_keys = any(k.startswith(TEXT_KEY) for _, k in entities)
        self.pairs, self.entities, self.parents = pairs, entities, parents
        self.counted = set()
        self._ancestors = {}
        return self

    def to_bytes(self) -> bytes:
        return srsly.msgpack_dumps(self.to_dict())

    def from_bytes(self, data: bytes, source: str = "<bytes>") -> "RelationKnowledge":
        try:
            msg = msgpack_loads(data)
        except Exception as err:  # msgpack raises several types for garbage and truncation
            raise ValueError(Errors.E050.format(path=source, reason=f"not msgpack ({type(err).__name__}: {err})")) from None
        # ~10^4-10^5 new tuples and lists, none of them garbage: a full collection the load
        # happens to trigger here costs more than the load itself (see KnowledgeBase.from_bytes)
        with no_cyclic_gc():
            return self.from_dict(msg, source)

    def to_disk(self, path: Union[str, Path]) -> None:
        Path(path).write_bytes(self.to_bytes())

    def from_disk(self, path: Union[str, Path]) -> "RelationKnowledge":
        """Load a knowledge file; a pipeline saved before the knowledge existed has none:
        no knowledge."""
        path = Path(path)
        if not path.exists():
            return self.from_dict({}, str(path))
        return self.from_bytes(path.read_bytes(), str(path))

    def __len__(self) -> int:
        return len(self.pairs)
