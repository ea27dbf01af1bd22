"""medllm_rel: candidate pairs, exact relations after overfitting, bounds, serialization,
nlp.pipe, thresholds, scorer, rendering, configs, two relation components. Texts are
invented. `nlp.pipe(n_process=2)` is tested in test_multiprocess.py."""
from collections import Counter
from pathlib import Path

import numpy
import pytest
import srsly
import spacy
from spacy import util
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_medllm.relations import concept_pairs, gold_entity_docs, make_type_pairs, render, score_relations
from spacy_medllm.relations.reader import create_relation_corpus
from spacy_medllm.tokens import get_relations, install_extensions, relation

ROOT = Path(__file__).parent.parent

SMALL_MODEL = {
    "@architectures": "spacy_medllm.RelationModel.v1",
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2", "pretrained_vectors": None, "width": 32, "depth": 1,
        "embed_size": 500, "window_size": 1, "maxout_pieces": 2, "subword_features": True,
    },
    "pair_representation": {
        "@architectures": "spacy_medllm.PairRepresentation.v1", "hidden_width": 32, "distance_width": 8,
        "depth": 1, "dropout": 0.0, "n_entity_labels": 8,
    },
    "classifier": {"@architectures": "spacy_medllm.RelationClassifier.v1", "hidden_width": 32, "dropout": 0.0},
}

# document level: concept ids, repeated mentions, a composite D5|D6 mention, an unlinked one
CID_TRAIN = [
    (
        "Cisplatin nephrotoxicity in rats . Cisplatin caused renal failure , and naloxone did not prevent it . Renal failure was severe .",
        [(0, 9, "Chemical", "C1"), (10, 24, "Disease", "D1"), (35, 44, "Chemical", "C1"), (52, 65, "Disease", "D2"),
         (72, 80, "Chemical", "C2"), (102, 115, "Disease", "D2")],
        [("C1", "D1"), ("C1", "D2")],
    ),
    (
        "Lithium and clonidine were given . Lithium induced tremor and hypotension ; clonidine was not associated with ovarian and breast cancer .",
        [(0, 7, "Chemical", "C3"), (12, 21, "Chemical", "C4"), (35, 42, "Chemical", "C3"), (51, 57, "Disease", "D3"),
         (62, 73, "Disease", "D4"), (76, 85, "Chemical", "C4"), (110, 135, "Disease", "D5|D6")],
        [("C3", "D3"), ("C3", "D4")],
    ),
    (
        "The drug xq-7 caused fever in one patient .",
        [(9, 13, "Chemical", "NIL"), (21, 26, "Disease", "D7")],
        [],
    ),
]

# sentence level: mention pairs, two labels
ADE_TRAIN = [
    ("Patients on lithium developed tremor after 600 mg daily .", [(12, 19, "Drug"), (30, 36, "Effect"), (43, 55, "Dose")],
     [("ADE", 0, 1), ("DOSE", 0, 2)]),
    ("Naloxone reversed the hypotension , but clonidine caused dizziness .", [(0, 8, "Drug"), (22, 33, "Effect"), (40, 49, "Drug"), (57, 66, "Effect")],
     [("ADE", 2, 3)]),
    ("Rash was seen with cisplatin .", [(0, 4, "Effect"), (19, 28, "Drug")], [("ADE", 1, 0)]),
    ("Aspirin 100 mg was well tolerated .", [(0, 7, "Drug"), (8, 14, "Dose")], [("DOSE", 0, 1)]),
]
ADE_PAIRS = [["Drug", "Effect"], ["Drug", "Dose"]]


def cid_doc(nlp, text, ents, pairs=None, with_ids=True):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label=l, kb_id=k if with_ids else "") for s, e, l, k in ents]
    if pairs is not None:
        doc._.medllm_rels = [relation("CID", head_id=h, tail_id=t) for h, t in pairs]
    return doc


def ade_doc(nlp, text, ents, rels=None):
    doc = nlp.make_doc(text)
    spans = [doc.char_span(s, e, label=l) for s, e, l in ents]
    doc.ents = spans
    if rels is not None:
        doc._.medllm_rels = [relation(label, spans[h], spans[t]) for label, h, t in rels]
    return doc


def make_nlp(candidates=None):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    config = {"model": SMALL_MODEL}
    if candidates is not None:
        config["candidates"] = candidates
    rel = nlp.add_pipe("medllm_rel", config=config)
    return nlp, rel


def train(nlp, examples, steps):
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer, losses={})
    return nlp


@pytest.fixture(scope="module")
def cid_nlp():
    install_extensions()
    nlp, _ = make_nlp()
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
    return train(nlp, examples, 60)


@pytest.fixture(scope="module")
def ade_nlp():
    install_extensions()
    nlp, _ = make_nlp({"@misc": "spacy_medllm.type_pairs.v1", "pairs": ADE_PAIRS, "level": "mention", "max_pairs": 100})
    examples = [Example(nlp.make_doc(t), ade_doc(nlp, t, e, r)) for t, e, r in ADE_TRAIN]
    return train(nlp, examples, 60)


def rels_of(doc, with_score=False):
    return [
        (r["label"], tuple(r["head"]), tuple(r["tail"]), r["head_id"], r["tail_id"]) + ((r["score"],) if with_score else ())
        for r in get_relations(doc)
    ]


