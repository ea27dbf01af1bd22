"""Unlabelled text for domain-adaptive pretraining: reading, a fixed held-out slice, packing.

Texts come from JSONL (`text` field), TSV/CSV (a named column), plain text (one document per
line, or one per file in a folder) or `.spacy` DocBin files (the training splits of a labelled
corpus: their text only). Gzipped files are read as they are.

The held-out slice is fixed by content, not by position: a document is held out when the
SHA-1 of its text falls in the first `heldout_per_mille` of 1,000 buckets, so the slice stays
the same whatever the order, the other sources or the number of documents read.
"""
import csv
import gzip
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy

from ..errors import Errors

TEXT_SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".txt", ".spacy")


@dataclass
class TextSource:
    """One input of pretraining text.

    path (Path): a file (or a folder of .txt files).
    domain (str): the name its held-out loss is reported under, e.g. "biomedical", "clinical".
    field (Optional[str]): the JSONL field or the TSV/CSV column holding the text.
    limit (int): read at most this many documents (0 = all).
    """

    path: Path
    domain: str = "biomedical"
    field: Optional[str] = None
    limit: int = 0

    @classmethod
    def parse(cls, value: str) -> "TextSource":
        """`PATH`, `DOMAIN=PATH` or `DOMAIN=PATH:FIELD` (the command line's form)."""
        domain = "biomedical"
        if "=" in value:
            domain, value = value.split("=", 1)
        field = None
        path = Path(value)
        if not path.exists() and ":" in value:
            head, tail = value.rsplit(":", 1)
            path, field = Path(head), tail
        return cls(path=path, domain=domain, field=field)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in TEXT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf8", errors="strict")
    return open(path, encoding="utf8", errors="strict")


def read_texts(source: TextSource) -> Iterator[str]:
    """Yield the non-empty texts of `source`. A malformed record raises E080 with file and line."""
    path = source.path
    if not path.exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    n = 0

    def keep(text: Optional[str]) -> bool:
        return bool(text and text.strip())

    if path.is_dir():
        for file in sorted(path.glob("*.txt")):
            text = file.read_text(encoding="utf8")
            if keep(text):
                yield text
                n += 1
                if source.limit and n >= source.limit:
                    return
        return
    suffix = _suffix(path)
    if suffix == ".spacy":
        from spacy.tokens import DocBin
        from spacy.vocab import Vocab

        for doc in DocBin().from_disk(path).get_docs(Vocab()):
            if keep(doc.text):
                yield doc.text
                n += 1
                if source.limit and n >= source.limit:
                    return
        return
    with _open_text(path) as f:
        try:
            if suffix in (".jsonl", ".json"):
                field = source.field or "text"
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(Errors.E080.format(path=path, line=i, reason=f"not JSON ({err.msg})"))
                    if not isinstance(record, dict) or not isinstance(record.get(field, ""), str):
                        raise ValueError(Errors.E080.format(path=path, line=i, reason=f"no string field {field!r}"))
                    if keep(record.get(field)):
                        yield record[field]
                        n += 1
                        if source.limit and n >= source.limit:
                            return
            elif suffix in (".tsv", ".csv"):
                csv.field_size_limit(sys.maxsize)
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                columns = reader.fieldnames or []
                field = source.field or ("text" if "text" in columns else "TEXT" if "TEXT" in columns else None)
                if field is None or field not in columns:
                    raise ValueError(Errors.E006.format(path=path, column=source.field or "text", columns=columns))
                for row in reader:
                    if keep(row.get(field)):
                        yield row[field]
                        n += 1
                        if source.limit and n >= source.limit:
                            return
            else:
                for line in f:
                    if keep(line):
                        yield line.rstrip("\n")
                        n += 1
                        if source.limit and n >= source.limit:
                            return
        except UnicodeDecodeError as err:
            raise ValueError(Errors.E080.format(path=path, line="?", reason=f"not UTF-8 text ({err.reason})"))


_WORD = re.compile(r"[0-9a-z]+")


def _shingles(text: str, n: int) -> Iterator[int]:
    words = _WORD.findall(text.lower())
    for i in range(max(0, len(words) - n + 1)):
        yield hash(" ".join(words[i: i + n]))


class ExclusionFilter:
    """Drops a document that shares any run of `n` words with the excluded texts.

    Used to keep the dev and test text of every corpus a model is evaluated on out of its
    pretraining data, whatever source a copy of it came through (words lowercased, runs of
    letters and digits only, so tokenization and punctuation differences do not hide a copy).
    """

    def __init__(self, texts: Iterable[str], n: int = 12):
        self.n = n
        self.shingles = set()
        for text in texts:
            self.shingles.update(_shingles(text, n))

    def __call__(self, text: str) -> bool:
        """True if `text` overlaps the excluded texts."""
        return any(h in self.shingles for h in _shingles(text, self.n))


