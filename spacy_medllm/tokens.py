"""The Doc/Span schema every part of spacy_medllm shares: extensions, relation records, ids.

Readers, components, the knowledge base and the augmenters import this module, never
each other, for what they write on a Doc:

* the extensions (`install_extensions`, one idempotent install of all of them):
  `Doc._.medllm_rels` (relation records), `Doc._.medllm_doc_id`, `Doc._.medllm_meta`
  (a reader's document id and metadata), `Doc._.deid_text`, `Doc._.deid_offsets`
  (`medllm_deid`), `Span._.kb_candidates`, `Span._.kb_concept` (`medllm_linker`);
* the relation record (`RelationRecord`, built by `relation`, read by `get_relations`):
  plain data (token offsets, character offsets, ids, label, score), no Span objects, so
  `DocBin(store_user_data=True)` and `nlp.pipe(n_process=...)` carry it;
* concept ids: `NIL` (no concept), `split_kb_id` (the ids of `D1|D2` and `D1+D2`);
* the span group of all mentions (`MENTIONS_KEY`) and the entity labels the KB types use;
* `build_doc`: a Doc whose tokens are cut at given character offsets, so that every
  annotation is a token span (readers, augmenters and de-identification build Docs so).

A record's token offsets are those of the Doc it was written on; its character offsets
(`head_char`, `tail_char`) and `text_crc` (a checksum of that Doc's text) let
`get_relations` find the same mentions in another tokenization of the same text.
"""
import zlib
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypedDict

from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

NIL = "NIL"
"""The concept id of a mention that no knowledge base concept fits."""

MENTIONS_KEY = "mentions"
"""`doc.spans` key of every annotated mention (nested and overlapping ones too)."""

CHEMICAL, DISEASE = "Chemical", "Disease"
"""The entity labels of BC5CDR, and the knowledge base types of MeSH chemicals and diseases."""

NCBI_LABELS: Dict[str, str] = {"SpecificDisease": "Disease", "DiseaseClass": "Disease", "Modifier": "Disease", "CompositeMention": "Disease"}
"""NCBI Disease's mention types, all diseases: the `doc.ents` label of each (the source type
stays on `doc.spans[MENTIONS_KEY]`)."""

RELATIONS = "medllm_rels"


def split_kb_id(kb_id: str) -> List[str]:
    """The concept ids a corpus id string stands for.

    `D1|D2` (alternatives, or BC5CDR's composite mentions) and `D1+D2` (NCBI composite
    mentions) give both ids; `NIL` and the empty string give none.
    """
    if not kb_id or kb_id == NIL:
        return []
    out: List[str] = []
    for part in kb_id.replace("+", "|").split("|"):
        part = part.strip()
        if part and part not in out and part != NIL:
            out.append(part)
    return out


def build_doc(
    vocab: Vocab,
    tokenize: Callable[[str], Doc],
    text: str,
    boundaries: Iterable[int] = (),
) -> Doc:
    """Tokenize `text` and cut tokens at every offset in `boundaries`."""
    doc = tokenize(text)
    cuts = sorted(set(b for b in boundaries if 0 < b < len(text)))
    if not cuts:
        return doc
    words: List[str] = []
    spaces: List[bool] = []
    i = 0
    for token in doc:
        start, end = token.idx, token.idx + len(token.text)
        while i < len(cuts) and cuts[i] <= start:
            i += 1
        pos = start
        j = i
        while j < len(cuts) and cuts[j] < end:
            words.append(text[pos : cuts[j]])
            spaces.append(False)
            pos = cuts[j]
            j += 1
        words.append(text[pos:end])
        spaces.append(bool(token.whitespace_))
    if len(words) == len(doc):
        return doc
    return Doc(vocab, words=words, spaces=spaces)


# ---- extensions --------------------------------------------------------------------------
def _plain(value):
    """Tuples as lists, all the way down: a DocBin gives its user data back with tuples
    (`use_list=False`), `Doc.from_bytes` (`n_process`) with lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# getters and setters over the `doc.user_data` key a plain (default=None) extension uses,
# giving the value back in one form whatever carried the Doc; module-level functions, so
# that spaCy can hand the extensions to spawned worker processes
def _key(name: str, span: Span) -> tuple:
    """The `doc.user_data` key under which spaCy keeps a span extension's value."""
    return ("._.", name, span.start_char, span.end_char)


