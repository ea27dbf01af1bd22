"""`spacy_medllm.linker_scorer.v1`: linking accuracy on entities that match gold spans."""
from typing import Any, Dict, Iterable, Optional

from spacy.training import Example
from spacy.util import registry

from ..kb import KnowledgeBase, ids_match
from ..tokens import split_kb_id


def score_links(examples: Iterable[Example], kb: Optional[KnowledgeBase] = None, **kwargs) -> Dict[str, Any]:
    """Accuracy of `kb_id_` over predicted entities with the span and label of a gold
    entity that has an id (`NIL` gold excluded); any of a gold `D1|D2` counts as right,
    and, with `kb`, any id of the same concept (`spacy_medllm.kb.ids_match`: a primary
    id for a gold alternative id, or the reverse).

    kb (Optional[KnowledgeBase]): whose alternative ids count (the component passes its own).
    RETURNS: medllm_link_acc, plus per label under medllm_link_acc_per_type.
    """
    right = total = 0
    per_type: Dict[str, list] = {}
    for eg in examples:
        gold = {}
        for ent in eg.reference.ents:
            ids = split_kb_id(ent.kb_id_)
            if ids:
                gold[(ent.start_char, ent.end_char, ent.label_)] = set(ids)
        for ent in eg.predicted.ents:
            ids = gold.get((ent.start_char, ent.end_char, ent.label_))
            if ids is None:
                continue
            ok = ids_match(kb, ent.kb_id_, ids)
            right += ok
            total += 1
            counts = per_type.setdefault(ent.label_, [0, 0])
            counts[0] += ok
            counts[1] += 1
    return {
        "medllm_link_acc": right / total if total else None,
        "medllm_link_acc_per_type": {label: {"acc": r / t} for label, (r, t) in per_type.items()},
    }


@registry.scorers("spacy_medllm.linker_scorer.v1")
def make_linker_scorer():
    return score_links