# ---- candidate pairs ---------------------------------------------------------------------------
def test_concept_level_instances():
    nlp = spacy.blank("en")
    doc = cid_doc(nlp, *CID_TRAIN[1][:2])
    inst = make_type_pairs([["Chemical", "Disease"]], level="concept")(doc)
    ents = [(e.label, e.concept_id, e.mentions) for e in inst.entities]
    # the composite mention (index 6) belongs to both of its concepts
    assert ents == [("Chemical", "C3", [0, 2]), ("Chemical", "C4", [1, 5]), ("Disease", "D3", [3]), ("Disease", "D4", [4]),
                    ("Disease", "D5", [6]), ("Disease", "D6", [6])]
    assert len(inst.pairs) == 2 * 4 and all(inst.entities[h].label == "Chemical" for h, _ in inst.pairs)
    # the evidence of (C3, D3) is the closest pair of mentions: "Lithium" (2nd) -> "tremor"
    p = inst.pairs.index((0, 2))
    assert inst.evidence[p] == (2, 3) and inst.gaps[p] == 1 and inst.tail_after[p]
    # unlinked mentions are grouped by label and text
    doc = cid_doc(nlp, "xq-7 and xq-7 caused fever .", [(0, 4, "Chemical", "NIL"), (9, 13, "Chemical", "NIL"), (21, 26, "Disease", "D7")])
    inst = make_type_pairs([["Chemical", "Disease"]], level="concept")(doc)
    assert [(e.concept_id, e.mentions) for e in inst.entities] == [(None, [0, 1]), ("D7", [2])]


def test_mention_level_instances_and_wildcards():
    nlp = spacy.blank("en")
    doc = ade_doc(nlp, *ADE_TRAIN[1][:2])
    inst = make_type_pairs(ADE_PAIRS, level="mention")(doc)
    assert inst.pairs == [(0, 1), (0, 3), (2, 1), (2, 3)]
    assert [(g, a) for g, a in zip(inst.gaps, inst.tail_after)] == [(2, True), (7, True), (2, False), (1, True)]
    every = make_type_pairs([["*", "*"]], level="mention", max_distance=2)(doc)
    assert every.pairs == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    with pytest.raises(ValueError, match="E033"):
        make_type_pairs([["Drug"]])
    with pytest.raises(ValueError, match="E031"):
        make_type_pairs(ADE_PAIRS, level="sentence")