def _get_kb_candidates(span: Span):
    return _plain(span.doc.user_data.get(_key("kb_candidates", span)))


def _set_kb_candidates(span: Span, value) -> None:
    span.doc.user_data[_key("kb_candidates", span)] = _plain(value)


def set_link(span: Span, candidates: List[List[Any]], concept: Optional[Dict[str, Any]]) -> None:
    """Write `span._.kb_candidates` and `span._.kb_concept` at once, from values already in
    plain form (lists and dicts, no tuples): what the setters store, without their copy."""
    data = span.doc.user_data
    data[_key("kb_candidates", span)] = candidates
    data[_key("kb_concept", span)] = concept


def _get_kb_concept(span: Span):
    return _plain(span.doc.user_data.get(_key("kb_concept", span)))


def _set_kb_concept(span: Span, value) -> None:
    span.doc.user_data[_key("kb_concept", span)] = _plain(value)


DOC_EXTENSIONS: Dict[str, Any] = {
    RELATIONS: None,  # List[RelationRecord]
    "medllm_doc_id": None,  # the source's document id (PMID, note id)
    "medllm_meta": None,  # the source's metadata, as strings
    "deid_text": None,  # the de-identified text (medllm_deid)
    "deid_offsets": None,  # [start, end, new_start, new_end, label] rows (medllm_deid)
}
"""Doc extensions: name -> default."""

SPAN_EXTENSIONS: Dict[str, Tuple[Callable, Callable]] = {
    "kb_candidates": (_get_kb_candidates, _set_kb_candidates),  # [[concept id, probability], ...]
    "kb_concept": (_get_kb_concept, _set_kb_concept),  # the chosen concept: id, name, types, definition
}
"""Span extensions: name -> (getter, setter)."""


def install_extensions() -> None:
    """Register every Doc and Span extension of the package (idempotent).

    Called when a reader reads or a component is built, never at import. A plain Span
    extension of a linker name that something else registered first is replaced: both
    store under the same `user_data` key, so what was written through it stays readable.
    """
    for name, default in DOC_EXTENSIONS.items():
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=default)
    for name, (getter, setter) in SPAN_EXTENSIONS.items():
        if not Span.has_extension(name) or Span.get_extension(name)[2] is not getter:
            Span.set_extension(name, getter=getter, setter=setter, force=True)


# ---- relation records --------------------------------------------------------------------
class _RecordFields(TypedDict):
    head: Optional[List[int]]
    tail: Optional[List[int]]
    head_id: Optional[str]
    tail_id: Optional[str]
    label: str
    score: float


class RelationRecord(_RecordFields, total=False):
    """One relation in `doc._.medllm_rels`.

    head, tail: [start, end] token offsets of the two mentions (None: a concept-level
        record without mentions, e.g. BC5CDR's CID pairs).
    head_char, tail_char: [start, end] character offsets of the same mentions (absent
        in a record without mentions, and in records written before they existed).
    text_crc: CRC-32 of the text the character offsets refer to (absent with them).
    head_id, tail_id: concept ids (None: none).
    label: the relation label. score: its probability (1.0 for gold records).
    component: the name of the component that wrote it (absent in gold records).
    """

    head_char: Optional[List[int]]
    tail_char: Optional[List[int]]
    text_crc: int
    component: str


def text_crc(doc: Doc) -> int:
    """The checksum of `doc.text` that records keep with their character offsets."""
    return zlib.crc32(doc.text.encode("utf8"))


