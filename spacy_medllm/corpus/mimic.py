"""Reader for MIMIC-III `NOTEEVENTS.csv`-style files of clinical notes.

One Doc per row, from the `TEXT` column; the other columns (`ROW_ID`, `SUBJECT_ID`,
`HADM_ID`, `CATEGORY`, `DESCRIPTION`, ...) go to `doc._.medllm_meta` as strings and
`ROW_ID` to `doc._.medllm_doc_id`. De-identification placeholders such as
`[**2101-10-20**]` or `[**Known lastname 1234**]` are kept whole: each is one token, so
no model ever sees (or learns to split) its pieces. Rows with `ISERROR` set are skipped
unless `include_errors` is true.
"""
import csv
import re
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..errors import Errors
from ..tokens import install_extensions
from .base import CorpusError, ErrorPolicy, ReadStats, build_doc

PLACEHOLDER = re.compile(r"\[\*\*.*?\*\*\]", re.DOTALL)


def placeholder_doc(nlp: Language, text: str) -> Doc:
    """Tokenize `text` with each `[** ... **]` placeholder as a single token."""
    matches = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)]
    doc = build_doc(nlp.vocab, nlp.make_doc, text, [b for se in matches for b in se])
    if matches:
        with doc.retokenize() as retok:
            for s, e in matches:
                span = doc.char_span(s, e)
                if span is not None and len(span) > 1:
                    retok.merge(span)
    return doc


def read_mimic_notes(
    path: Union[str, Path],
    nlp: Language,
    *,
    categories: Optional[Sequence[str]] = None,
    include_errors: bool = False,
    limit: int = 0,
    on_error: str = "raise",
    stats: Optional[ReadStats] = None,
) -> Iterator[Doc]:
    """Yield one Doc per note of a NOTEEVENTS-style CSV file.

    categories (Sequence[str]): keep only notes of these `CATEGORY` values (e.g.
        ["Discharge summary"]); None keeps all.
    limit (int): stop after this many notes (0: no limit).
    """
    install_extensions()
    stats = stats if stats is not None else ReadStats()
    policy = ErrorPolicy(path, on_error, stats)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    # streamed: a full NOTEEVENTS.csv is ~4 GB
    with path.open("r", encoding="utf-8", newline="") as file:
        yield from _read_rows(file, path, nlp, policy, stats, categories, include_errors, limit)
    policy.report()


def _read_rows(file, path, nlp, policy, stats, categories, include_errors, limit) -> Iterator[Doc]:
    reader = csv.reader(file)
    try:
        header = next(reader)
    except StopIteration:
        raise CorpusError(path, 1, "the file is empty; expected a header row with a TEXT column") from None
    except UnicodeDecodeError as err:
        raise CorpusError(path, 1, f"not valid utf-8 ({err.reason}); re-encode the file as UTF-8") from None
    header = [h.strip().upper() for h in header]
    if "TEXT" not in header:
        raise ValueError(Errors.E006.format(path=path, column="TEXT", columns=", ".join(header)))
    i_text = header.index("TEXT")
    wanted = set(categories) if categories is not None else None
    n = 0
    while True:
        start_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise CorpusError(path, start_line, f"unreadable CSV record: {err}") from None
        except UnicodeDecodeError as err:
            raise CorpusError(path, start_line, f"not valid utf-8 in or shortly after this record ({err.reason}); re-encode the file as UTF-8") from None
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            policy(start_line, f"expected {len(header)} columns, found {len(row)} (truncated record or unbalanced quotes?)", "row")
            continue
        meta = dict(zip(header, row))
        if wanted is not None and meta.get("CATEGORY") not in wanted:
            continue
        if not include_errors and meta.get("ISERROR", "").strip() not in ("", "0"):
            stats.notes["error_rows_skipped"] += 1
            continue
        doc = placeholder_doc(nlp, row[i_text])
        del meta["TEXT"]
        doc._.medllm_doc_id = meta.get("ROW_ID") or str(start_line)
        doc._.medllm_meta = meta
        doc._.medllm_rels = []
        stats.add_doc(doc)
        yield doc
        n += 1
        if limit and n >= limit:
            break
