"""Mention replacement: swap entity mentions for other names of the same label.

A model trained on BC5CDR sees each drug name a few times; replacing mentions with
other training names of the same label (keeping the context) teaches it the
context, not the name list. The names come from a `.spacy` file (normally the
training split itself) or a JSON file `{"Chemical": ["aspirin", ...], ...}`.

The augmented copy keeps entities (with the id of the inserted name when known),
categories, the `mentions` span group and the relation records of `doc._.medllm_rels`
(`spacy_medllm.tokens.relation`), their token (and character) offsets re-mapped through the swaps,
so a copy of a Doc with relations is not a negative relation example. In a Doc with
relation records, names are swapped per concept: every mention of one concept id (or,
without an id, of one lowercased text) gets the same new name, the records' ids follow
(CID(D1, D2) becomes CID(new id, D2)), and a new name is never one already in the Doc, so
document-level records stay true of the copy. What cannot be re-mapped is left alone: an
entity with an annotated span boundary inside it (a nested mention, a relation argument
that covers part of it) or with several ids (`D1|D2`) keeps its name. Docs without
records swap each mention independently, as before.
"""
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.util import registry

from ..errors import Errors
from ..tokens import MENTIONS_KEY, build_doc, get_relations, install_extensions, set_offsets, split_kb_id

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


Choice = Optional[Tuple[str, str]]  # (new text, new kb_id) of an entity, None: kept


def swap_entities(nlp: Language, doc: Doc, names: Names, rng: random.Random, swap_prob: float) -> Union[Doc, None]:
    """A new Doc with some entities replaced by other names of their label; None if nothing changed.

    The entities, categories, the `mentions` span group and the relation records of `doc`
    are carried over, their offsets re-mapped (see the module).
    """
    install_extensions()
    records = get_relations(doc)
    mentions = list(doc.spans[MENTIONS_KEY]) if MENTIONS_KEY in doc.spans else []
    ents = list(doc.ents)
    if records:
        choices, id_map = _choose_by_concept(doc, ents, mentions, records, names, rng, swap_prob)
    else:
        choices, id_map = _choose_by_mention(ents, names, rng, swap_prob), {}
    return apply_swaps(nlp, doc, choices, id_map)


def apply_swaps(nlp: Language, doc: Doc, choices: List["Choice"], id_map: Dict[str, str]) -> Union[Doc, None]:
    """A new Doc with `doc.ents[i]` replaced by `choices[i]` = (text, kb_id) (None: kept).

    id_map (Dict[str, str]): old concept id -> new id, applied to the relation records'
        ids. The entities, categories, the `mentions` span group and the relation records
        are carried over, their offsets re-mapped. None if nothing changed, or if a record
        could not be re-mapped (never a wrong record).
    """
    install_extensions()
    records = get_relations(doc)
    mentions = list(doc.spans[MENTIONS_KEY]) if MENTIONS_KEY in doc.spans else []
    ents = list(doc.ents)
    if not any(c is not None and c[0] != ent.text for ent, c in zip(ents, choices)):
        return None
    # the new text, and per entity (old start, old end, new start, new end, swapped)
    parts: List[str] = []
    segments: List[Tuple[int, int, int, int, bool]] = []
    new_ents: List[Tuple[int, int, str, str]] = []
    pos = length = 0
    for ent, choice in zip(ents, choices):
        parts.append(doc.text[pos : ent.start_char])
        length += len(parts[-1])
        text, kb_id = choice if choice is not None else (ent.text, ent.kb_id_)
        parts.append(text)
        segments.append((ent.start_char, ent.end_char, length, length + len(text), choice is not None))
        new_ents.append((length, length + len(text), ent.label_, kb_id))
        length += len(text)
        pos = ent.end_char
    parts.append(doc.text[pos:])

    def move(span: Span) -> Optional[Tuple[int, int]]:
        start, end = _map_char(span.start_char, segments), _map_char(span.end_char, segments)
        return None if start is None or end is None else (start, end)

    moved_mentions = [(m, move(m)) for m in mentions]
    moved_args = [{key: move(doc[r[key][0] : r[key][1]]) for key in ("head", "tail") if r.get(key) is not None} for r in records]
    if any(None in args.values() for args in moved_args):
        return None  # cannot happen for the entities _choose_by_concept swaps; never write a wrong record
    bounds = [b for s, e, _, _ in new_ents for b in (s, e)]
    bounds += [b for _, span in moved_mentions if span is not None for b in span]
    bounds += [b for args in moved_args for span in args.values() for b in span]
    new = build_doc(nlp.vocab, nlp.make_doc, "".join(parts), bounds)
    spans = [_char_span(new, s, e, label=label, kb_id=kb) for s, e, label, kb in new_ents]
    new.ents = [s for s in spans if s is not None]
    swapped = {(ns, ne): (ent.kb_id_, kb) for ent, (_, _, ns, ne, sw), (_, _, _, kb) in zip(ents, segments, new_ents) if sw}
    if mentions:
        group = []
        for m, span in moved_mentions:
            if span is None:
                continue
            old_kb, new_kb = swapped.get(span, (None, None))
            new_span = _char_span(new, span[0], span[1], label=m.label_, kb_id=new_kb if m.kb_id_ == old_kb else m.kb_id_)
            if new_span is not None:
                group.append(new_span)
        new.spans[MENTIONS_KEY] = group
    if records:
        new._.medllm_rels = [_move_record(new, r, args, swapped, id_map) for r, args in zip(records, moved_args)]
    new.cats = dict(doc.cats)
    return new