def relation(
    label: str,
    head: Optional[Span] = None,
    tail: Optional[Span] = None,
    head_id: Optional[str] = None,
    tail_id: Optional[str] = None,
    score: float = 1.0,
) -> RelationRecord:
    """A relation record: plain data (token and character offsets, ids, label, score).

    label (str): the relation label.
    head, tail (Optional[Span]): the mentions (None: a concept-level record).
    head_id, tail_id (Optional[str]): concept ids; default: the mentions' `kb_id_` (or None).
    score (float): the probability.
    RETURNS (RelationRecord): the record.
    """
    record: RelationRecord = {
        "head": [head.start, head.end] if head is not None else None,
        "tail": [tail.start, tail.end] if tail is not None else None,
        "head_id": head_id if head_id is not None else (head.kb_id_ or None if head is not None else None),
        "tail_id": tail_id if tail_id is not None else (tail.kb_id_ or None if tail is not None else None),
        "label": label,
        "score": float(score),
    }
    some = head if head is not None else tail
    if some is not None:
        record["head_char"] = [head.start_char, head.end_char] if head is not None else None
        record["tail_char"] = [tail.start_char, tail.end_char] if tail is not None else None
        record["text_crc"] = text_crc(some.doc)
    return record


def set_offsets(doc: Doc, record: Dict[str, Any]) -> Dict[str, Any]:
    """`record` (changed in place) with character offsets and checksum of its token offsets
    in `doc`: for code that moves a record's token offsets onto another Doc (augmenters,
    de-identification). A record without character offsets gets none."""
    if "head_char" not in record and "tail_char" not in record:
        return record
    for side in ("head", "tail"):
        tokens = record.get(side)
        record[f"{side}_char"] = _extent(doc, tokens) if tokens is not None else None
    if record.get("head") is not None or record.get("tail") is not None:
        record["text_crc"] = text_crc(doc)
    return record


def get_relations(doc: Doc) -> List[RelationRecord]:
    """The relation records of a Doc, as lists and dicts, with token offsets of this Doc.

    msgpack (DocBin, multiprocessing) hands sequences back as tuples; this gives the
    same plain structure whether the Doc was just annotated or deserialized. Installs
    nothing: the records stored on a Doc whose extension was never installed (a DocBin
    read first) are read from its user data; a Doc without records gives [].

    A record written on another tokenization of the same text (its token offsets do not
    cover its character offsets here, and its `text_crc` is this text's) gets the token
    offsets of its character offsets in this Doc (widened to whole tokens). A record
    whose character offsets belong to another text (a tool moved its token offsets onto
    a changed text and left them) keeps its token offsets, and gets the character
    offsets of those. Records without character offsets are given as they are.
    """
    if Doc.has_extension(RELATIONS):
        stored = doc._.get(RELATIONS)
    else:
        stored = doc.user_data.get(("._.", RELATIONS, None, None))
    out: List[RelationRecord] = []
    crc: List[int] = []  # this text's checksum, computed once when needed
    for r in stored or ():
        r = dict(r)
        for key in ("head", "tail", "head_char", "tail_char"):
            if r.get(key) is not None:
                r[key] = [int(i) for i in r[key]]
        _align(doc, r, crc)
        out.append(r)  # type: ignore[arg-type]
    return out


def _extent(doc: Doc, tokens: List[int]) -> Optional[List[int]]:
    """[start, end] characters of the tokens [start, end) of `doc`; None when they are
    not a non-empty span of it."""
    start, end = tokens
    if not 0 <= start < end <= len(doc):
        return None
    last = doc[end - 1]
    return [doc[start].idx, last.idx + len(last.text)]


def _align(doc: Doc, record: Dict[str, Any], crc: List[int]) -> None:
    stale = []
    for side in ("head", "tail"):
        chars = record.get(f"{side}_char")
        if chars is None:
            continue
        tokens = record.get(side)
        if tokens is not None and _extent(doc, tokens) == chars:
            continue
        if not crc:
            crc.append(text_crc(doc))
        if record.get("text_crc", crc[0]) != crc[0]:
            stale.append(side)
            continue
        span = doc.char_span(chars[0], chars[1], alignment_mode="expand") if 0 <= chars[0] < chars[1] <= len(doc.text) else None
        if span is not None and len(span):
            record[side] = [span.start, span.end]
    if stale and all(_extent(doc, record[side]) is not None for side in ("head", "tail") if record.get(side) is not None):
        set_offsets(doc, record)