def test_many_entities_are_bounded():
    """A long document with hundreds of entities: pairs are capped, the closest kept."""
    n = 400
    words = []
    for i in range(n):
        words += [f"drug{i}" if i % 2 == 0 else f"effect{i}", "and"]
    doc = Doc(spacy.blank("en").vocab, words=words)
    doc.ents = [Span(doc, 2 * i, 2 * i + 1, label="Drug" if i % 2 == 0 else "Effect") for i in range(n)]
    for level in ("mention", "concept"):
        inst = make_type_pairs([["Drug", "Effect"]], level=level, max_pairs=500)(doc)
        assert inst.n_candidates == (n // 2) ** 2 and len(inst.pairs) == 500
        # the closest: the 399 neighbours (1 token apart), then 101 of the 397 pairs 5 apart
        assert Counter(inst.gaps) == {1: 399, 5: 101}
    inst = make_type_pairs([["Drug", "Effect"]], level="mention", max_distance=3)(doc)
    assert len(inst.pairs) == n - 1 and max(inst.gaps) <= 3


# ---- the component ----------------------------------------------------------------------------
def predict_cid(nlp, text, ents, with_ids=True):
    return nlp.get_pipe("medllm_rel")(cid_doc(nlp, text, ents, with_ids=with_ids))


def test_overfit_cid_exact(cid_nlp):
    docs = [predict_cid(cid_nlp, t, e) for t, e, _ in CID_TRAIN]
    assert rels_of(docs[0]) == [("CID", (0, 1), (1, 2), "C1", "D1"), ("CID", (5, 6), (7, 9), "C1", "D2")]
    assert rels_of(docs[1]) == [("CID", (6, 7), (8, 9), "C3", "D3"), ("CID", (6, 7), (10, 11), "C3", "D4")]
    assert rels_of(docs[2]) == []
    assert all(r["score"] >= 0.5 for r in get_relations(docs[0]))
    # the concept-pair view, and the scorer at concept level
    assert concept_pairs(docs[1]) == {("CID", "C3", "D3"): pytest.approx(get_relations(docs[1])[0]["score"]),
                                      ("CID", "C3", "D4"): pytest.approx(get_relations(docs[1])[1]["score"])}
    examples = [Example(d, cid_doc(cid_nlp, t, e, p)) for d, (t, e, p) in zip(docs, CID_TRAIN)]
    scores = score_relations(examples, level="concept")
    assert (scores["medllm_rel_p"], scores["medllm_rel_r"], scores["medllm_rel_f"]) == (1.0, 1.0, 1.0)


def test_overfit_mentions_exact(ade_nlp):
    rel = ade_nlp.get_pipe("medllm_rel")
    assert rel.labels == ("ADE", "DOSE")
    got = [rels_of(rel(ade_doc(ade_nlp, t, e))) for t, e, _ in ADE_TRAIN]
    assert got == [
        [("ADE", (2, 3), (4, 5), None, None), ("DOSE", (2, 3), (6, 9), None, None)],
        [("ADE", (6, 7), (8, 9), None, None)],
        [("ADE", (4, 5), (0, 1), None, None)],
        [("DOSE", (0, 1), (1, 3), None, None)],
    ]
    examples = [Example(rel(ade_doc(ade_nlp, t, e)), ade_doc(ade_nlp, t, e, r)) for t, e, r in ADE_TRAIN]
    assert ade_nlp.get_pipe("medllm_rel").score(examples)["medllm_rel_f"] == 1.0


def test_no_pairs(cid_nlp, ade_nlp):
    rel = cid_nlp.get_pipe("medllm_rel")
    assert rel(cid_nlp.make_doc(""))._.medllm_rels == []
    assert rel(cid_nlp.make_doc("No entities here ."))._.medllm_rels == []
    assert predict_cid(cid_nlp, "Cisplatin alone .", [(0, 9, "Chemical", "C1")])._.medllm_rels == []
    # two entities, but no allowed (head, tail) label pair
    assert predict_cid(cid_nlp, "Cisplatin and lithium .", [(0, 9, "Chemical", "C1"), (14, 21, "Chemical", "C3")])._.medllm_rels == []
    docs = list(ade_nlp.get_pipe("medllm_rel").pipe([ade_nlp.make_doc(""), ade_doc(ade_nlp, "Rash .", [(0, 4, "Effect")])]))
    assert [d._.medllm_rels for d in docs] == [[], []]


def test_long_document_runs_bounded(ade_nlp):
    words = []
    for i in range(300):
        words += ["lithium" if i % 2 == 0 else "tremor", "then"]
    doc = Doc(ade_nlp.vocab, words=words)
    doc.ents = [Span(doc, 2 * i, 2 * i + 1, label="Drug" if i % 2 == 0 else "Effect") for i in range(300)]
    rel = ade_nlp.get_pipe("medllm_rel")
    instances, probs = rel.predict([doc])
    assert instances[0].n_candidates == 150 * 150 and len(instances[0].pairs) == 100  # max_pairs
    thresholds = numpy.array([rel.threshold_of(label) for label in rel.labels])
    doc = rel(doc)
    # one record per (candidate, label) at or above the label's threshold, nothing else
    assert Counter(r["label"] for r in doc._.medllm_rels) == {
        label: int((probs[:, k] >= thresholds[k]).sum()) for k, label in enumerate(rel.labels) if (probs[:, k] >= thresholds[k]).any()
    }


def test_round_trips(cid_nlp, tmp_path):
    expected = [rels_of(predict_cid(cid_nlp, t, e), True) for t, e, _ in CID_TRAIN]
    cid_nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert [rels_of(predict_cid(loaded, t, e), True) for t, e, _ in CID_TRAIN] == expected
    nlp2, rel2 = make_nlp()
    rel2.from_bytes(cid_nlp.get_pipe("medllm_rel").to_bytes())
    assert rel2.labels == ("CID",)
    assert [rels_of(rel2(cid_doc(nlp2, t, e)), True) for t, e, _ in CID_TRAIN] == expected
    # the records are plain data: they survive a DocBin with user data
    doc = predict_cid(cid_nlp, *CID_TRAIN[0][:2])
    back = list(DocBin(store_user_data=True, docs=[doc]).get_docs(cid_nlp.vocab))[0]
    assert get_relations(back) == get_relations(doc)


ADE_PATTERNS = (
    [{"label": "Drug", "pattern": w} for w in ("lithium", "clonidine", "cisplatin", "Naloxone", "Aspirin")]
    + [{"label": "Effect", "pattern": w} for w in ("tremor", "dizziness", "Rash", "hypotension")]
    + [{"label": "Dose", "pattern": [{"LIKE_NUM": True}, {"LOWER": "mg"}]}]
)


def test_pipe_equals_call(cid_nlp, ade_nlp, tmp_path):
    rel = cid_nlp.get_pipe("medllm_rel")
    docs = [cid_doc(cid_nlp, t, e) for t, e, _ in CID_TRAIN]
    piped = [rels_of(d, True) for d in rel.pipe([d.copy() for d in docs], batch_size=2)]
    assert piped == [rels_of(rel(d.copy()), True) for d in docs]
    # a whole pipeline from raw text: an entity ruler finds the entities
    ade_nlp.to_disk(tmp_path / "ade")
    nlp = spacy.load(tmp_path / "ade")
    nlp.add_pipe("entity_ruler", first=True).add_patterns(ADE_PATTERNS)
    texts = [t for t, _, _ in ADE_TRAIN] * 2
    single = [rels_of(nlp(t), True) for t in texts]
    assert [r[:3] for r in single[0]] == [("ADE", (2, 3), (4, 5)), ("DOSE", (2, 3), (6, 8))]  # the ruler's dose: "600 mg"
    assert [rels_of(d, True) for d in nlp.pipe(texts, batch_size=3)] == single


def test_uninitialized_fails_clearly():
    nlp, rel = make_nlp()
    doc = cid_doc(nlp, *CID_TRAIN[0][:2])
    with pytest.raises(ValueError, match="E030"):
        rel(doc)


def test_no_labels_fails_clearly():
    nlp, _ = make_nlp()
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e)) for t, e, _ in CID_TRAIN]
    with pytest.raises(ValueError, match="E035"):
        nlp.initialize(lambda: examples)


