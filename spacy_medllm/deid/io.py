"""File input and output of `medllm deidentify`: read records, de-identify, write safely.

Formats (by `fmt`, or from the name with "auto"):

* "text": a `.txt` file is one note; a folder: every `*.txt` under it, written to the same
  relative paths under the output folder;
* "jsonl": one JSON object per line, the note in `field` ("text"); other fields are kept;
* "csv" / "tsv" (also `.gz`): the note in `column` (default: "text", any case); other columns
  are kept; "mimic": a MIMIC NOTEEVENTS CSV (the `TEXT` column);
* "physionet": the `id.text` record format of the PhysioNet deid notes;
* "spacy": a DocBin; entities, span groups and relations are re-mapped (`remap.py`).

Safety: the output is never the input or inside it; an existing output is replaced only with
`force`; everything is written to a temporary path beside the output and moved into place at
the end, so an interrupted run leaves no partial output. A corrupt record (not UTF-8, not
JSON, no text field, wrong number of CSV columns) is reported with its position and skipped
(`on_error="skip"`) or stops the run (`on_error="stop"`).
"""
import csv
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import DocBin

from ..errors import Errors
from .pipe import Deidentifier
from .remap import annotation_boundaries, cut_spans, remap_doc
from .surrogates import replace_spans

FORMATS = ("auto", "text", "jsonl", "csv", "tsv", "mimic", "physionet", "spacy")
ON_ERROR = ("skip", "stop")


class CorruptRecord(ValueError):
    """A record that cannot be read; the message gives the file and the position."""

    def __init__(self, path: Union[str, Path], position: str, reason: str):
        self.path, self.position, self.reason = str(path), position, reason
        super().__init__(Errors.E065.format(path=path, position=position, reason=reason))


@dataclass
class Record:
    position: str
    text: str
    payload: Any = None


@dataclass
class DeidSummary:
    """What a run did: documents written, PHI replaced per type, records skipped."""

    documents: int = 0
    replaced: Counter = field(default_factory=Counter)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    output: str = ""

    def to_dict(self) -> Dict[str, object]:
        return {
            "documents": self.documents,
            "replaced": dict(sorted(self.replaced.items())),
            "replaced_total": sum(self.replaced.values()),
            "skipped": [{"position": p, "reason": r} for p, r in self.skipped],
            "output": self.output,
        }


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise ValueError(Errors.E066.format(path=path, fmt=fmt, known=", ".join(FORMATS)))
    if fmt != "auto":
        return fmt
    if path.is_dir():
        if (path / "id.text").exists():
            return "physionet"
        return "text"
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".csv"):
        return "mimic" if "noteevents" in name else "csv"
    if name.endswith(".spacy"):
        return "spacy"
    if name.endswith(".text"):
        return "physionet"
    return "text"


def _open_text(path: Path, mode: str = "r"):
    """Text with undecodable bytes kept as surrogate escapes, so one bad record can be reported
    and skipped instead of ending the whole file."""
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8", errors="surrogateescape", newline="")
    return path.open(mode, encoding="utf-8", errors="surrogateescape", newline="")


