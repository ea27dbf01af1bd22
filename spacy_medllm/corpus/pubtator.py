"""PubTator reader (BC5CDR, NCBI-disease, MedMentions).

Format: a block per document, blocks separated by blank lines::

    PMID|t|title
    PMID|a|abstract
    PMID<TAB>start<TAB>end<TAB>text<TAB>type<TAB>id[<TAB>composite parts]
    PMID<TAB>CID<TAB>chemical id<TAB>disease id

Offsets index ``title + " " + abstract``. Policies:

* ids are kept as written (`D008750`, `C012345`, `OMIM:123`, `D1|D2`, `D1+D2`), except
  `-1` (unlinkable), which becomes `NIL`; `split_kb_id` gives the concept ids of an id string;
* a mention whose text field disagrees with its offsets keeps the offsets (warned once);
* a document id seen twice (NCBI-disease train, PMID 8528200) keeps the first copy;
* overlapping mentions: all in `doc.spans["mentions"]`, the longest in `doc.ents`;
* relation rows become concept-level records in `doc._.medllm_rels`
  (`head`/`tail` are None: PubTator relations have no evidence spans).
"""
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..errors import Warnings
from ..tokens import NCBI_LABELS, NIL, install_extensions, relation  # noqa: F401 (NCBI_LABELS: importable from here too)
from .base import ErrorPolicy, Mention, ReadStats, annotate, boundaries_of, build_doc, read_text


def read_pubtator(
    path: Union[str, Path],
    nlp: Language,
    *,
    on_error: str = "raise",
    ent_label_map: Optional[Dict[str, str]] = None,
    stats: Optional[ReadStats] = None,
) -> Iterator[Doc]:
    """Yield one Doc per PubTator document of `path`.

    path (Path): the PubTator file.
    nlp (Language): its tokenizer and vocab build the Docs.
    on_error (str): "raise" stops at the first malformed record with its file, line
        and reason; "skip" drops the record (a bad mention line, or a whole document
        whose header is broken), counts it in `stats.skipped` and warns once.
    ent_label_map (Dict[str, str]): maps source mention types to `doc.ents` labels
        (e.g. NCBI's four types to "Disease"); `doc.spans["mentions"]` keeps the source type.
    stats (ReadStats): filled with document, mention and relation counts.
    YIELDS (Doc): text, entities with ids in `kb_id_`, relations in `doc._.medllm_rels`.
    """
    install_extensions()
    stats = stats if stats is not None else ReadStats()
    policy = ErrorPolicy(path, on_error, stats)
    text = read_text(path)
    seen: Dict[str, int] = {}
    mismatch_warned = False
    for block in _blocks(text):
        parsed = _parse_block(block, policy)
        if parsed is None:
            continue
        doc_id, doc_text, mentions, rels, first_line = parsed
        if doc_id in seen:
            warnings.warn(Warnings.W003.format(path=path, doc_id=doc_id, line=first_line))
            stats.notes["duplicate_documents_dropped"] += 1
            continue
        seen[doc_id] = first_line
        for m, line in mentions:
            if m.text and doc_text[m.start : m.end] != m.text:
                stats.notes["mention_text_mismatch"] += 1
                if not mismatch_warned:
                    warnings.warn(Warnings.W002.format(path=path, line=line, given=m.text, found=doc_text[m.start : m.end]))
                    mismatch_warned = True
        ms = [m for m, _ in mentions]
        doc = build_doc(nlp.vocab, nlp.make_doc, doc_text, boundaries_of(ms))
        annotate(doc, ms, ent_label_map)
        doc._.medllm_doc_id = doc_id
        doc._.medllm_rels = [relation(label, head_id=h, tail_id=t) for label, h, t in rels]
        stats.add_doc(doc)
        yield doc
    policy.report()


def _blocks(text: str) -> Iterator[List[Tuple[int, str]]]:
    block: List[Tuple[int, str]] = []
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if block:
                yield block
                block = []
            continue
        block.append((i, line))
    if block:
        yield block


def _parse_block(block, policy: ErrorPolicy):
    first_line, head = block[0]
    if len(block) < 2 or "|t|" not in head or "|a|" not in block[1][1]:
        line = block[1][0] if len(block) > 1 else first_line
        policy(line, "a document must start with 'PMID|t|title' and 'PMID|a|abstract' lines (truncated document?)", "document")
        return None
    doc_id, _, title = head.split("|", 2)
    abs_id, _, abstract = block[1][1].split("|", 2)
    if abs_id != doc_id:
        policy(block[1][0], f"abstract id {abs_id!r} does not match title id {doc_id!r}", "document")
        return None
    doc_text = f"{title} {abstract}"
    mentions: List[Tuple[Mention, int]] = []
    rels: List[Tuple[str, str, str]] = []
    for line_no, line in block[2:]:
        cols = line.split("\t")
        if cols[0] != doc_id:
            policy(line_no, f"line belongs to document {cols[0]!r} inside the block of {doc_id!r} (missing blank line?)", "line")
            continue
        if len(cols) == 4 and not cols[1].isdigit():
            rels.append((cols[1], cols[2], cols[3]))
            continue
        if len(cols) < 5:
            policy(line_no, f"expected at least 5 tab-separated columns, found {len(cols)} (truncated line?)", "line")
            continue
        try:
            start, end = int(cols[1]), int(cols[2])
        except ValueError:
            policy(line_no, f"offsets {cols[1]!r}, {cols[2]!r} are not integers", "line")
            continue
        if not 0 <= start < end <= len(doc_text):
            policy(line_no, f"offsets {start}-{end} lie outside the document text (length {len(doc_text)}) or are empty", "line")
            continue
        kb_id = cols[5].strip() if len(cols) > 5 else ""
        if kb_id == "-1":
            kb_id = NIL
        mentions.append((Mention(start, end, cols[4], kb_id, cols[3]), line_no))
    return doc_id, doc_text, mentions, rels, first_line
