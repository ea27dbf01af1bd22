"""brat standoff reader, and Chia (clinical-trial eligibility criteria) on top of it.

`.ann` lines read: `T` text-bound entities (`T1<TAB>Label 0 4;9 12<TAB>text`), `R`
relations (`R1<TAB>Label Arg1:T1 Arg2:T2`) and `*` equivalence sets
(`*<TAB>OR T1 T2 T3`, read as a chain of pairwise relations). Attribute, event, note
and comment lines (`A`, `E`, `#`, ...) carry nothing the pipeline uses and are counted
in `stats.notes`.

Policies:

* discontinuous entities (`0 4;9 12`): each fragment becomes its own span with the
  entity's label, so every annotated token is taught to the NER; a relation involving
  the entity points to its first fragment;
* offsets win over the text field (16 Chia spans differ by whitespace); a span with
  surrounding whitespace is contracted to its tokens;
* `doc.ents` holds the labels in `labels` (Chia's domain and field entities; not
  `Scope` and the annotators' meta labels), the longest among overlapping spans;
  `doc.spans["mentions"]` keeps every span, whatever its label;
* Chia split: by trial (NCT id) with `split_of`, inclusion and exclusion criteria of a
  trial together.
"""
import zipfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..errors import Errors
from ..tokens import install_extensions, relation
from .base import ErrorPolicy, Mention, ReadStats, annotate, boundaries_of, build_doc, decode
from .splits import split_of

CHIA_LABELS = (
    "Condition", "Drug", "Procedure", "Measurement", "Observation", "Person", "Device",
    "Visit", "Value", "Temporal", "Qualifier", "Negation", "Multiplier", "Reference_point",
    "Mood", "Line",
)


