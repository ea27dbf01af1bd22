"""`spacy_medllm.entity_swap_augmenter.v1` on Docs with relation records, span groups and
without: exact texts, entities, re-mapped records, and the behaviour of Docs without
records kept as it was."""
import random

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from spacy_medllm.augment.entity_swap import swap_entities
from spacy_medllm.corpus.convert import blank_biomedical
from spacy_medllm.relations import concept_pairs
from spacy_medllm.tokens import MENTIONS_KEY, get_relations, install_extensions, relation, text_crc


@pytest.fixture
def nlp():
    install_extensions()
    return blank_biomedical()


def ents_of(doc):
    return [(e.text, e.label_, e.kb_id_) for e in doc.ents]


def args_of(doc):
    """The records with their arguments as text."""
    out = []
    for r in get_relations(doc):
        head = doc[r["head"][0] : r["head"][1]].text if r["head"] is not None else None
        tail = doc[r["tail"][0] : r["tail"][1]].text if r["tail"] is not None else None
        out.append((r["label"], head, tail, r["head_id"], r["tail_id"]))
    return out


def ade_doc(nlp):
    doc = nlp("Patients on lithium developed tremor after 600 mg daily .")
    spans = [doc.char_span(12, 19, "Drug"), doc.char_span(30, 36, "Effect"), doc.char_span(43, 49, "Dose")]
    doc.ents = spans
    doc._.medllm_rels = [relation("ADE", spans[0], spans[1]), relation("DOSE", spans[0], spans[2])]
    return doc


def test_mention_records_are_remapped(nlp):
    doc = ade_doc(nlp)
    names = {"Drug": [("5-fluorouracil", "")], "Effect": [("acute kidney injury", "")]}
    new = swap_entities(nlp, doc, names, random.Random(0), swap_prob=1.0)
    assert new.text == "Patients on 5-fluorouracil developed acute kidney injury after 600 mg daily ."
    assert [t.text for t in new][2:9] == ["5", "-", "fluorouracil", "developed", "acute", "kidney", "injury"]
    assert ents_of(new) == [("5-fluorouracil", "Drug", ""), ("acute kidney injury", "Effect", ""), ("600 mg", "Dose", "")]
    assert get_relations(new) == [
        {"head": [2, 5], "tail": [6, 9], "head_id": None, "tail_id": None, "label": "ADE", "score": 1.0,
         "head_char": [12, 26], "tail_char": [37, 56], "text_crc": text_crc(new)},
        {"head": [2, 5], "tail": [10, 12], "head_id": None, "tail_id": None, "label": "DOSE", "score": 1.0,
         "head_char": [12, 26], "tail_char": [63, 69], "text_crc": text_crc(new)},
    ]
    # the original Doc is untouched
    assert get_relations(doc)[0]["head"] == [2, 3] and doc.text.startswith("Patients on lithium")


def test_concept_records_follow_the_new_ids(nlp):
    """BC5CDR-style records (ids, no offsets): every mention of a concept gets the same new
    name and the record names the new concept, so the copy is still a positive example."""
    doc = nlp("Cisplatin caused renal failure . Cisplatin also caused nausea .")
    doc.ents = [doc.char_span(0, 9, "Chemical", kb_id="D002945"), doc.char_span(17, 30, "Disease", kb_id="D051437"),
                doc.char_span(33, 42, "Chemical", kb_id="D002945"), doc.char_span(55, 61, "Disease", kb_id="D009325")]
    doc._.medllm_rels = [relation("CID", head_id="D002945", tail_id="D051437")]
    # "cisplatin" / D002945 and "renal failure" are in the Doc already: never chosen
    names = {"Chemical": [("cisplatin", "D002945"), ("lithium", "D008094")],
             "Disease": [("renal failure", "D051437"), ("acute kidney injury", "D058186")]}
    new = swap_entities(nlp, doc, names, random.Random(0), swap_prob=1.0)
    assert new.text == "lithium caused acute kidney injury . lithium also caused nausea ."
    assert ents_of(new) == [("lithium", "Chemical", "D008094"), ("acute kidney injury", "Disease", "D058186"),
                            ("lithium", "Chemical", "D008094"), ("nausea", "Disease", "D009325")]
    assert get_relations(new) == [{"head": None, "tail": None, "head_id": "D008094", "tail_id": "D058186", "label": "CID", "score": 1.0}]
    assert concept_pairs(new) == {("CID", "D008094", "D058186"): 1.0}


