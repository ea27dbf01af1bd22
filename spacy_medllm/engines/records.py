"""What `medllm annotate` reads and writes: input records with ids, one JSON object per Doc.

Input (by `fmt`, or from the name with "auto"; the readers are `medllm deidentify`'s):
* "text": a `.txt` file is one document per line (`unit="line"`, id `line N`) or one
  document (`unit="file"`); a folder: every `*.txt` under it, one document each (id: the
  relative path);
* "jsonl": the text in `field` ("text"), the id in `id_field` ("id"; default: `line N`);
* "csv" / "tsv" (also `.gz`): the text in `column` ("text"), the id in `id_column` (default:
  `line N`); "mimic": a MIMIC NOTEEVENTS CSV (`TEXT`, id `ROW_ID`).
A corrupt record (bad JSON, a missing field or column, undecodable bytes, an empty text) is
a `CorruptRecord` with its position.

Output: one JSON object per document, `doc_record`.
"""
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

from spacy.tokens import Doc

from ..deid.io import CorruptRecord, Record, _read_jsonl, _read_table, _read_text, detect_format
from ..errors import Errors
from ..tokens import get_relations

FORMATS = ("auto", "text", "jsonl", "csv", "tsv", "mimic")
UNITS = ("line", "file")
CONTEXT_ATTRS = ("is_negated", "is_uncertain", "is_historical", "is_hypothetical", "is_family")


def read_records(
    path: Path, fmt: str = "auto", *, unit: str = "line", field: str = "text", id_field: str = "id",
    column: Optional[str] = None, id_column: Optional[str] = None,
) -> Iterator[Union[Tuple[str, str], CorruptRecord]]:
    """(id, text) for each document of `path`, or a `CorruptRecord` for one that cannot be read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(Errors.E068.format(path=path))
    fmt = detect_format(path, fmt)
    if fmt not in FORMATS:
        raise ValueError(Errors.E066.format(path=path, fmt=fmt, known=", ".join(FORMATS[1:])))
    if unit not in UNITS:
        raise ValueError(Errors.E007.format(fmt=f"unit={unit!r}", known=", ".join(UNITS)))
    if fmt == "text" and path.is_file() and unit == "line":
        records = _lines(path)
    elif fmt == "text":
        records = ((Record(r.position, r.text, str(r.payload)) if isinstance(r, Record) else r) for r in _read_text(path))
    elif fmt == "jsonl":
        records = ((Record(r.position, r.text, _json_id(r, id_field)) if isinstance(r, Record) else r) for r in _read_jsonl(path, field))
    else:
        records = _table(path, fmt, column, id_column)
    for r in records:
        if isinstance(r, CorruptRecord):
            yield r
        elif not r.text.strip():
            yield CorruptRecord(path, r.position, "the text is empty")
        else:
            yield (r.payload, r.text)


def _lines(path: Path) -> Iterator[Union[Record, CorruptRecord]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            position = f"line {n}"
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield CorruptRecord(path, position, f"not valid UTF-8 (byte {err.start}: {err.reason})")
                continue
            if text.strip():
                yield Record(position, text, position)


def _json_id(record: Record, id_field: str) -> str:
    value = record.payload.get(id_field) if isinstance(record.payload, dict) else None
    return str(value) if value is not None else record.position


def _table(path: Path, fmt: str, column: Optional[str], id_column: Optional[str]) -> Iterator[Union[Record, CorruptRecord]]:
    if fmt == "mimic":
        column, id_column = column or "TEXT", id_column or "ROW_ID"
    rows = _read_table(path, column, "\t" if fmt == "tsv" else ",")
    header = next(rows)
    id_index = None
    if id_column:
        id_index = next((i for i, h in enumerate(header) if h.strip().lower() == id_column.lower()), None)
        if id_index is None:
            raise ValueError(Errors.E067.format(path=path, column=id_column, columns=", ".join(header)).replace("--column", "--id-column"))
    for r in rows:
        if isinstance(r, CorruptRecord):
            yield r
            continue
        _, row = r.payload
        yield Record(r.position, r.text, row[id_index].strip() if id_index is not None else r.position)


CLEANER = "annotate_doc_cleaner"  # its name in the pipeline


def free_tensors(nlp):
    """Add spaCy's `doc_cleaner` at the end of a pipeline that annotate loaded itself: each
    document's encoder outputs (`doc.tensor`, `doc._.trf_data`: ~1.6 MB per abstract) are
    dropped once the last component has run, as no record reads them. A pipe's generator keeps
    its previous batch of documents until its next batch is done, so without it two or three
    batches of encoder outputs are alive at once (the dense-linker pipeline on the BC5CDR test
    abstracts: 38 MB lower peak with it, measured). RETURNS the pipeline."""
    if CLEANER not in nlp.pipe_names:
        nlp.add_pipe("doc_cleaner", name=CLEANER, last=True, config={"attrs": {"tensor": None, "_.trf_data": None}, "silent": True})
    return nlp


def runs_context(nlp) -> bool:
    """Whether a pipeline sets ConText attributes (a medspaCy `medspacy_context` or another
    component whose factory is named like it)."""
    return any("context" in nlp.get_pipe_meta(name).factory for name in nlp.pipe_names)


def _context(ent) -> Dict[str, bool]:
    return {a: bool(getattr(ent._, a)) for a in CONTEXT_ATTRS if ent.has_extension(a)}


def doc_record(doc_id: str, doc: Doc, *, max_candidates: int = 5, text: bool = False, context: Optional[bool] = None) -> Dict[str, Any]:
    """The JSON object of one annotated document: its entities (text, label, character
    offsets, concept id and name, the best candidates with scores, ConText attributes where
    ConText ran), its relations (head and tail as entity indexes, label, score), its
    categories; with `text`, the document's text too (what `medllm visualize` draws).

    context: whether ConText ran (`runs_context(nlp)`); None: whenever its attributes are
        registered in this process."""
    ents = list(doc.ents)
    index = {(e.start, e.end): i for i, e in enumerate(ents)}
    entities = []
    for e in ents:
        entity: Dict[str, Any] = {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
        if e.kb_id_:
            entity["kb_id"] = e.kb_id_
        if e.has_extension("kb_concept") and e._.kb_concept:
            entity["kb_name"] = e._.kb_concept.get("name")
        if e.has_extension("kb_candidates") and e._.kb_candidates:
            entity["candidates"] = [[cid, round(float(s), 4)] for cid, s in e._.kb_candidates[:max_candidates]]
        if context is not False:
            entity.update(_context(e))
        entities.append(entity)
    relations = []
    for r in get_relations(doc):
        rel: Dict[str, Any] = {"label": r["label"], "score": round(float(r["score"]), 4), "head_id": r.get("head_id"), "tail_id": r.get("tail_id")}
        for side in ("head", "tail"):
            span = r.get(side)
            rel[side] = index.get(tuple(span)) if span is not None else None
        relations.append(rel)
    out: Dict[str, Any] = {"id": doc_id}
    if text:
        out["text"] = doc.text
    out.update({"entities": entities, "relations": relations})
    if doc.cats:
        out["categories"] = {k: round(float(v), 4) for k, v in doc.cats.items()}
    return out