def test_tune_thresholds(cid_nlp):
    rel = cid_nlp.get_pipe("medllm_rel")
    gold = [cid_doc(cid_nlp, t, e, p) for t, e, p in CID_TRAIN]
    examples = list(gold_entity_docs(cid_nlp, gold, upto="medllm_rel"))
    assert [e.label_ for e in examples[0].predicted.ents] == ["Chemical", "Disease", "Chemical", "Disease", "Chemical", "Disease"]
    saved = dict(rel.cfg["thresholds"])
    try:
        report = rel.tune_thresholds(examples)
        # the scored pairs separate: halfway between the lowest gold pair and the highest other
        low, high = separation(rel, examples)
        assert low > high
        assert report == {"CID": {"threshold": round((low + high) / 2, 4), "relative_threshold": None, "f": 1.0, "gold": 4}}
        assert rel.cfg["thresholds"] == {"CID": round((low + high) / 2, 4)}
    finally:
        rel.cfg["thresholds"] = saved


def separation(rel, examples):
    """The lowest probability of a gold concept pair and the highest of another pair with ids."""
    gold, other = [], []
    for eg, (_, _, pairs) in zip(examples, CID_TRAIN):
        (inst,), probs = rel.predict([eg.predicted])
        for (h, t), prob in zip(inst.pairs, probs[:, 0]):
            key = (inst.entities[h].concept_id, inst.entities[t].concept_id)
            if None not in key:
                (gold if key in set(pairs) else other).append(float(prob))
    return min(gold), max(other)


def test_scorer_mention_level_by_characters():
    install_extensions()
    nlp = spacy.blank("en")
    text, ents, rels = ADE_TRAIN[0]
    gold = ade_doc(nlp, text, ents, rels)
    pred = ade_doc(nlp, text, ents, [("ADE", 0, 1), ("ADE", 0, 2)])
    scores = score_relations([Example(pred, gold)])
    assert scores["medllm_rel_per_type"] == {"ADE": {"p": 0.5, "r": 1.0, "f": pytest.approx(2 / 3)}, "DOSE": {"p": 0.0, "r": 0.0, "f": 0.0}}
    assert scores["medllm_rel_p"] == 0.5 and scores["medllm_rel_r"] == 0.5
    assert score_relations([Example(nlp.make_doc("x"), nlp.make_doc("x"))])["medllm_rel_f"] is None


def test_render_has_every_entity_and_arc(cid_nlp):
    doc = predict_cid(cid_nlp, *CID_TRAIN[1][:2])
    # the linker sets kb_concept; render shows the concept's name when it is there
    if not Span.has_extension("kb_concept"):
        Span.set_extension("kb_concept", default=None)
    doc.ents[0]._.kb_concept = {"id": "C3", "name": "Lithium Carbonate", "types": ["Chemical"], "definition": ""}
    out = render(doc, page=True)
    assert out.startswith("<!DOCTYPE html>")
    for ent in doc.ents:
        assert ent.text in out
    assert "C3 Lithium Carbonate" in out and "D5|D6" in out
    records = get_relations(doc)
    assert len(records) == 2
    assert out.count('class="medllm-arc"') == len(records)
    assert out.count("<tr><td>CID</td>") == len(records)
    # gold records without offsets are drawn between the first mentions of their concepts
    gold = cid_doc(cid_nlp, *CID_TRAIN[1])
    assert render(gold).count('class="medllm-arc"') == 2
    # no relations: entities only
    assert "medllm-arc" not in render(cid_doc(cid_nlp, *CID_TRAIN[2][:2]))


# ---- with the shared encoder ------------------------------------------------------------------
def test_listener_round_trip(tiny_bert, tmp_path):
    """With the shared transformer as tok2vec, the pair encoder's input width is known only
    after initialize; the saved pipeline must load with it and predict the same."""
    install_extensions()
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"@architectures": "spacy_medllm.TransformerModel.v1", "name": str(tiny_bert),
                                                  "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12}}})
    model = dict(SMALL_MODEL, tok2vec={"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
                                       "pooling": {"@layers": "reduce_mean.v1"}, "upstream": "*"})
    rel = nlp.add_pipe("medllm_rel", config={"model": model})
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
    train(nlp, examples, 3)
    assert rel.cfg["width"] == 32
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")

    def run(pipeline):
        out = []
        for eg in gold_entity_docs(pipeline, [cid_doc(pipeline, t, e) for t, e, _ in CID_TRAIN]):
            out.append(rels_of(pipeline.get_pipe("medllm_rel")(eg.predicted), True))
        return out

    assert run(loaded) == run(nlp)


def test_relation_corpus_reader(tmp_path):
    install_extensions()
    nlp = spacy.blank("en")
    docs = [ade_doc(nlp, t, e, r) for t, e, r in ADE_TRAIN] + [nlp.make_doc("Nothing to see .")]
    DocBin(store_user_data=True, docs=docs).to_disk(tmp_path / "ade.spacy")
    examples = list(create_relation_corpus(tmp_path / "ade.spacy")(nlp))
    assert len(examples) == 4
    assert [(e.text, e.label_) for e in examples[3].predicted.ents] == [("Aspirin", "Drug"), ("100 mg", "Dose")]
    assert len(get_relations(examples[0].reference)) == 2
    assert len(list(create_relation_corpus(tmp_path / "ade.spacy", gold_entities=False, min_entities=0)(nlp))) == 5