def is_heldout(text: str, heldout_per_mille: int) -> bool:
    """Whether `text` belongs to the fixed held-out slice (`heldout_per_mille` of 1,000 buckets)."""
    digest = hashlib.sha1(text.encode("utf8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < heldout_per_mille


@dataclass
class PackedText:
    """Token ids packed into fixed-length rows, with the start of every word marked.

    input_ids (numpy.ndarray): int32 [rows, seq_len], [CLS] ... [SEP] then [PAD].
    word_ids (numpy.ndarray): int32 [rows, seq_len], the word each token belongs to
        (unique within a row), -1 for special and padding tokens.
    """

    input_ids: numpy.ndarray
    word_ids: numpy.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_tokens(self) -> int:
        return int((self.word_ids >= 0).sum())

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        numpy.save(path / "input_ids.npy", self.input_ids)
        numpy.save(path / "word_ids.npy", self.word_ids)

    @classmethod
    def load(cls, path: Path) -> "PackedText":
        return cls(
            numpy.load(path / "input_ids.npy", allow_pickle=False),
            numpy.load(path / "word_ids.npy", allow_pickle=False),
        )


def tokenize_words(tokenizer, texts: Sequence[str]) -> List[List[List[int]]]:
    """For each text, its words as lists of WordPiece ids (the tokenizer's pre-tokenized words)."""
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        words: List[List[int]] = []
        last = None
        for tok, wid in zip(ids, enc.word_ids(i)):
            if wid is None:
                continue
            if wid != last:
                words.append([])
                last = wid
            words[-1].append(tok)
        out.append(words)
    return out


def pack_words(
    docs: Iterable[List[List[int]]], *, seq_len: int, cls_id: int, sep_id: int, pad_id: int,
) -> PackedText:
    """Pack documents (lists of words) into rows of `seq_len` tokens without cutting a word.

    Documents follow each other inside a row, separated by [SEP]; a row ends where the next
    word no longer fits (a word longer than a row is cut to the row: rare, e.g. long formulae).
    """
    body = seq_len - 2
    rows: List[List[int]] = []
    wids: List[List[int]] = []
    cur: List[int] = []
    cur_w: List[int] = []
    n_words = 0

    def flush() -> None:
        nonlocal cur, cur_w, n_words
        if cur:
            ids = [cls_id] + cur + [sep_id]
            ws = [-1] + cur_w + [-1]
            ids += [pad_id] * (seq_len - len(ids))
            ws += [-1] * (seq_len - len(ws))
            rows.append(ids)
            wids.append(ws)
        cur, cur_w, n_words = [], [], 0

    for words in docs:
        if cur and len(cur) < body:
            cur.append(sep_id)
            cur_w.append(-1)
        for word in words:
            word = word[:body]
            if len(cur) + len(word) > body:
                flush()
            cur.extend(word)
            cur_w.extend([n_words] * len(word))
            n_words += 1
    flush()
    if not rows:
        return PackedText(numpy.zeros((0, seq_len), dtype="int32"), numpy.zeros((0, seq_len), dtype="int32"))
    return PackedText(numpy.asarray(rows, dtype="int32"), numpy.asarray(wids, dtype="int32"))


def build_packed(
    sources: Sequence[TextSource],
    tokenizer,
    *,
    seq_len: int,
    heldout_per_mille: int,
    heldout_max_docs: int,
    progress: Optional[Callable[[str, int], None]] = None,
    batch_docs: int = 256,
    exclude: Optional[ExclusionFilter] = None,
) -> Tuple[PackedText, dict, dict]:
    """Read, tokenize and pack every source.

    Returns the training rows (all sources shuffled together later), the held-out rows per
    domain, and counts per source (documents, words, held-out and excluded documents).
    A document that `exclude` flags (it overlaps an evaluation text) is dropped.
    """
    train_parts: List[PackedText] = []
    heldout_docs: dict = {}
    stats: dict = {}
    ids = dict(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, pad_id=tokenizer.pad_token_id)
    for source in sources:
        s = stats.setdefault(str(source.path), {"domain": source.domain, "documents": 0, "words": 0,
                                                "heldout_documents": 0, "excluded_documents": 0})
        batch: List[str] = []

        def run(batch: List[str]) -> None:
            train_parts.append(pack_words(tokenize_words(tokenizer, batch), seq_len=seq_len, **ids))

        for text in read_texts(source):
            if exclude is not None and exclude(text):
                s["excluded_documents"] += 1
                continue
            s["documents"] += 1
            s["words"] += len(text.split())
            held = heldout_docs.setdefault(source.domain, [])
            if is_heldout(text, heldout_per_mille) and len(held) < heldout_max_docs:
                held.append(text)
                s["heldout_documents"] += 1
                continue
            batch.append(text)
            if len(batch) >= batch_docs:
                run(batch)
                if progress is not None:
                    progress(source.domain, len(batch))
                batch = []
        if batch:
            run(batch)
            if progress is not None:
                progress(source.domain, len(batch))
    seq = [p for p in train_parts if len(p)]
    train = PackedText(
        numpy.concatenate([p.input_ids for p in seq]) if seq else numpy.zeros((0, seq_len), dtype="int32"),
        numpy.concatenate([p.word_ids for p in seq]) if seq else numpy.zeros((0, seq_len), dtype="int32"),
    )
    heldout = {
        domain: pack_words(tokenize_words(tokenizer, texts), seq_len=seq_len, **ids)
        for domain, texts in heldout_docs.items() if texts
    }
    return train, heldout, stats