def _choose_by_mention(ents: List[Span], names: Names, rng: random.Random, swap_prob: float) -> List[Choice]:
    choices: List[Choice] = []
    for ent in ents:
        pool = names.get(ent.label_)
        choice = None
        if pool and rng.random() < swap_prob:
            choice = pool[rng.randrange(len(pool))]
        choices.append(choice)
    return choices


def protected_offsets(doc: Doc, mentions: List[Span], records: List[Dict[str, object]]) -> Set[int]:
    """The character offsets where a mention or a relation argument starts or ends: an entity
    with one of them strictly inside cannot be renamed without breaking that annotation."""
    protected = {c for m in mentions for c in (m.start_char, m.end_char)}
    for r in records:
        for key in ("head", "tail"):
            if r.get(key) is not None:
                arg = doc[r[key][0] : r[key][1]]
                protected.update((arg.start_char, arg.end_char))
    return protected


def _choose_by_concept(
    doc: Doc, ents: List[Span], mentions: List[Span], records: List[Dict[str, object]], names: Names,
    rng: random.Random, swap_prob: float,
) -> Tuple[List[Choice], Dict[str, str]]:
    """One new name per concept (id, or label + lowercased text), and old id -> new id."""
    protected = protected_offsets(doc, mentions, records)
    groups: Dict[Tuple[str, ...], List[int]] = {}
    for i, ent in enumerate(ents):
        ids = split_kb_id(ent.kb_id_)
        key = ("id", ent.kb_id_) if ids else ("text", ent.label_, ent.text.lower())
        groups.setdefault(key, []).append(i)
    used_texts = {ent.text.lower() for ent in ents} | {m.text.lower() for m in mentions}
    used_ids = {i for span in ents + mentions for i in split_kb_id(span.kb_id_)}
    used_ids |= {str(r[k]) for r in records for k in ("head_id", "tail_id") if r.get(k)}
    choices: List[Choice] = [None] * len(ents)
    id_map: Dict[str, str] = {}
    for key, members in groups.items():
        label = ents[members[0]].label_
        pool = names.get(label)
        ids = split_kb_id(ents[members[0]].kb_id_)
        if not pool or len(ids) > 1 or any(ents[i].label_ != label for i in members):
            continue
        if any(ents[i].start_char < c < ents[i].end_char for i in members for c in protected):
            continue
        if rng.random() >= swap_prob:
            continue
        # a new name never merges with another concept of the Doc; an entity with an id
        # gets a name with one id, so that the records' ids can follow
        options = [
            (text, kb) for text, kb in pool
            if text.lower() not in used_texts and not set(split_kb_id(kb)) & used_ids
            and len(split_kb_id(kb)) in ((1,) if ids else (0, 1))
        ]
        if not options:
            continue
        text, kb = options[rng.randrange(len(options))]
        used_texts.add(text.lower())
        used_ids.update(split_kb_id(kb))
        for i in members:
            choices[i] = (text, kb)
        if ids:
            id_map[ids[0]] = kb
    return choices, id_map


def _map_char(c: int, segments: List[Tuple[int, int, int, int, bool]]) -> Optional[int]:
    """An old character offset in the new text; None inside a swapped entity."""
    shift = 0
    for old_start, old_end, new_start, new_end, swapped in segments:
        if c < old_start:
            break
        if c < old_end:
            if c == old_start:
                return new_start
            return None if swapped else new_start + (c - old_start)
        shift = new_end - old_end
    return c + shift


def _char_span(doc: Doc, start: int, end: int, **kwargs) -> Optional[Span]:
    span = doc.char_span(start, end, alignment_mode="strict", **kwargs)
    if span is None:  # a mention with whitespace inside its offsets (Chia)
        span = doc.char_span(start, end, alignment_mode="contract", **kwargs)
    return span


def _move_record(
    new: Doc, record: Dict[str, object], args: Dict[str, Tuple[int, int]],
    swapped: Dict[Tuple[int, int], Tuple[str, str]], id_map: Dict[str, str],
) -> Dict[str, object]:
    out = dict(record)
    for key in ("head", "tail"):
        span = args.get(key)
        if span is not None:
            moved = _char_span(new, span[0], span[1])
            out[key] = [moved.start, moved.end]
        old_id = record.get(f"{key}_id")
        if span is not None and span in swapped:
            out[f"{key}_id"] = swapped[span][1] or None  # the argument is a swapped entity: its new id
        elif old_id is not None and old_id in id_map:
            out[f"{key}_id"] = id_map[old_id]
    return set_offsets(new, out)