@pytest.mark.parametrize("name", ["rel_bc5cdr.cfg", "rel_bc5cdr_ft.cfg", "rel_ade.cfg", "rel_chia.cfg"])
def test_configs_build(name, tiny_bert):
    """The relation configs validate; the sourced trained components are replaced by a tiny
    transformer, since no trained pipeline exists in the tests."""
    config = util.load_config(ROOT / "configs" / name)
    config["components"]["transformer"] = {
        "factory": "transformer",
        "model": {"@architectures": "spacy_medllm.TransformerModel.v1", "name": str(tiny_bert),
                  "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12}},
    }
    pipeline = ["transformer", "medllm_rel"]
    for other in set(config["nlp"]["pipeline"]) - set(pipeline):
        del config["components"][other]
    config["nlp"]["pipeline"] = pipeline
    config["training"]["frozen_components"] = ["transformer"]
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.pipe_names == pipeline
    level = {"rel_bc5cdr.cfg": "concept", "rel_bc5cdr_ft.cfg": "concept", "rel_ade.cfg": "mention", "rel_chia.cfg": "mention"}[name]
    rel = nlp.get_pipe("medllm_rel")
    assert (rel.level, rel.cfg["level"], rel.candidates.level) == (level, level, level)


# ---- knowledge: prior counts and hierarchy (PairRepresentation.v2) ---------------------------
V2_MODEL = {**SMALL_MODEL, "pair_representation": {
    "@architectures": "spacy_medllm.PairRepresentation.v2", "hidden_width": 32, "distance_width": 8,
    "knowledge_width": 8, "depth": 0, "dropout": 0.0, "n_entity_labels": 8,
}}


def write_hierarchy(path):
    path.write_text("D2\tisa\tD1\nD1\tmedic_parent\tD0\nC1\thas_semantic_type\tT1\n", encoding="utf8")
    return path


def test_knowledge_prior_leaves_own_doc_out():
    from spacy_medllm.relations.knowledge import RelationKnowledge

    install_extensions()
    nlp = spacy.blank("en")
    text, ents, _ = CID_TRAIN[0]
    doc = cid_doc(nlp, text, ents)
    inst = make_type_pairs(pairs=[["Chemical", "Disease"]], level="concept")(doc)
    pairs = [(inst.entities[h].concept_id, inst.entities[t].concept_id) for h, t in inst.pairs]
    targets = numpy.array([[1.0] if p in {("C1", "D1"), ("C1", "D2")} else [0.0] for p in pairs], dtype="float32")
    know = RelationKnowledge()
    know.count(doc, inst, targets)
    know.count(doc, inst, targets)  # the same Doc twice counts once
    assert know.pairs[("C1", "D1")] == [1, 1] and know.pairs[("C2", "D2")] == [1, 0]
    seen = know.features(doc, inst)
    own = know.features(doc, inst, targets)  # training on the counted Doc: its share left out
    c1d1 = pairs.index(("C1", "D1"))
    c2d2 = pairs.index(("C2", "D2"))
    assert tuple(seen[c1d1, :2]) == (1, 0) and tuple(seen[c2d2, :2]) == (0, 1)
    assert own[:, :2].tolist() == [[0, 0]] * len(pairs)
    assert seen[c1d1, 3] == 5 and own[c1d1, 3] == 0  # C1 was a head in a relation every time / unseen
    other = cid_doc(nlp, "Cisplatin and renal failure .", [(0, 9, "Chemical", "C1"), (14, 27, "Disease", "D2")])
    inst2 = make_type_pairs(pairs=[["Chemical", "Disease"]], level="concept")(other)
    assert tuple(know.features(other, inst2, numpy.zeros((1, 1), dtype="float32"))[0, :2]) == (1, 0)
    back = RelationKnowledge().from_dict(srsly.msgpack_loads(srsly.msgpack_dumps(know.to_dict())))
    assert back.features(doc, inst).tolist() == seen.tolist()


def test_knowledge_hierarchy_flags(tmp_path):
    from spacy_medllm.relations.knowledge import RelationKnowledge

    install_extensions()
    know = RelationKnowledge()
    assert know.load_hierarchy(write_hierarchy(tmp_path / "triples.tsv")) == 2  # isa and medic_parent only
    assert know.ancestors("D2") == {"D1", "D0"}
    nlp = spacy.blank("en")
    doc = cid_doc(nlp, "Cisplatin caused nephropathy and renal failure .",
                  [(0, 9, "Chemical", "C1"), (17, 28, "Disease", "D1"), (33, 46, "Disease", "D2")])
    inst = make_type_pairs(pairs=[["Chemical", "Disease"]], level="concept")(doc)
    feats = {inst.entities[t].concept_id: int(f[2]) for (h, t), f in zip(inst.pairs, know.features(doc, inst))}
    assert feats == {"D1": 1, "D2": 2}  # D1 has a more specific co-mention; D2 a more general one


def test_knowledge_hierarchy_bad_file(tmp_path):
    from spacy_medllm.relations.knowledge import RelationKnowledge

    path = tmp_path / "bad.tsv"
    path.write_text("D2\tisa\tD1\nD3 isa D1\n", encoding="utf8")
    with pytest.raises(ValueError, match=r"bad.tsv.*line 2"):
        RelationKnowledge().load_hierarchy(path)
    with pytest.raises(ValueError, match="no such file"):
        RelationKnowledge().load_hierarchy(tmp_path / "missing.tsv")


def test_v2_overfits_and_round_trips(tmp_path):
    install_extensions()
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_rel", config={"model": V2_MODEL})
    nlp.config["initialize"]["components"]["medllm_rel"] = {"hierarchy": str(write_hierarchy(tmp_path / "triples.tsv"))}
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
    train(nlp, examples, 60)
    rel = nlp.get_pipe("medllm_rel")
    assert rel.knowledge.parents["D2"] == ["D1"] and len(rel.knowledge.counted) == 3
    docs = [predict_cid(nlp, t, e) for t, e, _ in CID_TRAIN]
    assert [sorted(concept_pairs(d)) for d in docs] == [[("CID", "C1", "D1"), ("CID", "C1", "D2")], [("CID", "C3", "D3"), ("CID", "C3", "D4")], []]
    expected = [rels_of(d, True) for d in docs]
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert loaded.get_pipe("medllm_rel").knowledge.pairs == rel.knowledge.pairs
    assert [rels_of(predict_cid(loaded, t, e), True) for t, e, _ in CID_TRAIN] == expected
    rel2 = spacy.blank("en").add_pipe("medllm_rel", config={"model": V2_MODEL})
    rel2.from_bytes(rel.to_bytes())
    assert rel2.knowledge.parents == rel.knowledge.parents


def test_learn_rate_scale():
    """The component's weights move learn_rate_scale times as far (plain SGD)."""
    from thinc.api import SGD

    install_extensions()
    moves = []
    for scale in (1.0, 3.0):
        fix_random_seed(0)
        nlp = spacy.blank("en")
        rel = nlp.add_pipe("medllm_rel", config={"model": SMALL_MODEL, "learn_rate_scale": scale})
        examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
        nlp.initialize(lambda: examples)
        linear = rel.model.get_ref("classifier").layers[-1]
        before = linear.get_param("W").copy()
        rel.update(examples, sgd=SGD(0.1, L2=0.0, grad_clip=0.0))
        moves.append(linear.get_param("W") - before)
    assert numpy.abs(moves[0]).sum() > 0
    numpy.testing.assert_allclose(moves[1], 3.0 * moves[0], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="learn_rate_scale"):
        spacy.blank("en").add_pipe("medllm_rel", config={"learn_rate_scale": 0.0})


# ---- relative (document-level adaptive) threshold ----------------------------------------------
def test_relative_threshold_accepts_the_documents_top_pairs(cid_nlp):
    rel = cid_nlp.get_pipe("medllm_rel")
    doc = cid_doc(cid_nlp, *CID_TRAIN[0][:2])
    saved = (dict(rel.cfg["thresholds"]), dict(rel.cfg.get("relative_thresholds") or {}), rel.cfg.get("relative_threshold"))
    try:
        instances, probs = rel.predict([doc])
        scores = sorted(probs[:, 0], reverse=True)
        assert len(scores) == 4 and scores[0] > scores[1]
        # an absolute threshold above every pair: nothing, unless the relative one lets the top in
        rel.cfg["thresholds"] = {"CID": 0.9999}
        rel.cfg["relative_thresholds"] = {}
        rel.cfg["relative_threshold"] = None
        assert rel(cid_doc(cid_nlp, *CID_TRAIN[0][:2]))._.medllm_rels == []
        rel.cfg["relative_threshold"] = 1.0
        top = rel(cid_doc(cid_nlp, *CID_TRAIN[0][:2]))._.medllm_rels
        assert len(top) == 1 and top[0]["score"] == pytest.approx(float(scores[0]), abs=1e-4)
        # a tuned value wins over the setting; 0 means tuned off
        rel.cfg["relative_thresholds"] = {"CID": float(scores[1] / scores[0]) - 1e-4}
        assert len(rel(cid_doc(cid_nlp, *CID_TRAIN[0][:2]))._.medllm_rels) == 2
        rel.cfg["relative_thresholds"] = {"CID": 0.0}
        assert rel(cid_doc(cid_nlp, *CID_TRAIN[0][:2]))._.medllm_rels == []
        # a Doc without candidates is untouched
        empty = cid_nlp.make_doc("No entities here .")
        assert rel(empty)._.medllm_rels == []
    finally:
        rel.cfg["thresholds"], rel.cfg["relative_thresholds"], rel.cfg["relative_threshold"] = saved


def test_relative_threshold_setting_is_checked():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="E038"):
        nlp.add_pipe("medllm_rel", config={"relative_threshold": 1.5})
    assert nlp.add_pipe("medllm_rel", name="ok", config={"relative_threshold": 0.8}).relative_threshold_of("CID") == 0.8


