"""Carry the annotations of a corpus through de-identification (DocBin in, DocBin out).

Every entity (`doc.ents`), every span of every `doc.spans` group and every relation record of
`doc._.medllm_rels` is moved to the replaced text: an offset before, after or between
replacements moves by the length change of the replacements before it; an annotation that
overlaps a replacement grows to cover all of it, so none is lost, shifted or cut. The new Doc
is tokenized by the pipeline's tokenizer and cut at every mapped boundary (as the corpus
readers do), so every annotation is again a token span.
"""
import bisect
from typing import Dict, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from ..tokens import build_doc, get_relations, install_extensions
from .surrogates import map_offset


def _char_range(doc: Doc, start_token: int, end_token: int) -> Tuple[int, int]:
    if end_token <= start_token:
        pos = doc[start_token].idx if start_token < len(doc) else len(doc.text)
        return pos, pos
    return doc[start_token].idx, doc[end_token - 1].idx + len(doc[end_token - 1].text)


def remap_doc(doc: Doc, new_text: str, offsets: Sequence[Sequence[object]], nlp: Language) -> Doc:
    """A Doc of `new_text` with the entities, span groups and relations of `doc` re-mapped.

    offsets: the offset map of the replacement (`[start, end, new_start, new_end, label]` rows,
        sorted, as `doc._.deid_offsets` holds them).
    """
    install_extensions()
    rows = [list(r) for r in offsets]

    def move(start: int, end: int) -> Tuple[int, int]:
        ns = map_offset(rows, start, "start")
        ne = map_offset(rows, end, "end") if end > start else ns
        return ns, max(ns, ne)

    ents = [(move(e.start_char, e.end_char), e.label_, e.kb_id_) for e in doc.ents]
    groups: Dict[str, List[Tuple[Tuple[int, int], str, str]]] = {
        key: [(move(s.start_char, s.end_char), s.label_, s.kb_id_) for s in group] for key, group in doc.spans.items()
    }
    relations = get_relations(doc)
    rel_chars = []
    for r in relations:
        moved = {}
        for side in ("head", "tail"):
            if r.get(side) is not None:
                moved[side] = move(*_char_range(doc, r[side][0], r[side][1]))
        rel_chars.append(moved)
    boundaries: List[int] = []
    for (s, e), _, _ in ents:
        boundaries.extend((s, e))
    for group in groups.values():
        for (s, e), _, _ in group:
            boundaries.extend((s, e))
    for moved in rel_chars:
        for s, e in moved.values():
            boundaries.extend((s, e))
    new = build_doc(nlp.vocab, nlp.make_doc, new_text, boundaries)

    def span(s: int, e: int, label: str = "", kb_id: str = "") -> Optional[Span]:
        return new.char_span(s, e, label=label, kb_id=kb_id, alignment_mode="expand")

    new_ents = [sp for (s, e), label, kb in ents if (sp := span(s, e, label, kb)) is not None]
    # entities overlap only when two of them grew over one replacement (see `cut_spans`)
    new.ents = filter_spans(new_ents)
    for key, group in groups.items():
        new.spans[key] = [sp for (s, e), label, kb in group if (sp := span(s, e, label, kb)) is not None]
    new_rels = []
    for r, moved in zip(relations, rel_chars):
        r = dict(r)
        for side, (s, e) in moved.items():
            sp = span(s, e)
            r[side] = [sp.start, sp.end] if sp is not None else None
        new_rels.append(r)
    new._.medllm_rels = new_rels if doc._.medllm_rels is not None else None
    for key in ("medllm_doc_id", "medllm_meta"):
        setattr(new._, key, getattr(doc._, key))
    if doc.has_extension("deid_offsets"):
        new._.deid_offsets = [list(r) for r in rows]
    return new


def annotation_boundaries(doc: Doc) -> List[int]:
    """The character offsets where an entity, a span or a relation argument of `doc` starts or ends."""
    out: List[int] = []
    for e in doc.ents:
        out.extend((e.start_char, e.end_char))
    for group in doc.spans.values():
        for s in group:
            out.extend((s.start_char, s.end_char))
    for r in get_relations(doc):
        for side in ("head", "tail"):
            if r.get(side) is not None:
                out.extend(_char_range(doc, r[side][0], r[side][1]))
    return out


def cut_spans(text: str, spans: Sequence[Tuple[int, int, str]], boundaries: Sequence[int]) -> List[Tuple[int, int, str]]:
    """Cut (start, end, label) spans at every boundary strictly inside them, so that each
    annotation of the corpus begins and ends outside a replacement or at its edge, and two
    annotations never grow over one replacement."""
    cuts = sorted(set(boundaries))
    out: List[Tuple[int, int, str]] = []
    for start, end, label in spans:
        i = bisect.bisect_right(cuts, start)
        pos = start
        while i < len(cuts) and cuts[i] < end:
            out.append((pos, cuts[i], label))
            pos = cuts[i]
            i += 1
        out.append((pos, end, label))
    # a piece with no letter or digit (the space between two names) stays as it is
    return [(s, e, label) for s, e, label in out if e > s and any(c.isalnum() for c in text[s:e])]
