"""Concept ids across MeSH versions: the alternative-id rule, and matching ids in evaluation.

The corpora (BC5CDR, NCBI-disease, CTD MEDIC 2017) use MeSH 2015-era ids. Since then
some supplementary records (`C…`) became descriptors under new `D` ids: olanzapine was
the supplementary record C076029 and is the 2024 descriptor D000077152 "Olanzapine". The
2024 thesaurus gives the new descriptor's names, not its old id, so a knowledge base
layered from both would hold the same substance twice, under two ids, each with half of
its names. The rule below makes them one concept with two ids.

The rule (`link_renamed_records`):

1. Only a descriptor that is new since the old MeSH (its id is not in `terms.tsv` of the
   `--mesh` folder) can absorb a supplementary record; two ids that both exist in the old
   MeSH stay two concepts, since a corpus of that time may use both.
2. Eligible records: `C…` ids named by CTD MEDIC, DrugCentral or PharmGKB and absent from the 2024
   supplementary records that the pharmacological-actions table lists (7,561 ids): a
   record still supplementary in 2024 did not become a descriptor.
3. A record matches a new descriptor when one of its names equals (case and whitespace
   ignored) the descriptor's preferred name, or else one of its non-permuted entry terms
   (names from the MeSH thesaurus source only).
4. Matches are ranked: preferred name before entry term; a name that is the record's own
   MeSH name (PharmGKB writes `MeSH:C076029(olanzapine)`; MEDIC's disease records) before
   a drug's name (DrugCentral's INN); then the older record (smaller number), then the ids. Taken in that order, each descriptor and each record is used once: one
   descriptor absorbs at most one record.
5. The primary id is the old one (`primary="old"`, the default: the record id, which
   2015-era corpora use); `primary="new"` keeps the 2024 descriptor id for corpora
   annotated with current MeSH. The other becomes an alternative id (`Concept.alt_ids`).
   With "old", a new descriptor that absorbed no record is dropped from the KB: no
   corpus of the old MeSH uses its id, and its names (often an old descriptor's entry
   terms promoted: "Mania", "Ischemic Stroke") would tie with the concept that corpus uses.

The linker answers with the primary id. The evaluation counts a prediction right when
it is a gold id or when it and a gold id are ids of the same concept (`ids_match`).
"""
import re
from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

from ..errors import Errors
from ..tokens import NIL, split_kb_id
from .knowledge_base import KnowledgeBase, normalize_alias

OLD, NEW = "old", "new"
PRIMARY_IDS = (OLD, NEW)

# how strongly a record name matches a descriptor, best first
PREFERRED, ENTRY_TERM = 0, 1
RECORD_NAME, DRUG_NAME = 0, 1

_NUMBER = re.compile(r"\d+")


def ids_match(kb: Optional[KnowledgeBase], predicted: Optional[str], gold: Union[str, Iterable[str]]) -> bool:
    """Whether a predicted id is right for a gold id string (`D1|D2`: any of them) or a
    collection of gold ids: it is one of them, or the KB has it and one of them as ids of
    the same concept. `NIL`, "" and None are never right.

    kb (KnowledgeBase): the knowledge base whose alternative ids count; None: ids must be equal.
    """
    if not predicted or predicted == NIL:
        return False
    golds = split_kb_id(gold) if isinstance(gold, str) else [g for g in gold if g and g != NIL]
    if predicted in golds:
        return True
    if kb is None:
        return False
    primary = kb.resolve(predicted)
    return primary is not None and any(kb.resolve(g) == primary for g in golds)


def link_renamed_records(
    kb: KnowledgeBase,
    new_descriptors: Iterable[str],
    record_names: Dict[str, List[Tuple[str, int]]],
    current_records: Set[str],
    thesaurus_source: str,
    primary: str = OLD,
) -> List[Dict[str, object]]:
    """Merge supplementary records that became new descriptors into one concept each
    (the rule in this module's docstring) and return what was merged.

    new_descriptors: ids of the thesaurus descriptors that the old MeSH lacks.
    record_names: record id -> (name, RECORD_NAME or DRUG_NAME) from the drug vocabularies.
    current_records: record ids known to be supplementary records still (not eligible).
    thesaurus_source: the source key of the thesaurus names (entry terms come from it).
    primary: "old" (the record id stays primary) or "new" (the descriptor id does).
    RETURNS (List[dict]): one {primary, alt, name, match} per merge, in merge order.
    """
    if primary not in PRIMARY_IDS:
        raise ValueError(Errors.E090.format(value=primary, known=", ".join(PRIMARY_IDS)))
    by_name: Dict[str, List[Tuple[str, int]]] = {}
    for record, names in record_names.items():
        if record in current_records or record not in kb or not record.startswith("C"):
            continue
        for name, strength in names:
            by_name.setdefault(normalize_alias(name), []).append((record, strength))
    pairs = []
    for descriptor in new_descriptors:
        concept = kb.get(descriptor)
        if concept is None:
            continue
        preferred = normalize_alias(concept.canonical_name)
        terms = {normalize_alias(n) for n in concept.names if concept.sources.get(n) == thesaurus_source}
        for key in {preferred} | terms:
            for record, strength in by_name.get(key, ()):
                how = PREFERRED if key == preferred else ENTRY_TERM
                pairs.append(((how, strength, _record_number(record), record, descriptor), key))
    merges: List[Dict[str, object]] = []
    used: Set[str] = set()
    for (how, strength, _, record, descriptor), key in sorted(set(pairs)):
        if record in used or descriptor in used:
            continue
        used.update((record, descriptor))
        keep, alt = (record, descriptor) if primary == OLD else (descriptor, record)
        kb.merge(keep, alt)
        merges.append({
            "primary": keep, "alt": alt, "name": key,
            "match": ("preferred name" if how == PREFERRED else "entry term") + (", record name" if strength == RECORD_NAME else ", drug name"),
        })
    return merges


def _record_number(record: str) -> int:
    m = _NUMBER.search(record)
    return int(m.group()) if m else 0
