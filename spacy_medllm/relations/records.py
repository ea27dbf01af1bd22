"""The concept-pair view of relation records (`spacy_medllm.tokens.RelationRecord`)."""
from typing import Dict, Iterable, Optional, Tuple

from spacy.tokens import Doc

from ..tokens import get_relations, split_kb_id

def concept_keys(records: Iterable[Dict[str, object]], label: Optional[str] = None) -> Dict[Tuple[str, str, str], float]:
    """The concept-pair view of relation records: {(label, head id, tail id): best score}.

    `D1|D2` ids give a key for each id; records without ids or with `NIL` give none.
    """
    out: Dict[Tuple[str, str, str], float] = {}
    for r in records:
        if label is not None and r["label"] != label:
            continue
        for h in split_kb_id(str(r.get("head_id") or "")):
            for t in split_kb_id(str(r.get("tail_id") or "")):
                key = (str(r["label"]), h, t)
                out[key] = max(out.get(key, 0.0), float(r.get("score", 1.0)))
    return out


def concept_pairs(doc: Doc, label: Optional[str] = None) -> Dict[Tuple[str, str, str], float]:
    """The relations of `doc` as concept pairs: {(label, head concept id, tail concept id): score}.

    Works for predicted records (one per concept pair, or per mention pair) and for gold
    records without offsets (BC5CDR CID) alike; see `concept_keys`.
    """
    return concept_keys(get_relations(doc), label)
