"""EDA augmenter: edits only the context, keeps every entity, span and relation record valid."""
import random

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_medllm.augment.eda import OPERATIONS, SynonymSource, create_eda_augmenter, eda_copy
from spacy_medllm.corpus.convert import blank_biomedical
from spacy_medllm.kb import Concept, KnowledgeBase
from spacy_medllm.tokens import get_relations, install_extensions

from conftest import WORDS

NLP = blank_biomedical()
SYN = SynonymSource.load()


def _doc(words, ents, rels):
    install_extensions()
    doc = Doc(NLP.vocab, words=words)
    doc.ents = [Span(doc, s, e, label=lab, kb_id=f"D{s}") for s, e, lab in ents]
    doc.spans["mentions"] = list(doc.ents)
    doc._.medllm_rels = [
        {"head": [doc.ents[h].start, doc.ents[h].end], "tail": [doc.ents[t].start, doc.ents[t].end],
         "head_id": doc.ents[h].kb_id_, "tail_id": doc.ents[t].kb_id_, "label": "CID", "score": 1.0}
        for h, t in rels
    ]
    doc.cats = {"ADE": 1.0}
    return doc


@st.composite
def annotated_docs(draw):
    n = draw(st.integers(3, 30))
    words = [draw(st.sampled_from(WORDS + ["patients", "increased", "study", ",", "."])) for _ in range(n)]
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=8)))
    ents, prev = [], -1
    for a, b in zip(cuts[::2], cuts[1::2]):
        if a < b and a > prev:
            ents.append((a, b, draw(st.sampled_from(["Chemical", "Disease"]))))
            prev = b
    rels = []
    if len(ents) >= 2:
        rels = draw(st.lists(st.tuples(st.integers(0, len(ents) - 1), st.integers(0, len(ents) - 1)), max_size=4))
    return _doc(words, ents, rels)


def _check(old: Doc, new: Doc):
    assert [(e.text, e.label_, e.kb_id_) for e in new.ents] == [(e.text, e.label_, e.kb_id_) for e in old.ents]
    assert [(s.text, s.label_) for s in new.spans["mentions"]] == [(s.text, s.label_) for s in old.spans["mentions"]]
    old_rels, new_rels = get_relations(old), get_relations(new)
    assert len(new_rels) == len(old_rels)
    for a, b in zip(old_rels, new_rels):
        for key in ("head", "tail"):
            assert new[b[key][0]:b[key][1]].text == old[a[key][0]:a[key][1]].text
        assert (b["head_id"], b["tail_id"], b["label"]) == (a["head_id"], a["tail_id"], a["label"])
    assert new.cats == old.cats
    # the copy's text is what a pipeline would read: tokenizing it again finds the entities
    for e in new.ents:
        assert new.text[e.start_char:e.end_char] == e.text


@settings(max_examples=150, deadline=None)
@given(annotated_docs(), st.integers(0, 10_000), st.sampled_from(OPERATIONS), st.floats(0.05, 0.5))
def test_eda_keeps_annotations_valid(doc, seed, op, alpha):
    new = eda_copy(NLP, doc, random.Random(seed), SYN, alpha=alpha, operations=[op])
    if new is None:
        return
    _check(doc, new)
    assert [t.text for t in new] != [t.text for t in doc]


def _example_doc():
    words = "The patients received cisplatin and increased renal failure was observed in the study .".split()
    return _doc(words, [(3, 4, "Chemical"), (6, 8, "Disease")], [(0, 1)])


def test_each_operation_exactly():
    doc = _example_doc()
    outs = {}
    for op in OPERATIONS:
        for seed in range(50):
            new = eda_copy(NLP, doc, random.Random(seed), SYN, alpha=0.3, operations=[op])
            if new is not None:
                outs[op] = new
                break
    assert set(outs) == set(OPERATIONS)
    old_context = [t.text for t in doc if t.i not in (3, 6, 7)]
    swapped = [t.text for t in outs["swap"]]
    assert len(swapped) == len(doc) and sorted(swapped) == sorted(t.text for t in doc)
    assert len(outs["delete"]) < len(doc)
    assert len(outs["insert"]) > len(doc)
    syn = outs["synonym"]
    assert any(t.text not in old_context + ["cisplatin", "renal", "failure"] for t in syn)
    for new in outs.values():
        _check(doc, new)
        assert "cisplatin" in new.text and "renal failure" in new.text


def test_kb_aliases_are_synonyms_first(tmp_path):
    kb = KnowledgeBase([Concept("D1", "hypertension", ["high blood pressure", "HTN"])])
    kb.to_disk(tmp_path / "kb")
    source = SynonymSource.load(kb_path=tmp_path / "kb")
    assert source("Hypertension") == ["high blood pressure", "HTN"]
    assert source("patients") == ["subjects", "individuals", "cases"]
    assert source("zzz") == []


def test_registered_augmenter_in_training_corpus():
    aug = spacy.registry.resolve({"a": {"@augmenters": "spacy_medllm.eda_augmenter.v1", "level": 1.0, "alpha": 0.3, "seed": 1}})["a"]
    doc = _example_doc()
    out = list(aug(NLP, Example(NLP.make_doc(doc.text), doc)))
    assert len(out) == 2 and out[0].reference is doc
    _check(doc, out[1].reference)
    assert out[1].predicted.text == out[1].reference.text and not out[1].predicted.ents
    # the aligned example keeps its entities for training (BILUO tags of the gold entities)
    tags = out[1].get_aligned_ner()
    assert tags.count("U-Chemical") == 1 and tags.count("B-Disease") == 1


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="Unknown EDA operation"):
        create_eda_augmenter(operations=["shuffle"])
    bad = tmp_path / "syn.json"
    bad.write_text('["a", "b"]')
    with pytest.raises(ValueError, match="not a synonym list"):
        SynonymSource.load(bad)