def _bad_utf8(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def _check_text(path: Path, position: str, text: Any) -> str:
    if not isinstance(text, str):
        raise CorruptRecord(path, position, f"the note is not a string ({type(text).__name__})")
    if _bad_utf8(text):
        raise CorruptRecord(path, position, "not valid UTF-8")
    return text


# --- readers ----------------------------------------------------------------------------
def _read_text(path: Path) -> Iterator[Union[Record, CorruptRecord]]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        rel = p.relative_to(path) if path.is_dir() else Path(p.name)
        try:
            yield Record(str(p), p.read_bytes().decode("utf-8"), rel)
        except UnicodeDecodeError as err:
            yield CorruptRecord(p, f"byte {err.start}", f"not valid UTF-8 ({err.reason})")


def _read_jsonl(path: Path, field: str) -> Iterator[Union[Record, CorruptRecord]]:
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            position = f"line {line_no}"
            try:
                if _bad_utf8(line):
                    raise CorruptRecord(path, position, "not valid UTF-8")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorruptRecord(path, position, f"not JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(obj, dict) or field not in obj:
                    raise CorruptRecord(path, position, f"expected an object with a {field!r} field")
                yield Record(position, _check_text(path, position, obj[field]), obj)
            except CorruptRecord as err:
                yield err


def _read_table(path: Path, column: Optional[str], delimiter: str) -> Iterator[Union[Record, CorruptRecord, List[str]]]:
    """Yields the header (a list) first, then records whose payload is the row."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise CorruptRecord(path, "line 1", "the file is empty; expected a header row") from None
        wanted = [column] if column else ["text", "transcription"]
        index = next((i for want in wanted for i, h in enumerate(header) if h.strip().lower() == want.lower()), None)
        if index is None:
            raise ValueError(Errors.E067.format(path=path, column=column or "text", columns=", ".join(header)))
        yield header
        while True:
            position = f"line {reader.line_num + 1}"
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                yield CorruptRecord(path, position, f"unreadable CSV record ({err})")
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield CorruptRecord(path, position, f"expected {len(header)} columns, found {len(row)} (truncated record or unbalanced quotes?)")
                continue
            try:
                yield Record(position, _check_text(path, position, row[index]), (index, row))
            except CorruptRecord as err:
                yield err


def _read_physionet(path: Path) -> Iterator[Union[Record, CorruptRecord]]:
    from .physionet import read_records

    text_path = path / "id.text" if path.is_dir() else path
    for pid, note, text, line in read_records(text_path):
        yield Record(f"line {line}", text, (pid, note))


# --- writers ----------------------------------------------------------------------------
class _Writer:
    """Writes to a temporary path beside `out`; `commit` moves it into place."""

    def __init__(self, out: Path, is_dir: bool = False):
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
            os.close(fd)
            self.tmp = Path(name)

    def commit(self) -> None:
        if self.out.is_dir() and not self.out.is_symlink():
            shutil.rmtree(self.out)
        elif self.out.exists():
            self.out.unlink()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp.exists():
            self.tmp.unlink()


def check_paths(input_path: Path, output: Path, force: bool) -> None:
    """Refuse a missing input, an output that is (or lies inside) the input, or an existing
    output without `force`."""
    if not input_path.exists():
        raise FileNotFoundError(Errors.E068.format(path=input_path))
    src, dst = input_path.resolve(), output.resolve()
    if dst == src or src in dst.parents or (input_path.is_file() and dst.is_dir() and dst in src.parents):
        raise ValueError(Errors.E064.format(path=output, input=input_path))
    if output.exists() and not force:
        raise FileExistsError(Errors.E063.format(path=output))


def find_deid(nlp: Language) -> Deidentifier:
    for _, pipe in nlp.pipeline:
        if isinstance(pipe, Deidentifier):
            return pipe
    raise ValueError(Errors.E062.format(pipes=", ".join(nlp.pipe_names)))


def deidentify_path(
    nlp: Language,
    input_path: Union[str, Path],
    output: Union[str, Path],
    *,
    fmt: str = "auto",
    column: Optional[str] = None,
    field: str = "text",
    on_error: str = "skip",
    force: bool = False,
    batch_size: int = 32,
    n_process: int = 1,
    progress: Optional[Callable[[int], None]] = None,
) -> DeidSummary:
    """De-identify the notes of `input_path` into `output` (same format) with `nlp`, whose
    pipeline holds a `medllm_deid` component.

    on_error (str): "skip" a corrupt record (reported in the summary and warned about) or
        "stop" the run (`CorruptRecord`; no output is written).
    progress (Optional[Callable[[int], None]]): called with the number of records done.
    RETURNS (DeidSummary): documents written, replacements per PHI type, records skipped.
    """
    input_path, output = Path(input_path), Path(output)
    if on_error not in ON_ERROR:
        raise ValueError(Errors.E004.format(value=on_error))
    check_paths(input_path, output, force)
    fmt = detect_format(input_path, fmt)
    if (fmt == "spacy") != output.name.endswith(".spacy"):
        raise ValueError(Errors.E069.format(path=output))
    deid = find_deid(nlp)
    summary = DeidSummary(output=str(output))
    writer = _Writer(output, is_dir=fmt == "text" and input_path.is_dir())
    try:
        if fmt == "spacy":
            _run_docbin(nlp, deid, input_path, writer.tmp, summary, batch_size, progress)
        else:
            _run_records(nlp, deid, input_path, writer, fmt, column, field, on_error, summary, batch_size, n_process, progress)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    if summary.skipped:
        pos, reason = summary.skipped[0]
        warnings.warn(f"{input_path}: skipped {len(summary.skipped)} corrupt record(s); first: {pos}: {reason}")
    return summary


def _records(input_path: Path, fmt: str, column: Optional[str], field: str):
    if fmt == "text":
        return None, _read_text(input_path)
    if fmt == "jsonl":
        return None, _read_jsonl(input_path, field)
    if fmt == "physionet":
        return None, _read_physionet(input_path)
    if fmt in ("csv", "tsv", "mimic"):
        it = _read_table(input_path, column or ("TEXT" if fmt == "mimic" else None), "\t" if fmt == "tsv" else ",")
        header = next(it)
        return header, it
    raise ValueError(Errors.E066.format(path=input_path, fmt=fmt, known=", ".join(FORMATS)))


def _run_records(nlp, deid, input_path, writer, fmt, column, field, on_error, summary, batch_size, n_process, progress) -> None:
    header, stream = _records(input_path, fmt, column, field)
    done = [0]

    def good() -> Iterator[Tuple[str, Record]]:
        for item in stream:
            done[0] += 1
            if isinstance(item, CorruptRecord):
                if on_error == "stop":
                    raise item
                summary.skipped.append((item.position, item.reason))
                continue
            yield item.text, item

    out_file = None
    table = None
    if fmt != "text":
        if writer.out.name.lower().endswith(".gz"):
            out_file = io.TextIOWrapper(gzip.open(writer.tmp, "wb"), encoding="utf-8", newline="")
        else:
            out_file = writer.tmp.open("w", encoding="utf-8", newline="")
        if header is not None:
            table = csv.writer(out_file, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
            table.writerow(header)
    try:
        for doc, record in nlp.pipe(good(), as_tuples=True, batch_size=batch_size, n_process=n_process):
            text = doc._.deid_text if doc._.deid_text is not None else doc.text
            summary.replaced.update(row[4] for row in doc._.deid_offsets or ())
            summary.documents += 1
            if fmt == "text":
                target = writer.tmp / record.payload
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            elif fmt == "jsonl":
                obj = dict(record.payload)
                obj[field] = text
                out_file.write(json.dumps(obj, ensure_ascii=False) + "\n")
            elif fmt == "physionet":
                pid, note = record.payload
                out_file.write(f"START_OF_RECORD={pid}||||{note}||||\n{text}||||END_OF_RECORD\n\n")
            else:
                index, row = record.payload
                row = list(row)
                row[index] = text
                table.writerow(row)
            if progress is not None:
                progress(done[0])
    finally:
        if out_file is not None:
            out_file.close()


def _run_docbin(nlp, deid, input_path, tmp, summary, batch_size, progress) -> None:
    from ..tokens import install_extensions

    install_extensions()
    docs = list(DocBin().from_disk(input_path).get_docs(nlp.vocab))
    out = DocBin(store_user_data=True)
    for i, (doc, found) in enumerate(zip(docs, nlp.pipe((d.text for d in docs), batch_size=batch_size)), start=1):
        spans = [(s.start_char, s.end_char, s.label_) for s in found.spans[deid.spans_key]]
        spans = cut_spans(doc.text, spans, annotation_boundaries(doc))
        mode = deid.replace if deid.replace != "none" else "tag"
        text, offsets = replace_spans(doc.text, spans, mode, deid.surrogates(doc.text) if mode == "surrogate" else None)
        out.add(remap_doc(doc, text, offsets, nlp))
        summary.replaced.update(row[4] for row in offsets)
        summary.documents += 1
        if progress is not None:
            progress(i)
    out.to_disk(tmp)
