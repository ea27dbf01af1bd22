"""Shared pieces of the corpus readers: error policy, counts, and Doc building.

Annotation offsets in biomedical corpora often fall inside what a general
tokenizer treats as one token ("[3H]-naloxone", "5-FU-induced"). The readers cut
such tokens at every annotated boundary, so every gold mention is a token span and
no annotation is lost; at prediction time the tokenizer of the pipeline decides.
"""
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from .. import io as _io
from ..errors import Errors, Warnings
from ..io import FileFormatError
from ..tokens import MENTIONS_KEY, NIL, build_doc, get_relations, install_extensions, relation, split_kb_id

logger = logging.getLogger("spacy_medllm")

# the schema (`spacy_medllm.tokens`) and the file helpers (`spacy_medllm.io`) used to live
# here: their names stay importable from this module
__all__ = [
    "CorpusError", "Mention", "ReadStats", "ErrorPolicy", "build_doc", "span_for", "annotate", "boundaries_of",
    "read_text", "iter_lines", "decode", "MENTIONS_KEY", "NIL", "get_relations", "install_extensions",
    "relation", "split_kb_id",
]


class CorpusError(FileFormatError):
    """Malformed corpus input; the message names the file, the line and the reason."""


@dataclass
class Mention:
    """One annotated mention, by character offsets into the document text."""

    start: int
    end: int
    label: str
    kb_id: str = ""
    text: str = ""
    key: Optional[str] = None  # the source's own id (brat "T12"), used by relations


@dataclass
class ReadStats:
    """Counts a reader reports: documents, mentions, relations, skipped records."""

    documents: int = 0
    mentions: int = 0
    relations: int = 0
    labels: Counter = field(default_factory=Counter)
    relation_labels: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def add_doc(self, doc: Doc) -> None:
        self.documents += 1
        mentions = doc.spans[MENTIONS_KEY] if MENTIONS_KEY in doc.spans else doc.ents
        self.mentions += len(mentions)
        self.labels.update(span.label_ for span in mentions)
        rels = get_relations(doc)
        self.relations += len(rels)
        self.relation_labels.update(r["label"] for r in rels)

    def to_dict(self) -> Dict[str, object]:
        return {
            "documents": self.documents,
            "mentions": self.mentions,
            "relations": self.relations,
            "labels": dict(sorted(self.labels.items())),
            "relation_labels": dict(sorted(self.relation_labels.items())),
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
        }


class ErrorPolicy:
    """Raise on malformed input (the default), or skip the record and count it."""

    def __init__(self, path: Union[str, Path], on_error: str, stats: ReadStats):
        if on_error not in ("raise", "skip"):
            raise ValueError(Errors.E004.format(value=on_error))
        self.path = str(path)
        self.on_error = on_error
        self.stats = stats
        self.first: Optional[Tuple[int, str]] = None

    def __call__(self, line: Optional[int], reason: str, kind: str) -> None:
        if self.on_error == "raise":
            raise CorpusError(self.path, line, reason)
        self.stats.skipped[kind] += 1
        if self.first is None:
            self.first = (line if line is not None else -1, reason)

    def report(self) -> None:
        if self.first is not None:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.stats.skipped.items())
            warnings.warn(
                Warnings.W001.format(
                    path=self.path, n=sum(self.stats.skipped.values()), reasons=reasons,
                    line=self.first[0], reason=self.first[1],
                )
            )


def read_text(path: Union[str, Path], encoding: str = "utf-8") -> str:
    """Read a whole corpus file, with a clear error for a missing file or a wrong encoding
    (`CorpusError`); see `spacy_medllm.io.read_text`."""
    return _io.read_text(path, encoding, error=CorpusError)


def iter_lines(path: Union[str, Path]) -> Iterable[Tuple[int, str]]:
    """(line number, line without its line break) for the non-blank lines of a UTF-8 corpus file."""
    return _io.iter_lines(path, error=CorpusError)


def decode(data: bytes, path: Union[str, Path], encoding: str = "utf-8") -> str:
    """`data` as text; a wrong encoding raises `CorpusError` naming the file and the line."""
    return _io.decode(data, path, encoding, error=CorpusError)


def span_for(doc: Doc, m: Mention) -> Optional[Span]:
    """The token span of a mention; None when its offsets cannot be aligned."""
    span = doc.char_span(m.start, m.end, label=m.label, kb_id=m.kb_id, alignment_mode="strict")
    if span is None:
        # a mention with leading/trailing whitespace inside its offsets (Chia)
        span = doc.char_span(m.start, m.end, label=m.label, kb_id=m.kb_id, alignment_mode="contract")
    return span


def annotate(doc: Doc, mentions: Sequence[Mention], ent_label_map: Optional[Dict[str, str]] = None) -> Dict[Optional[str], Span]:
    """Write all mentions to `doc.spans["mentions"]` and a non-overlapping subset to `doc.ents`.

    Overlap policy: `doc.spans["mentions"]` keeps every mention (nested and
    overlapping ones too). `doc.ents` keeps, among overlapping mentions, the longest
    (then the earliest), as spaCy's `filter_spans` does. Returns the spans by key.
    """
    spans: List[Span] = []
    by_key: Dict[Optional[str], Span] = {}
    for m in mentions:
        span = span_for(doc, m)
        if span is None or len(span) == 0:
            continue
        spans.append(span)
        if m.key is not None:
            by_key[m.key] = span
    doc.spans[MENTIONS_KEY] = spans
    ents = []
    for span in filter_spans(spans):
        label = ent_label_map.get(span.label_, span.label_) if ent_label_map else span.label_
        ents.append(Span(doc, span.start, span.end, label=label, kb_id=span.kb_id_))
    doc.ents = ents
    return by_key


def boundaries_of(mentions: Iterable[Mention]) -> List[int]:
    out: List[int] = []
    for m in mentions:
        out.extend((m.start, m.end))
    return out
