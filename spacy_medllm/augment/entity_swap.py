"""Mention replacement: swap entity mentions for other names of the same label.

A model trained on BC5CDR sees each drug name a few times; replacing mentions with
other training names of the same label (keeping the context) teaches it the
context, not the name list. The names come from a `.spacy` file (normally the
training split itself) or a JSON file `{"Chemical": ["aspirin", ...], ...}`.
The augmented copy keeps entities (with the id of the inserted name when known)
and categories; token-level relation records are not carried over, since the
mentions they point at have changed length.
"""
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple, Union

import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from ..errors import Errors

Names = Dict[str, List[Tuple[str, str]]]


def entity_names_from_docbin(path: Union[str, Path], nlp: Language) -> Names:
    """The distinct (text, kb_id) of the entities of a `.spacy` file, by label."""
    names: Dict[str, Dict[str, str]] = {}
    for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
        for ent in doc.ents:
            names.setdefault(ent.label_, {}).setdefault(ent.text, ent.kb_id_)
    return {label: sorted(d.items()) for label, d in names.items()}


def _load_names(path: Union[str, Path], nlp: Language) -> Names:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    if path.suffix == ".spacy":
        return entity_names_from_docbin(path, nlp)
    data = srsly.read_json(path)
    return {label: [(n, "") if isinstance(n, str) else (n[0], n[1]) for n in items] for label, items in data.items()}


@registry.augmenters("spacy_medllm.entity_swap_augmenter.v1")
def create_entity_swap_augmenter(
    names_path: Path, level: float = 0.2, swap_prob: float = 0.5, seed: int = 0
) -> Callable[[Language, Example], Iterator[Example]]:
    """Yield each example, and with probability `level` also a copy with mentions swapped.

    names_path (Path): `.spacy` file or JSON `{label: [name or [name, kb_id], ...]}`.
    level (float): share of examples that get an augmented copy.
    swap_prob (float): chance that each entity of a chosen example is replaced.
    seed (int): the random seed, for reproducible training.
    """
    rng = random.Random(seed)
    cache: Dict[int, Names] = {}

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        yield example
        if rng.random() >= level or not example.reference.ents:
            return
        names = cache.get(id(nlp))
        if names is None:
            names = cache[id(nlp)] = _load_names(names_path, nlp)
        ref = swap_entities(nlp, example.reference, names, rng, swap_prob)
        if ref is not None:
            yield Example(nlp.make_doc(ref.text), ref)

    return augment


def swap_entities(nlp: Language, doc: Doc, names: Names, rng: random.Random, swap_prob: float) -> Union[Doc, None]:
    """A new Doc with some entities replaced by other names of their label; None if nothing changed."""
    parts: List[str] = []
    ents: List[Tuple[int, int, str, str]] = []
    pos = 0
    changed = False
    for ent in doc.ents:
        parts.append(doc.text[pos : ent.start_char])
        offset = sum(len(p) for p in parts)
        text, kb_id = ent.text, ent.kb_id_
        pool = names.get(ent.label_)
        if pool and rng.random() < swap_prob:
            text, kb_id = pool[rng.randrange(len(pool))]
            changed = changed or text != ent.text
        parts.append(text)
        ents.append((offset, offset + len(text), ent.label_, kb_id))
        pos = ent.end_char
    if not changed:
        return None
    parts.append(doc.text[pos:])
    from ..corpus.base import build_doc

    new = build_doc(nlp.vocab, nlp.make_doc, "".join(parts), [b for s, e, _, _ in ents for b in (s, e)])
    spans = [new.char_span(s, e, label=label, kb_id=kb) for s, e, label, kb in ents]
    new.ents = [s for s in spans if s is not None]
    new.cats = dict(doc.cats)
    return new