def test_best_threshold_with_a_relative_threshold():
    from spacy_medllm.relations.pipe import _best_threshold

    # (probability, gold, probability / its Doc's top): the gold pairs of the second and
    # third Docs are their tops but score low
    scored = [(0.9, True, 1.0), (0.6, False, 0.67), (0.2, True, 1.0), (0.1, True, 1.0), (0.05, False, 0.25)]
    # without: accept down to 0.1 (3 of 4 right), halfway to the next score
    assert _best_threshold(scored, 3) == (pytest.approx(0.075), pytest.approx(2 * 3 / (4 + 3)))
    # with: the tops alone, all three and nothing else; the absolute threshold halfway
    # between the highest other pair (0.6) and 1
    assert _best_threshold(scored, 3, relative=1.0) == (pytest.approx(0.8), 1.0)
    assert _best_threshold([(0.3, False, 1.0)], 1, relative=1.0) == (None, 0.0)


def test_tune_relative_thresholds(cid_nlp):
    rel = cid_nlp.get_pipe("medllm_rel")
    gold = [cid_doc(cid_nlp, t, e, p) for t, e, p in CID_TRAIN]
    examples = list(gold_entity_docs(cid_nlp, gold, upto="medllm_rel"))
    saved = (dict(rel.cfg["thresholds"]), dict(rel.cfg.get("relative_thresholds") or {}))
    try:
        report = rel.tune_thresholds(examples, relative=True)
        # the absolute threshold alone already separates the pairs: the relative one is
        # tuned off (0), the absolute one is the one tuned without it
        low, high = separation(rel, examples)
        assert report == {"CID": {"threshold": round((low + high) / 2, 4), "relative_threshold": None, "f": 1.0, "gold": 4}}
        assert rel.cfg["relative_thresholds"] == {"CID": 0.0}
        assert [(x["head_id"], x["tail_id"]) for x in get_relations(rel(examples[0].predicted))] == [("C1", "D1"), ("C1", "D2")]
    finally:
        rel.cfg["thresholds"], rel.cfg["relative_thresholds"] = saved


