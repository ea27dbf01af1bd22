"""kb_swap_augmenter.v1: other names of a concept (alias) or other concepts of a type (concept)."""
import random

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_medllm.augment.kb_swap import KBNames, kb_swap
from spacy_medllm.corpus.convert import blank_biomedical
from spacy_medllm.kb import Concept, KnowledgeBase
from spacy_medllm.tokens import get_relations, install_extensions

NLP = blank_biomedical()
KB = KnowledgeBase([
    Concept("D002945", "Cisplatin", ["cis-diamminedichloroplatinum", "CDDP", "Platinol"], ["Chemical"]),
    Concept("D005472", "Fluorouracil", ["5-FU", "5-fluorouracil"], ["Chemical"]),
    Concept("D008094", "Lithium", ["lithium carbonate"], ["Chemical"]),
    Concept("D051437", "Renal Insufficiency", ["renal failure", "kidney failure"], ["Disease"]),
    Concept("D006973", "Hypertension", ["high blood pressure"], ["Disease"]),
])
NAMES = KBNames(KB)


def _doc():
    install_extensions()
    words = "Cisplatin caused renal failure ; after cisplatin , renal failure persisted .".split()
    doc = Doc(NLP.vocab, words=words)
    doc.ents = [Span(doc, 0, 1, "Chemical", kb_id="D002945"), Span(doc, 2, 4, "Disease", kb_id="D051437"),
                Span(doc, 6, 7, "Chemical", kb_id="D002945"), Span(doc, 8, 10, "Disease", kb_id="D051437")]
    doc.spans["mentions"] = list(doc.ents)
    doc._.medllm_rels = [{"head": [0, 1], "tail": [2, 4], "head_id": "D002945", "tail_id": "D051437", "label": "CID", "score": 1.0}]
    return doc


def test_alias_mode_keeps_ids_and_records():
    doc = _doc()
    new = kb_swap(NLP, doc, NAMES, random.Random(3), mode="alias", swap_prob=1.0)
    ents = [(e.text, e.label_, e.kb_id_) for e in new.ents]
    chem = {t for t, lab, _ in ents if lab == "Chemical"}
    dis = {t for t, lab, _ in ents if lab == "Disease"}
    assert len(chem) == 1 and chem < {"cis-diamminedichloroplatinum", "CDDP", "Platinol"}
    assert len(dis) == 1 and dis < {"Renal Insufficiency", "kidney failure"}
    assert [e[2] for e in ents] == ["D002945", "D051437", "D002945", "D051437"]
    (rec,) = get_relations(new)
    assert (rec["head_id"], rec["tail_id"]) == ("D002945", "D051437")
    assert new[rec["head"][0]:rec["head"][1]].text in chem and new[rec["tail"][0]:rec["tail"][1]].text in dis
    assert [(m.text, m.kb_id_) for m in new.spans["mentions"]] == [(t, k) for t, _, k in ents]


def test_concept_mode_moves_ids_and_records():
    doc = _doc()
    new = kb_swap(NLP, doc, NAMES, random.Random(0), mode="concept", swap_prob=1.0)
    ents = [(e.text, e.label_, e.kb_id_) for e in new.ents]
    chem_ids = {k for _, lab, k in ents if lab == "Chemical"}
    dis_ids = {k for _, lab, k in ents if lab == "Disease"}
    assert chem_ids in ({"D005472"}, {"D008094"}) and dis_ids == {"D006973"}
    for text, _, kb in ents:
        assert text in KB[kb].names
    (rec,) = get_relations(new)
    assert (rec["head_id"], rec["tail_id"]) == (chem_ids.pop(), "D006973")
    assert new[rec["head"][0]:rec["head"][1]].text == ents[0][0]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["alias", "concept"]), st.floats(0.0, 1.0))
def test_records_stay_valid(seed, mode, prob):
    doc = _doc()
    new = kb_swap(NLP, doc, NAMES, random.Random(seed), mode=mode, swap_prob=prob)
    if new is None:
        return
    by_span = {(e.start, e.end): e for e in new.ents}
    for r in get_relations(new):
        head, tail = by_span[tuple(r["head"])], by_span[tuple(r["tail"])]
        assert (head.kb_id_, tail.kb_id_, head.label_, tail.label_) == (r["head_id"], r["tail_id"], "Chemical", "Disease")
    # the same concept keeps one name throughout the copy
    names = {}
    for e in new.ents:
        assert names.setdefault(e.kb_id_, e.text.lower()) == e.text.lower()


def test_registered_and_errors(tmp_path):
    KB.to_disk(tmp_path / "kb")
    aug = spacy.registry.resolve({"a": {"@augmenters": "spacy_medllm.kb_swap_augmenter.v1", "kb_path": str(tmp_path / "kb"),
                                        "level": 1.0, "swap_prob": 1.0}})["a"]
    doc = _doc()
    out = list(aug(NLP, Example(NLP.make_doc(doc.text), doc)))
    assert len(out) == 2 and out[1].reference.text != doc.text
    assert out[1].get_aligned_ner().count("U-Chemical") == 2
    with pytest.raises(ValueError, match="Unknown replacement mode 'other'"):
        spacy.registry.resolve({"a": {"@augmenters": "spacy_medllm.kb_swap_augmenter.v1", "kb_path": str(tmp_path / "kb"), "mode": "other"}})
