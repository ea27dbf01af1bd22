"""`spacy_medllm.relation_scorer.v1`: relation precision, recall and F1, micro and per label."""
from collections import defaultdict
from typing import Any, Dict, Iterable, Optional, Sequence, Set, Tuple

from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from ..tokens import get_relations
from .records import concept_keys


def _mention_keys(doc: Doc) -> Set[Tuple[str, int, int, int, int]]:
    """(label, head start char, head end char, tail start char, tail end char) of the
    records with offsets: characters, since the gold and predicted tokens may differ."""
    out = set()
    for r in get_relations(doc):
        if r["head"] is None or r["tail"] is None:
            continue
        head, tail = doc[r["head"][0] : r["head"][1]], doc[r["tail"][0] : r["tail"][1]]
        out.add((str(r["label"]), head.start_char, head.end_char, tail.start_char, tail.end_char))
    return out


def score_relations(
    examples: Iterable[Example], *, level: Optional[str] = None, labels: Optional[Sequence[str]] = None, **kwargs
) -> Dict[str, Any]:
    """Score `doc._.medllm_rels` of the predicted Docs against the reference Docs.

    level (str): "concept" compares (label, head concept id, tail concept id) per Doc,
        `D1|D2` ids giving a pair for each id and pairs without ids (`NIL`) left out, as
        in BC5CDR's CID evaluation; "mention" compares (label, head span, tail span) by
        character offsets. Default: "concept" for a Doc whose gold records have no
        offsets, else "mention". The component passes its own level.
    labels (Optional[Sequence[str]]): score only relations of these labels, gold and
        predicted (the component passes its own, so that a second relation component's
        labels do not count against it); default: every label.
    RETURNS (Dict[str, Any]): medllm_rel_p / _r / _f (micro) and medllm_rel_per_type
        ({label: {p, r, f}}); None when there is nothing to score.
    """
    counts: Dict[str, list] = defaultdict(lambda: [0, 0, 0])  # tp, predicted, gold
    keep = set(labels) if labels is not None else None
    for eg in examples:
        gold_records = get_relations(eg.reference)
        mode = level or ("concept" if any(r["head"] is None for r in gold_records) else "mention")
        if mode == "concept":
            gold = set(concept_keys(gold_records))
            pred = set(concept_keys(get_relations(eg.predicted)))
        else:
            gold = _mention_keys(eg.reference)
            pred = _mention_keys(eg.predicted)
        if keep is not None:
            gold = {key for key in gold if key[0] in keep}
            pred = {key for key in pred if key[0] in keep}
        for key in pred:
            counts[key[0]][1] += 1
            counts[key[0]][0] += key in gold
        for key in gold:
            counts[key[0]][2] += 1
    tp = sum(c[0] for c in counts.values())
    n_pred = sum(c[1] for c in counts.values())
    n_gold = sum(c[2] for c in counts.values())
    if not n_pred and not n_gold:
        return {"medllm_rel_p": None, "medllm_rel_r": None, "medllm_rel_f": None, "medllm_rel_per_type": {}}
    return {
        **{f"medllm_rel_{k}": v for k, v in prf(tp, n_pred, n_gold).items()},
        "medllm_rel_per_type": {label: prf(*c) for label, c in sorted(counts.items())},
    }


def prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    """Precision, recall and F1 (fractions) from counts."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


@registry.scorers("spacy_medllm.relation_scorer.v1")
def make_relation_scorer():
    return score_relations