def parse_brat(
    doc_text: str,
    ann: str,
    path: str,
    policy: ErrorPolicy,
    stats: ReadStats,
) -> Tuple[List[Mention], List[Tuple[str, str, str]]]:
    """Mentions (one per fragment, `key` = brat id) and (label, arg1, arg2) relations."""
    mentions: List[Mention] = []
    rels: List[Tuple[str, str, str]] = []
    for line_no, line in enumerate(ann.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        kind = line[0]
        if kind == "T":
            cols = line.split("\t")
            if len(cols) < 2 or " " not in cols[1]:
                policy(line_no, "expected 'T<id><TAB><label> <start> <end>[;<start> <end>]<TAB><text>' (truncated line?)", "line")
                continue
            label, _, ranges = cols[1].partition(" ")
            fragments = []
            try:
                for frag in ranges.split(";"):
                    s, e = frag.split()
                    fragments.append((int(s), int(e)))
            except ValueError:
                policy(line_no, f"offsets {ranges!r} are not '<start> <end>' integer pairs", "line")
                continue
            if any(not 0 <= s < e <= len(doc_text) for s, e in fragments):
                policy(line_no, f"offsets {ranges!r} lie outside the text (length {len(doc_text)}) or are empty", "line")
                continue
            if len(fragments) > 1:
                stats.notes["discontinuous_entities"] += 1
            text = cols[2] if len(cols) > 2 else ""
            if len(fragments) == 1 and text and doc_text[fragments[0][0] : fragments[0][1]] != text:
                stats.notes["mention_text_mismatch"] += 1
            for i, (s, e) in enumerate(fragments):
                key = cols[0] if i == 0 else f"{cols[0]}#{i}"
                mentions.append(Mention(s, e, label, "", doc_text[s:e], key=key))
        elif kind == "R":
            cols = line.split("\t")
            parts = cols[1].split() if len(cols) > 1 else []
            if len(parts) != 3 or not all(":" in p for p in parts[1:]):
                policy(line_no, "expected 'R<id><TAB><label> Arg1:<id> Arg2:<id>'", "line")
                continue
            rels.append((parts[0], parts[1].split(":", 1)[1], parts[2].split(":", 1)[1]))
        elif kind == "*":
            cols = line.split("\t")
            parts = cols[1].split() if len(cols) > 1 else []
            if len(parts) < 3:
                policy(line_no, "expected '*<TAB><label> <id> <id> ...'", "line")
                continue
            for a, b in zip(parts[1:], parts[2:]):
                rels.append((parts[0], a, b))
        else:
            stats.notes[f"unused_lines_{kind if kind.strip() else 'blank_start'}"] += 1
    return mentions, rels


def brat_doc(
    nlp: Language, doc_id: str, text: str, ann: str, path: str, policy: ErrorPolicy,
    stats: ReadStats, labels: Optional[Sequence[str]] = None,
) -> Doc:
    mentions, rels = parse_brat(text, ann, path, policy, stats)
    doc = build_doc(nlp.vocab, nlp.make_doc, text, boundaries_of(mentions))
    by_key = annotate(doc, mentions)
    if labels is not None:
        keep = set(labels)
        from spacy.util import filter_spans

        doc.ents = filter_spans([s for s in doc.spans["mentions"] if s.label_ in keep])
    records = []
    for label, a, b in rels:
        head, tail = by_key.get(a), by_key.get(b)
        if head is None or tail is None:
            stats.notes["relations_to_unknown_or_unaligned_entities"] += 1
            continue
        records.append(relation(label, head, tail))
    doc._.medllm_doc_id = doc_id
    doc._.medllm_rels = records
    stats.add_doc(doc)
    return doc


def read_brat_dir(
    path: Union[str, Path], nlp: Language, *, labels: Optional[Sequence[str]] = None,
    on_error: str = "raise", stats: Optional[ReadStats] = None,
) -> Iterator[Doc]:
    """Yield one Doc per `.txt`/`.ann` pair of a brat folder (or zip archive)."""
    install_extensions()
    stats = stats if stats is not None else ReadStats()
    for doc_id, text, ann, where, policy in _brat_pairs(Path(path), on_error, stats):
        yield brat_doc(nlp, doc_id, text, ann, where, policy, stats, labels)


def _brat_pairs(path: Path, on_error: str, stats: ReadStats) -> Iterator[Tuple[str, str, str, str, ErrorPolicy]]:
    if not path.exists():
        raise FileNotFoundError(Errors.E003.format(path=path))
    if path.is_dir():
        names = sorted(p for p in path.rglob("*.ann"))
        if not names:
            raise ValueError(Errors.E005.format(path=path))
        for ann_path in names:
            txt_path = ann_path.with_suffix(".txt")
            policy = ErrorPolicy(ann_path, on_error, stats)
            if not txt_path.exists():
                policy(None, f"no text file {txt_path.name} beside it", "document")
                continue
            yield ann_path.stem, decode(txt_path.read_bytes(), txt_path), decode(ann_path.read_bytes(), ann_path), str(ann_path), policy
            policy.report()
        return
    with zipfile.ZipFile(path) as zf:
        members = set(zf.namelist())
        anns = sorted(n for n in members if n.endswith(".ann"))
        if not anns:
            raise ValueError(Errors.E005.format(path=path))
        for name in anns:
            where = f"{path}:{name}"
            policy = ErrorPolicy(where, on_error, stats)
            txt = name[:-4] + ".txt"
            if txt not in members:
                policy(None, f"no text file {txt} beside it", "document")
                continue
            yield Path(name).stem, decode(zf.read(txt), f"{path}:{txt}"), decode(zf.read(name), where), where, policy
            policy.report()


def read_chia(
    path: Union[str, Path], nlp: Language, *, split: Optional[str] = None,
    labels: Optional[Sequence[str]] = CHIA_LABELS, on_error: str = "raise",
    stats: Optional[ReadStats] = None,
) -> Iterator[Doc]:
    """Yield one Doc per criteria file of Chia (`chia_with_scope.zip` or its unzipped folder).

    split (str): "train", "dev" or "test" by trial id (see `split_of`); None reads all.
    labels (Sequence[str]): the labels put in `doc.ents`; None keeps every label.
    """
    install_extensions()
    stats = stats if stats is not None else ReadStats()
    for doc_id, text, ann, where, policy in _brat_pairs(Path(path), on_error, stats):
        if split is not None and split_of(doc_id.split("_")[0]) != split:
            continue
        yield brat_doc(nlp, doc_id, text, ann, where, policy, stats, labels)
