"""ADE corpus v2 reader: drugs, adverse effects, doses and their relations.

Files: `DRUG-AE.rel` and `DRUG-DOSE.rel` (`PMID|sentence|entity|begin|end|drug|begin|end`,
offsets into the unpublished document "PMID\\n\\nTitle\\n\\nAbstract") and
`ADE-NEG.txt` (`PMID NEG sentence`). One Doc per distinct (PMID, sentence).

Policies:

* entity spans are located inside the sentence: among the occurrences of every
  entity string, the reader picks the one sentence start offset that agrees with the
  document-level offsets of all entities of the sentence; when no single offset fits
  (rare), each row is placed on its own (its drug/effect pair must agree), and failing
  that, at the first occurrence (counted in `stats.notes`);
* labels: `Drug`, `Effect`, `Dose`; relations `ADE` (Drug -> Effect) and `DOSE`
  (Drug -> Dose) as records in `doc._.medllm_rels`;
* `doc.cats["ADE"]` is 1.0 for sentences with a drug-AE relation, else 0.0; a sentence
  listed as negative and also annotated with a relation counts as positive;
* split: by PMID with `split_of` (10% test, 10% dev, 80% train), so the sentences of
  one abstract never straddle two splits.
"""
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from ..tokens import install_extensions, relation
from .base import ErrorPolicy, Mention, ReadStats, annotate, boundaries_of, build_doc, iter_lines
from .splits import split_of

REL_FILES = (("DRUG-AE.rel", "Effect", "ADE"), ("DRUG-DOSE.rel", "Dose", "DOSE"))
Row = Tuple[str, int, int, str, int, int, str, str, int, str]  # ent, b, e, drug, b, e, ent_label, rel, line, file


def read_ade(
    path: Union[str, Path],
    nlp: Language,
    *,
    split: Optional[str] = None,
    include_negative: bool = True,
    on_error: str = "raise",
    stats: Optional[ReadStats] = None,
) -> Iterator[Doc]:
    """Yield one Doc per sentence of the ADE corpus v2 folder `path`.

    split (str): "train", "dev" or "test" (see `split_of`); None reads everything.
    include_negative (bool): also yield the sentences of `ADE-NEG.txt`.
    on_error (str): "raise" or "skip" (count the malformed row and go on).
    """
    install_extensions()
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    sentences: "OrderedDict[Tuple[str, str], List[Row]]" = OrderedDict()
    policies = []
    for name, ent_label, rel_label in REL_FILES:
        file = path / name
        policy = ErrorPolicy(file, on_error, stats)
        policies.append(policy)
        for line_no, line in iter_lines(file):
            cols = line.split("|")
            if len(cols) != 8:
                policy(line_no, f"expected 8 '|'-separated columns, found {len(cols)} (truncated line?)", "line")
                continue
            pmid, sent, ent, eb, ee, drug, db, de = cols
            try:
                eb_i, ee_i, db_i, de_i = int(eb), int(ee), int(db), int(de)
            except ValueError:
                policy(line_no, f"offsets {eb!r}, {ee!r}, {db!r}, {de!r} are not integers", "line")
                continue
            if ee_i - eb_i != len(ent) or de_i - db_i != len(drug):
                policy(line_no, f"offset range does not match the length of {ent!r} ({eb_i}-{ee_i}) or {drug!r} ({db_i}-{de_i})", "line")
                continue
            if ent not in sent or drug not in sent:
                missing = ent if ent not in sent else drug
                policy(line_no, f"{missing!r} does not occur in its sentence", "line")
                continue
            sentences.setdefault((pmid, sent), []).append((ent, eb_i, ee_i, drug, db_i, de_i, ent_label, rel_label, line_no, name))
    negatives: "OrderedDict[Tuple[str, str], int]" = OrderedDict()
    if include_negative:
        file = path / "ADE-NEG.txt"
        policy = ErrorPolicy(file, on_error, stats)
        policies.append(policy)
        for line_no, line in iter_lines(file):
            parts = line.split(" ", 2)
            if len(parts) != 3 or parts[1] != "NEG" or not parts[0].isdigit():
                policy(line_no, "expected 'PMID NEG sentence'", "line")
                continue
            key = (parts[0], parts[2])
            if key in sentences or key in negatives:
                stats.notes["duplicate_sentences_merged"] += 1
                continue
            negatives[key] = line_no
    for (pmid, sent), rows in sentences.items():
        if split is not None and split_of(pmid) != split:
            continue
        yield _sentence_doc(nlp, pmid, sent, rows, stats)
    for (pmid, sent) in negatives:
        if split is not None and split_of(pmid) != split:
            continue
        doc = nlp.make_doc(sent)
        doc._.medllm_doc_id = pmid
        doc._.medllm_rels = []
        doc.cats = {"ADE": 0.0}
        stats.add_doc(doc)
        yield doc
    for policy in policies:
        policy.report()


def _occurrences(text: str, sub: str) -> List[int]:
    out, i = [], text.find(sub)
    while i != -1:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


def _offsets(sent: str, s: str, begin: int) -> Set[int]:
    return {begin - pos for pos in _occurrences(sent, s)}


def _sentence_doc(nlp: Language, pmid: str, sent: str, rows: List[Row], stats: ReadStats) -> Doc:
    common: Optional[Set[int]] = None
    for ent, eb, _, drug, db, _, *_ in rows:
        both = _offsets(sent, ent, eb) & _offsets(sent, drug, db)
        common = both if common is None else common & both
    mentions: Dict[Tuple[int, int, str], Mention] = {}
    pairs: List[Tuple[Tuple[int, int, str], Tuple[int, int, str], str]] = []
    for ent, eb, ee, drug, db, de, ent_label, rel_label, _, _ in rows:
        if common:
            base = min(common)
        else:
            both = _offsets(sent, ent, eb) & _offsets(sent, drug, db)
            if both:
                base = min(both)
                stats.notes["located_per_row"] += 1
            else:
                base = None
                stats.notes["located_at_first_occurrence"] += 1
        if base is not None:
            e_start, d_start = eb - base, db - base
        else:
            e_start, d_start = sent.find(ent), sent.find(drug)
        e_key = (e_start, e_start + len(ent), ent_label)
        d_key = (d_start, d_start + len(drug), "Drug")
        mentions.setdefault(e_key, Mention(e_key[0], e_key[1], ent_label, "", ent))
        mentions.setdefault(d_key, Mention(d_key[0], d_key[1], "Drug", "", drug))
        pairs.append((d_key, e_key, rel_label))
    ms = list(mentions.values())
    for m in ms:
        m.key = f"{m.start}:{m.end}:{m.label}"
    doc = build_doc(nlp.vocab, nlp.make_doc, sent, boundaries_of(ms))
    by_key = annotate(doc, ms)
    rels = []
    seen = set()
    for d_key, e_key, rel_label in pairs:
        head = by_key.get(f"{d_key[0]}:{d_key[1]}:{d_key[2]}")
        tail = by_key.get(f"{e_key[0]}:{e_key[1]}:{e_key[2]}")
        if head is None or tail is None or (head.start, tail.start, rel_label) in seen:
            continue
        seen.add((head.start, tail.start, rel_label))
        rels.append(relation(rel_label, head, tail))
    doc._.medllm_doc_id = pmid
    doc._.medllm_rels = rels
    doc.cats = {"ADE": 1.0 if any(r[7] == "ADE" for r in rows) else 0.0}
    stats.add_doc(doc)
    return doc