def test_tune_relative_thresholds_picks_the_grid_value(cid_nlp, monkeypatch):
    """Scores where each Doc's gold pairs are its top ones but low in absolute terms: the
    tuning picks the largest grid value that accepts every gold pair (0.9: the second gold
    pair of each Doc scores 0.9 of the first), with an absolute threshold above the rest."""
    rel = cid_nlp.get_pipe("medllm_rel")
    gold = [cid_doc(cid_nlp, t, e, p) for t, e, p in CID_TRAIN]
    examples = list(gold_entity_docs(cid_nlp, gold, upto="medllm_rel"))
    probs = {("C1", "D1"): 0.3, ("C1", "D2"): 0.27, ("C3", "D3"): 0.9, ("C3", "D4"): 0.81}

    def fake_probabilities(docs, instances):
        rows = []
        for inst in instances:
            for h, t in inst.pairs:
                key = (inst.entities[h].concept_id, inst.entities[t].concept_id)
                rows.append([probs.get(key, 0.6 if key[0] == "C3" or key[0] == "C4" else 0.1)])
        return numpy.asarray(rows, dtype="float32").reshape(-1, 1)

    monkeypatch.setattr(rel, "_probabilities", fake_probabilities)
    saved = (dict(rel.cfg["thresholds"]), dict(rel.cfg.get("relative_thresholds") or {}))
    try:
        # without the relative threshold: 0.9 and 0.81 only (2 of 4 gold, 6 others at 0.6)
        report = rel.tune_thresholds(examples)
        assert report == {"CID": {"threshold": 0.705, "relative_threshold": None, "f": 0.6667, "gold": 4}}
        rel.cfg["thresholds"] = saved[0]
        report = rel.tune_thresholds(examples, relative=True)
        assert report == {"CID": {"threshold": 0.8, "relative_threshold": 0.9, "f": 1.0, "gold": 4}}
        assert rel.cfg["thresholds"] == {"CID": 0.8} and rel.cfg["relative_thresholds"] == {"CID": 0.9}
    finally:
        rel.cfg["thresholds"], rel.cfg["relative_thresholds"] = saved


# ---- two relation components in one pipeline --------------------------------------------------
ADE_EXPECTED = [
    [("ADE", (2, 3), (4, 5), None, None), ("DOSE", (2, 3), (6, 9), None, None)],
    [("ADE", (6, 7), (8, 9), None, None)],
    [("ADE", (4, 5), (0, 1), None, None)],
    [("DOSE", (0, 1), (1, 3), None, None)],
]


@pytest.fixture(scope="module")
def two_rel_nlp():
    """ADE (Drug -> Effect) and DOSE (Drug -> Dose) from two components."""
    install_extensions()
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_rel", config={"model": SMALL_MODEL, "candidates": {
        "@misc": "spacy_medllm.type_pairs.v1", "pairs": [["Drug", "Effect"]], "level": "mention", "max_pairs": 100}})
    nlp.add_pipe("medllm_rel", name="rel_dose", config={"model": SMALL_MODEL, "candidates": {
        "@misc": "spacy_medllm.type_pairs.v1", "pairs": [["Drug", "Dose"]], "level": "mention", "max_pairs": 100}})
    nlp.config["initialize"]["components"] = {"medllm_rel": {"labels": ["ADE"]}, "rel_dose": {"labels": ["DOSE"]}}
    examples = [Example(nlp.make_doc(t), ade_doc(nlp, t, e, r)) for t, e, r in ADE_TRAIN]
    return train(nlp, examples, 60)


def run_all(nlp, doc):
    for _, proc in nlp.pipeline:
        doc = proc(doc)
    return doc


def test_two_relation_components_keep_each_others_records(two_rel_nlp):
    nlp = two_rel_nlp
    assert (nlp.get_pipe("medllm_rel").labels, nlp.get_pipe("rel_dose").labels) == (("ADE",), ("DOSE",))
    docs = [run_all(nlp, ade_doc(nlp, t, e)) for t, e, _ in ADE_TRAIN]
    assert [rels_of(d) for d in docs] == ADE_EXPECTED
    assert [r["component"] for r in get_relations(docs[0])] == ["medllm_rel", "rel_dose"]
    ade_score, dose_score = [r["score"] for r in get_relations(docs[0])]
    # running one again replaces its own records only
    again = nlp.get_pipe("medllm_rel")(docs[0])
    assert [(r["label"], r["component"]) for r in get_relations(again)] == [("DOSE", "rel_dose"), ("ADE", "medllm_rel")]
    # gold records (no component) stay
    text, ents, rels = ADE_TRAIN[0]
    doc = run_all(nlp, ade_doc(nlp, text, ents, [("ADE", 0, 1)]))
    assert [(r["label"], r.get("component"), r["score"]) for r in get_relations(doc)] == [
        ("ADE", None, 1.0), ("ADE", "medllm_rel", ade_score), ("DOSE", "rel_dose", dose_score)]