def test_an_entity_with_an_inner_boundary_keeps_its_name(nlp):
    """brat-style: a nested mention inside "renal failure" and a record on it; the entity
    around it stays, the others move, the span group and the records follow."""
    doc = nlp("Lithium caused renal failure in rats .")
    lithium, failure, rats = doc.char_span(0, 7, "Drug"), doc.char_span(15, 28, "Condition"), doc.char_span(32, 36, "Species")
    renal = doc.char_span(15, 20, "Anatomy")
    doc.ents = [lithium, failure, rats]
    doc.spans[MENTIONS_KEY] = [lithium, renal, failure, rats]
    doc._.medllm_rels = [relation("Causes", lithium, failure), relation("Part_of", renal, failure), relation("In", failure, rats)]
    names = {"Drug": [("5-fluorouracil", "")], "Condition": [("fever", "")], "Species": [("mice", "")]}
    new = swap_entities(nlp, doc, names, random.Random(0), swap_prob=1.0)
    assert new.text == "5-fluorouracil caused renal failure in mice ."
    assert ents_of(new) == [("5-fluorouracil", "Drug", ""), ("renal failure", "Condition", ""), ("mice", "Species", "")]
    assert [(s.text, s.label_) for s in new.spans[MENTIONS_KEY]] == [
        ("5-fluorouracil", "Drug"), ("renal", "Anatomy"), ("renal failure", "Condition"), ("mice", "Species")]
    assert args_of(new) == [("Causes", "5-fluorouracil", "renal failure", None, None),
                            ("Part_of", "renal", "renal failure", None, None), ("In", "renal failure", "mice", None, None)]


def test_composite_ids_and_exhausted_names(nlp):
    doc = nlp("Cisplatin caused ovarian and breast cancer .")
    doc.ents = [doc.char_span(0, 9, "Chemical", kb_id="D002945"), doc.char_span(17, 42, "Disease", kb_id="D010051|D001943")]
    doc._.medllm_rels = [relation("CID", head_id="D002945", tail_id="D010051"), relation("CID", head_id="D002945", tail_id="D001943")]
    names = {"Chemical": [("lithium", "D008094")], "Disease": [("fever", "D005334")]}
    new = swap_entities(nlp, doc, names, random.Random(0), swap_prob=1.0)
    # the composite mention (the records name either part) keeps its name; the chemical moves
    assert new.text == "lithium caused ovarian and breast cancer ."
    assert args_of(new) == [("CID", None, None, "D008094", "D010051"), ("CID", None, None, "D008094", "D001943")]
    # an entity with an id is never given a name without one, nor a name already in the Doc
    assert swap_entities(nlp, doc, {"Chemical": [("aspirin", ""), ("cisplatin", "D999999")]}, random.Random(0), 1.0) is None
    assert swap_entities(nlp, doc, names, random.Random(0), swap_prob=0.0) is None


def test_docs_without_records_swap_as_before(nlp):
    """Per mention, with the same random draws as before records were carried (pinned)."""
    doc = nlp("Cisplatin and lithium caused renal failure and seizures.")
    doc.ents = [doc.char_span(0, 9, "Chemical", kb_id="D002945"), doc.char_span(14, 21, "Chemical", kb_id="D008094"),
                doc.char_span(29, 42, "Disease", kb_id="D051437"), doc.char_span(47, 55, "Disease", kb_id="D012640")]
    names = {"Chemical": [("5-fluorouracil", "D005472"), ("aspirin", "D001241"), ("lithium", "D008094")],
             "Disease": [("acute kidney injury", "D058186"), ("fever", "D005334")]}
    out = [swap_entities(nlp, doc, names, random.Random(seed), 0.5) for seed in range(6)]
    assert [d.text if d is not None else None for d in out] == [
        "Cisplatin and lithium caused fever and seizures.",
        "5-fluorouracil and aspirin caused renal failure and fever.",
        "Cisplatin and lithium caused acute kidney injury and acute kidney injury.",
        "lithium and lithium caused acute kidney injury and seizures.",
        "5-fluorouracil and lithium caused acute kidney injury and fever.",
        None,
    ]
    assert [(e.text, e.kb_id_) for e in out[1].ents] == [("5-fluorouracil", "D005472"), ("aspirin", "D001241"), ("renal failure", "D051437"), ("fever", "D005334")]
    assert out[1]._.medllm_rels is None


def test_augmenter_carries_records_through_docbin(nlp, tmp_path):
    doc = ade_doc(nlp)
    doc.cats = {"ADE": 1.0}
    other = nlp("Aspirin caused a rash .")
    other.ents = [other.char_span(0, 7, "Drug"), other.char_span(17, 21, "Effect")]
    DocBin(docs=[doc, other], store_user_data=True).to_disk(tmp_path / "train.spacy")
    config = {"@augmenters": "spacy_medllm.entity_swap_augmenter.v1", "names_path": str(tmp_path / "train.spacy"), "level": 1.0, "swap_prob": 1.0}
    augment = spacy.registry.resolve({"a": config})["a"]
    out = list(augment(nlp, Example(nlp.make_doc(doc.text), doc)))
    assert len(out) == 2 and out[0].reference is doc
    ref = out[1].reference
    assert ref.text == "Patients on Aspirin developed rash after 600 mg daily ."
    assert out[1].predicted.text == ref.text and not out[1].predicted.ents
    assert args_of(ref) == [("ADE", "Aspirin", "rash", None, None), ("DOSE", "Aspirin", "600 mg", None, None)]
    assert ref.cats == {"ADE": 1.0}
    # the records survive a DocBin round trip of the augmented copy
    data = DocBin(docs=[ref], store_user_data=True).to_bytes()
    (back,) = list(DocBin(store_user_data=True).from_bytes(data).get_docs(nlp.vocab))
    assert get_relations(back) == get_relations(ref)
