"""Knowledge-driven mention replacement: other names of the same concept, or other concepts.

Two modes, both driven by the knowledge base (`medllm build-kb`):

- `alias`: every mention of a chosen concept is rewritten as another of that concept's
  names (an entry term, a synonym, an abbreviation from the KB): `ent.kb_id_` and the
  relation records stay as they are, since the concept is the same. This teaches the
  surface variety the training mentions lack.
- `concept`: every mention of a chosen concept becomes the name of another concept of the
  same type, absent from the Doc; the entities' ids and the relation records' ids follow
  (CID(D1, D2) becomes CID(new, D2)), as in `spacy_medllm.entity_swap_augmenter.v1`.

Which KB type stands for an entity label is configuration (`label_types`, by default the
label itself, which is the coarse category the KB builders write: `Chemical`, `Disease`).
An entity with several ids, an id the KB lacks, or an annotated boundary inside it (a nested
mention or a relation argument covering part of it) keeps its text.
"""
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from ..errors import Errors
from ..tokens import MENTIONS_KEY, get_relations, install_extensions, split_kb_id
from .entity_swap import Choice, apply_swaps, protected_offsets

MODES = ("alias", "concept")


class KBNames:
    """Names of the KB's concepts, for replacement: per concept, and per type."""

    def __init__(self, kb, max_words: int = 5):
        self.kb = kb
        self.max_words = max_words
        self._by_type: Dict[str, List[str]] = {}

    def names(self, concept_id: str) -> List[str]:
        concept = self.kb.get(concept_id)
        if concept is None:
            return []
        return [n for n in concept.names if 0 < len(n.split()) <= self.max_words]

    def concepts_of_type(self, kb_type: str) -> List[str]:
        if kb_type not in self._by_type:
            self._by_type[kb_type] = sorted(c.concept_id for c in self.kb if kb_type in c.types)
        return self._by_type[kb_type]


def kb_swap(
    nlp: Language, doc: Doc, names: KBNames, rng: random.Random, *, mode: str = "alias",
    swap_prob: float = 0.5, label_types: Optional[Dict[str, str]] = None,
) -> Optional[Doc]:
    """A copy of `doc` with the mentions of some concepts renamed from the KB; None if unchanged."""
    if mode not in MODES:
        raise ValueError(Errors.E100.format(mode=mode, known=", ".join(MODES)))
    install_extensions()
    records = get_relations(doc)
    ents = list(doc.ents)
    mentions = list(doc.spans[MENTIONS_KEY]) if MENTIONS_KEY in doc.spans else []
    protected = protected_offsets(doc, mentions, records)
    groups: Dict[str, List[int]] = {}
    for i, ent in enumerate(ents):
        ids = split_kb_id(ent.kb_id_)
        if len(ids) == 1 and ids[0] in names.kb and not any(ent.start_char < c < ent.end_char for c in protected):
            groups.setdefault(ids[0], []).append(i)
    used_texts = {e.text.lower() for e in ents} | {m.text.lower() for m in mentions}
    used_ids = {i for span in ents + mentions for i in split_kb_id(span.kb_id_)}
    used_ids |= {str(r[k]) for r in records for k in ("head_id", "tail_id") if r.get(k)}
    choices: List[Choice] = [None] * len(ents)
    id_map: Dict[str, str] = {}
    for concept_id, members in groups.items():
        labels = {ents[i].label_ for i in members}
        if len(labels) != 1 or rng.random() >= swap_prob:
            continue
        if mode == "alias":
            options = [(n, concept_id) for n in names.names(concept_id) if n.lower() not in used_texts]
        else:
            kb_type = (label_types or {}).get(next(iter(labels)), next(iter(labels)))
            pool = names.concepts_of_type(kb_type)
            options = []
            for _ in range(20):  # a few draws: the pool is large, most concepts qualify
                if not pool:
                    break
                other = pool[rng.randrange(len(pool))]
                if other in used_ids:
                    continue
                cand = [n for n in names.names(other) if n.lower() not in used_texts]
                if cand:
                    options = [(cand[rng.randrange(len(cand))], other)]
                    break
        if not options:
            continue
        text, new_id = options[rng.randrange(len(options))]
        used_texts.add(text.lower())
        used_ids.add(new_id)
        for i in members:
            choices[i] = (text, new_id)
        if new_id != concept_id:
            id_map[concept_id] = new_id
    return apply_swaps(nlp, doc, choices, id_map)


@registry.augmenters("spacy_medllm.kb_swap_augmenter.v1")
def create_kb_swap_augmenter(
    kb_path: Path,
    mode: str = "alias",
    level: float = 0.2,
    swap_prob: float = 0.5,
    label_types: Optional[Dict[str, str]] = None,
    max_words: int = 5,
    seed: int = 0,
) -> Callable[[Language, Example], Iterator[Example]]:
    """Yield each example, and with probability `level` also a copy renamed from the KB.

    kb_path (Path): the knowledge base folder (`medllm build-kb`).
    mode (str): "alias" (another name of the same concept) or "concept" (another concept of
        the same type).
    level (float): share of examples that get an augmented copy.
    swap_prob (float): chance that each concept of a chosen example is renamed.
    label_types (Optional[Dict[str, str]]): entity label -> KB type (default: the label).
    max_words (int): names longer than this many words are not used.
    seed (int): the random seed, for reproducible training.
    """
    if mode not in MODES:
        raise ValueError(Errors.E100.format(mode=mode, known=", ".join(MODES)))
    rng = random.Random(seed)
    state: Dict[str, KBNames] = {}

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        yield example
        if rng.random() >= level or not example.reference.ents:
            return
        if "names" not in state:
            from ..kb import KnowledgeBase

            state["names"] = KBNames(KnowledgeBase.from_disk(kb_path), max_words)
        ref = kb_swap(nlp, example.reference, state["names"], rng, mode=mode, swap_prob=swap_prob, label_types=label_types)
        if ref is not None:
            yield Example(nlp.make_doc(ref.text), ref)

    return augment