def test_each_component_scores_its_own_labels(two_rel_nlp):
    nlp = two_rel_nlp
    examples = [Example(run_all(nlp, ade_doc(nlp, t, e)), ade_doc(nlp, t, e, r)) for t, e, r in ADE_TRAIN]
    perfect = {"p": 1.0, "r": 1.0, "f": 1.0}
    assert nlp.get_pipe("medllm_rel").score(examples) == {"medllm_rel_p": 1.0, "medllm_rel_r": 1.0, "medllm_rel_f": 1.0, "medllm_rel_per_type": {"ADE": perfect}}
    assert nlp.get_pipe("rel_dose").score(examples) == {"medllm_rel_p": 1.0, "medllm_rel_r": 1.0, "medllm_rel_f": 1.0, "medllm_rel_per_type": {"DOSE": perfect}}
    # a wrong DOSE record counts against rel_dose only
    examples[0].predicted._.medllm_rels = get_relations(examples[0].predicted) + [
        {"head": [2, 3], "tail": [4, 5], "head_id": None, "tail_id": None, "label": "DOSE", "score": 0.9, "component": "rel_dose"}]
    assert nlp.get_pipe("medllm_rel").score(examples)["medllm_rel_f"] == 1.0
    assert nlp.get_pipe("rel_dose").score(examples)["medllm_rel_per_type"] == {"DOSE": {"p": 2 / 3, "r": 1.0, "f": 0.8}}


def test_score_uses_the_components_level(cid_nlp):
    """Gold CID records that carry mention offsets (other mentions than the predicted
    evidence): guessed from the gold records the level would be "mention"; the component
    scores at its own, "concept"."""
    rel = cid_nlp.get_pipe("medllm_rel")
    examples = []
    for text, ents, pairs in CID_TRAIN[:2]:
        gold = cid_doc(cid_nlp, text, ents)
        first = {}
        for ent in gold.ents:
            first.setdefault(ent.kb_id_, ent)
        gold._.medllm_rels = [relation("CID", first[h], first[t]) for h, t in pairs]
        examples.append(Example(predict_cid(cid_nlp, text, ents), gold))
    # by offsets only (C1, D1) agrees: the gold records join the concepts' first mentions,
    # the predicted evidence of the other three starts at a later mention of the chemical
    assert score_relations(examples)["medllm_rel_per_type"] == {"CID": {"p": 0.25, "r": 0.25, "f": 0.25}}
    concept = {"medllm_rel_p": 1.0, "medllm_rel_r": 1.0, "medllm_rel_f": 1.0, "medllm_rel_per_type": {"CID": {"p": 1.0, "r": 1.0, "f": 1.0}}}
    assert score_relations(examples, level="concept") == concept
    assert rel.score(examples) == concept
    # the level is the candidate generator's, whatever a (stale) cfg says
    saved = rel.cfg["level"]
    try:
        rel.cfg["level"] = "mention"
        assert rel.level == "concept" and rel.score(examples) == concept
    finally:
        rel.cfg["level"] = saved



def test_mention_relations_end_to_end(ade_nlp, tmp_path):
    """A pipeline that finds its own entities (here an entity ruler that misses "Rash") is
    scored with gold entities and end to end: the relation of the missed entity is lost
    only end to end."""
    from spacy.tokens import DocBin

    from spacy_medllm.evaluation.relations import evaluate_mention_relations

    ade_nlp.to_disk(tmp_path / "rel")
    nlp = spacy.load(tmp_path / "rel")
    ruler = nlp.add_pipe("entity_ruler", first=True)
    ruler.add_patterns([
        {"label": label, "pattern": text[s:e]} for text, ents, _ in ADE_TRAIN for s, e, label in ents if text[s:e] != "Rash"
    ])
    nlp.to_disk(tmp_path / "e2e")
    DocBin(store_user_data=True, docs=[ade_doc(nlp, t, e, r) for t, e, r in ADE_TRAIN]).to_disk(tmp_path / "gold.spacy")
    res = evaluate_mention_relations(tmp_path / "e2e", tmp_path / "gold.spacy")
    assert res["micro"] == {"p": 100.0, "r": 100.0, "f": 100.0}
    e2e = res["end_to_end"]
    assert e2e["micro"] == {"p": 100.0, "r": 80.0, "f": pytest.approx(88.89, abs=0.01)}
    assert e2e["per_label"]["ADE"]["r"] == pytest.approx(66.67, abs=0.01) and e2e["per_label"]["DOSE"]["r"] == 100.0
    assert e2e["ner"]["p"] == 100.0 and e2e["ner"]["r"] == pytest.approx(90.91, abs=0.01)
    # a relation-only pipeline has no end-to-end score
    assert evaluate_mention_relations(tmp_path / "rel", tmp_path / "gold.spacy")["end_to_end"] is None
