"""medllm_linker: exact links after overfitting, NIL, abbreviations, serialization, empty docs,
the shared transformer's update."""
import numpy
import pytest
import spacy
import srsly
from spacy.tokens import DocBin, Span
from spacy.training import Example
from thinc.api import SGD, Adam, fix_random_seed

from spacy_medllm.kb import Concept, KnowledgeBase
from spacy_medllm.kb.knowledge_base import normalize_alias
from spacy_medllm.linker.scorer import score_links
from spacy_medllm.tokens import NIL

CONCEPTS = [
    Concept("D007022", "Hypotension", ["Low Blood Pressure", "hypotensive"], ["Disease"], "Abnormally low blood pressure."),
    Concept("D006973", "Hypertension", ["High Blood Pressure", "hypertensive"], ["Disease"]),
    Concept("D003000", "Clonidine", [], ["Chemical"]),
    Concept("D009270", "Naloxone", [], ["Chemical"]),
    # two concepts share the name "cold": context has to decide
    Concept("D003139", "Common Cold", ["cold"], ["Disease"]),
    Concept("D003080", "Cold Temperature", ["cold"], ["Chemical"]),
]

TRAIN = [
    ("Naloxone worsened the hypotensive state after clonidine .", [(0, 8, "Chemical", "D009270"), (22, 33, "Disease", "D007022"), (46, 55, "Chemical", "D003000")]),
    ("The patient caught a cold after the rain .", [(21, 25, "Disease", "D003139")]),
    ("Exposure to cold increased hypertension in rats .", [(12, 16, "Chemical", "D003080"), (27, 39, "Disease", "D006973")]),
    ("Nalozone was given .", [(0, 8, "Chemical", NIL)]),
    ("Low blood pressure followed clonidine .", [(0, 18, "Disease", "D007022"), (28, 37, "Chemical", "D003000")]),
]


def gold_doc(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label=l, kb_id=k) for s, e, l, k in ents]
    return doc


def make_nlp():
    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker")
    linker.set_kb(KnowledgeBase(CONCEPTS))
    return nlp, linker


@pytest.fixture(scope="module")
def trained():
    nlp, linker = make_nlp()
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(100):
        nlp.update(examples, sgd=optimizer, losses={})
    return nlp


def predict(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label=l) for s, e, l, _ in ents]
    return nlp.get_pipe("medllm_linker")(doc)


def test_overfit_exact_links(trained):
    for text, ents in TRAIN:
        doc = predict(trained, text, ents)
        assert [e.kb_id_ for e in doc.ents] == [k for *_, k in ents]
    doc = predict(trained, *TRAIN[0])
    hypo = doc.ents[1]
    assert hypo._.kb_candidates[0][0] == "D007022" and hypo._.kb_candidates[0][1] > 0.5
    assert hypo._.kb_concept == {"id": "D007022", "name": "Hypotension", "types": ["Disease"], "definition": "Abnormally low blood pressure."}


def test_no_ngram_overlap_is_nil(trained):
    doc = predict(trained, "Xyzzy was given .", [(0, 5, "Chemical", None)])
    assert doc.ents[0].kb_id_ == NIL and doc.ents[0]._.kb_candidates == [] and doc.ents[0]._.kb_concept is None


def test_threshold_gives_nil(trained):
    linker = trained.get_pipe("medllm_linker")
    linker.cfg["threshold"] = 1.01
    try:
        doc = predict(trained, *TRAIN[0])
        assert {e.kb_id_ for e in doc.ents} == {NIL}
    finally:
        linker.cfg["threshold"] = None


def test_abbreviation_long_form(trained):
    if not Span.has_extension("long_form"):
        Span.set_extension("long_form", default=None)
    from spacy.tokens import Doc

    if not Doc.has_extension("abbreviations"):
        Doc.set_extension("abbreviations", default=[])
    doc = trained.make_doc("Low blood pressure ( LBP ) followed clonidine ; LBP resolved .")
    long = doc[0:3]
    short = doc[9:10]
    short._.long_form = long
    doc._.abbreviations = [short]
    doc.ents = [Span(doc, 9, 10, label="Disease")]
    linker = trained.get_pipe("medllm_linker")
    doc = linker(doc)
    assert doc.ents[0].kb_id_ == "D007022"
    # without the long form, "LBP" shares no 3-gram with any name: no candidate at all
    linker.cfg["use_abbreviations"] = False
    try:
        assert linker(doc).ents[0]._.kb_candidates == []
    finally:
        linker.cfg["use_abbreviations"] = True


def test_abbreviation_found_without_detector(trained):
    """Without scispaCy's detector in the pipeline the component finds the definition itself."""
    from spacy.tokens import Doc

    doc = trained.make_doc("Low blood pressure ( LBP ) followed clonidine ; LBP resolved .")
    if Doc.has_extension("abbreviations"):
        doc._.abbreviations = []
    doc.ents = [Span(doc, 4, 5, label="Disease"), Span(doc, 9, 10, label="Disease")]
    doc = trained.get_pipe("medllm_linker")(doc)
    assert [e.kb_id_ for e in doc.ents] == ["D007022", "D007022"]
    assert not Doc.has_extension("abbreviations") or doc._.abbreviations == []


def test_empty_and_no_entities(trained):
    assert trained("").ents == ()
    docs = list(trained.pipe(["", "No entities here ."]))
    assert [d.ents for d in docs] == [(), ()]


def test_round_trips(trained, tmp_path):
    trained.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    for text, ents in TRAIN:
        assert [e.kb_id_ for e in predict(loaded, text, ents).ents] == [k for *_, k in ents]
    nlp2, linker2 = make_nlp()
    linker2.from_bytes(trained.get_pipe("medllm_linker").to_bytes())
    assert [e.kb_id_ for e in linker2(predict(trained, *TRAIN[2]) ).ents] == ["D003080", "D006973"]
    # annotations are plain data: they survive a DocBin
    doc = predict(trained, *TRAIN[0])
    back = list(DocBin(store_user_data=True, docs=[doc]).get_docs(trained.vocab))[0]
    assert [e.kb_id_ for e in back.ents] == ["D009270", "D007022", "D003000"]
    # plain lists, the same before and after
    assert doc.ents[1]._.kb_candidates == back.ents[1]._.kb_candidates
    assert [type(c) for c in doc.ents[1]._.kb_candidates] == [list] * len(doc.ents[1]._.kb_candidates)
    assert doc.ents[1]._.kb_candidates[0] == ["D007022", pytest.approx(doc.ents[1]._.kb_candidates[0][1])]


def test_pipe_equals_call(trained):
    docs = []
    for text, ents in TRAIN:
        doc = trained.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=l) for s, e, l, _ in ents]
        docs.append(doc)
    linker = trained.get_pipe("medllm_linker")
    piped = [[e.kb_id_ for e in d.ents] for d in linker.pipe([d.copy() for d in docs], batch_size=2)]
    single = [[e.kb_id_ for e in linker(d.copy()).ents] for d in docs]
    assert piped == single


def test_uninitialized_linker_fails_clearly():
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_linker")
    doc = nlp.make_doc("Naloxone .")
    doc.ents = [Span(doc, 0, 1, label="Chemical")]
    with pytest.raises(ValueError, match="E013"):
        nlp.get_pipe("medllm_linker")(doc)


def test_scorer_counts_alternatives():
    nlp = spacy.blank("en")
    ref = gold_doc(nlp, "Ocular toxicity .", [(0, 15, "Disease", "D014786|D006311")])
    pred = gold_doc(nlp, "Ocular toxicity .", [(0, 15, "Disease", "D006311")])
    assert score_links([Example(pred, ref)])["medllm_link_acc"] == 1.0


def test_listener_linker_round_trip(tiny_bert, tmp_path):
    """With the shared transformer as tok2vec, the scorer's input width is known only after
    initialize; the saved pipeline must load with it."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"@architectures": "spacy_medllm.TransformerModel.v1", "name": str(tiny_bert),
                                                  "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12}}})
    linker = nlp.add_pipe("medllm_linker", config={"model": {"@architectures": "spacy_medllm.LinkerModel.v1", "tok2vec": {
        "@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0, "pooling": {"@layers": "reduce_mean.v1"}, "upstream": "*"}}})
    linker.set_kb(KnowledgeBase(CONCEPTS))
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(5):
        nlp.update(examples, sgd=optimizer, losses={})
    assert linker.cfg["width"] == 32
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")

    def run(pipeline, text, ents):
        doc = pipeline.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=l) for s, e, l, _ in ents]
        for _, proc in pipeline.pipeline:
            doc = proc(doc)
        return [(e.kb_id_, e._.kb_candidates) for e in doc.ents]

    for text, ents in TRAIN:
        assert run(loaded, text, ents) == run(nlp, text, ents)


# ---- scispaCy's abbreviation detector, both output forms ----------------------------------------
ABBREVIATION_TEXT = "Low blood pressure ( LBP ) followed clonidine ; LBP resolved ."


@pytest.mark.parametrize("serializable", [False, True])
def test_scispacy_abbreviation_detector(trained, serializable):
    """scispaCy's detector gives Spans, or with make_serializable=True (for n_process)
    dicts; the linker reads both and links both "LBP" through "Low blood pressure"."""
    pytest.importorskip("scispacy")
    from scispacy.abbreviation import AbbreviationDetector

    detector = AbbreviationDetector(trained, make_serializable=serializable)
    doc = detector(trained.make_doc(ABBREVIATION_TEXT))
    assert type(doc._.abbreviations[0]) is (dict if serializable else Span)
    doc.ents = [Span(doc, 4, 5, label="Disease"), Span(doc, 9, 10, label="Disease")]
    doc = trained.get_pipe("medllm_linker")(doc)
    assert [e.kb_id_ for e in doc.ents] == ["D007022", "D007022"]
    assert [e._.kb_candidates[0][0] for e in doc.ents] == ["D007022", "D007022"]


# ---- uninitialized: saved and loaded, a clear error only when used --------------------------------
def test_uninitialized_linker_saves_and_loads(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_linker")
    nlp.to_disk(tmp_path / "nlp")
    assert sorted(p.name for p in (tmp_path / "nlp" / "medllm_linker").iterdir()) == ["cfg", "model", "priors"]
    loaded = spacy.load(tmp_path / "nlp")
    linker = loaded.get_pipe("medllm_linker")
    assert linker.kb is None and linker.generator is None and "width" not in linker.cfg
    doc = loaded.make_doc("Naloxone .")
    doc.ents = [Span(doc, 0, 1, label="Chemical")]
    with pytest.raises(ValueError, match="E013"):
        linker(doc)
    # bytes too
    linker2 = spacy.blank("en").add_pipe("medllm_linker")
    linker2.from_bytes(linker.to_bytes())
    assert linker2.kb is None and linker2.cfg == linker.cfg
    # with a KB but never initialized: saved with its KB, and says it is not initialized
    with_kb = spacy.blank("en")
    with_kb.add_pipe("medllm_linker").set_kb(KnowledgeBase(CONCEPTS))
    with_kb.to_disk(tmp_path / "with_kb")
    loaded = spacy.load(tmp_path / "with_kb")
    assert len(loaded.get_pipe("medllm_linker").kb) == len(CONCEPTS)
    doc = loaded.make_doc("Naloxone .")
    doc.ents = [Span(doc, 0, 1, label="Chemical")]
    with pytest.raises(ValueError, match="E040"):
        loaded.get_pipe("medllm_linker")(doc)
    assert loaded("") is not None  # nothing to link: nothing to complain about


# ---- the shared transformer keeps training --------------------------------------------------------
LISTENER = {"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"}, "upstream": "*"}
# "Xyzzy" shares no 3-gram with any KB name: its gold id is among no candidates
UNREACHABLE = [("Xyzzy was given .", [(0, 5, "Chemical", "D009270")])]


def trf_pipeline(tiny_bert, with_linker: bool):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"@architectures": "spacy_medllm.TransformerModel.v1", "name": str(tiny_bert),
                                                  "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12}}})
    nlp.add_pipe("ner", config={"model": {"@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False,
                                          "hidden_width": 16, "maxout_pieces": 2, "use_upper": False, "tok2vec": LISTENER}})
    if with_linker:
        linker = nlp.add_pipe("medllm_linker", config={"model": {"@architectures": "spacy_medllm.LinkerModel.v1", "tok2vec": LISTENER}})
        linker.set_kb(KnowledgeBase(CONCEPTS))
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    return nlp


def trf_torch_model(nlp):
    return next(node for node in nlp.get_pipe("transformer").model.walk() if node.shims).shims[0]._model


def trf_weights(nlp) -> numpy.ndarray:
    return numpy.concatenate([p.detach().numpy().ravel().copy() for p in trf_torch_model(nlp).parameters()])


def trf_grads(nlp) -> numpy.ndarray:
    return numpy.concatenate([p.grad.numpy().ravel().copy() for p in trf_torch_model(nlp).parameters() if p.grad is not None] or [numpy.zeros(0)])


@pytest.mark.parametrize("data", ["reachable", "unreachable"])
def test_linker_listener_keeps_the_transformer_training(tiny_bert, data):
    """The last listener backpropagates into the transformer for all of them: the linker does
    it on every batch, also when no gold id is among the candidates (then the transformer's
    gradient is the NER's alone)."""
    nlp = trf_pipeline(tiny_bert, with_linker=True)
    assert nlp.get_pipe("transformer").listening_components == ["ner", "medllm_linker"]
    rows = TRAIN if data == "reachable" else UNREACHABLE
    batch = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in rows]
    optimizer = SGD(0.05, L2=0.0, grad_clip=0.0)  # no momentum, no decay: a zero gradient moves nothing
    start = trf_weights(nlp)
    fix_random_seed(1)  # the transformer's dropout
    losses = nlp.update(batch, sgd=optimizer, losses={})
    assert losses["medllm_linker"] > 0.0 if data == "reachable" else losses["medllm_linker"] == 0.0
    grads = trf_grads(nlp)
    assert grads.size == start.size - 32 * 32 - 32 and numpy.abs(grads).sum() > 0  # all but the unused pooler
    # spaCy calls each component's finish_update right after its update, before the listeners
    # backpropagate: the transformer applies a batch's gradient in the next update
    nlp.update(batch, sgd=optimizer, losses={})
    assert numpy.abs(trf_weights(nlp) - start).sum() > 0
    if data == "unreachable":
        ner_only = trf_pipeline(tiny_bert, with_linker=False)
        numpy.testing.assert_array_equal(trf_weights(ner_only), start)
        fix_random_seed(1)
        ner_only.update([Example(ner_only.make_doc(t), gold_doc(ner_only, t, e)) for t, e in rows], sgd=optimizer, losses={})
        numpy.testing.assert_allclose(trf_grads(ner_only), grads, rtol=1e-5, atol=1e-8)



# ---- the featurizer: named features, labels from config ---------------------------------------------
def test_featurizer_names_and_values():
    from spacy_medllm.linker.features import CandidateContext, make_linker_features

    features = make_linker_features()
    assert features.names == ["score", "exact", "rank", "type_match", "type_conflict", "prior", "alias_count",
                              "concept_count", "expanded", "score_gap", "nil", "canonical_name"]
    ctx = CandidateContext(label="Chemical", key="hypotension", expanded=False, score=0.5, best=1.0, slot=2, k=4,
                           types=frozenset(["Disease"]), canonical_name="Hypotension", prior=1, total=3, concept_count=0)
    row = numpy.zeros(len(features), dtype="float32")
    features.fill(row, ctx)
    assert dict(zip(features.names, row.tolist())) == {
        "score": 0.5, "exact": 0.0, "rank": 0.75, "type_match": 0.0, "type_conflict": 1.0,
        "prior": pytest.approx(1 / 3), "alias_count": pytest.approx(numpy.log1p(3) / 5), "concept_count": 0.0,
        "expanded": 0.0, "score_gap": -0.5, "nil": 0.0, "canonical_name": 1.0,
    }
    nil = numpy.zeros(len(features), dtype="float32")
    features.fill_nil(nil)
    assert nil.tolist() == [0.0] * 10 + [1.0, 0.0]


def type_columns(type_labels):
    """type_match and type_conflict of each candidate of a `Drug` mention, with `type_labels`."""
    nlp = spacy.blank("en")
    features = {"@misc": "spacy_medllm.linker_features.v1", "type_labels": type_labels}
    linker = nlp.add_pipe("medllm_linker", config={"features": features})
    linker.set_kb(KnowledgeBase(CONCEPTS))
    doc = nlp.make_doc("Cold was given .")
    doc.ents = [Span(doc, 0, 1, label="Drug")]
    batch, cands = linker._batch([doc], [linker._mentions(doc)])
    names = linker.features.names
    match, conflict = names.index("type_match"), names.index("type_conflict")
    return {cid: (float(batch.feats[0, slot, match]), float(batch.feats[0, slot, conflict])) for slot, (cid, _) in enumerate(cands[0], start=1)}


def test_type_labels_come_from_config():
    # a corpus whose chemicals are labelled Drug: unknown to the default mapping, no type evidence
    assert type_columns({"Chemical": ["Chemical"], "Disease": ["Disease"]}) == {"D003139": (0.0, 0.0), "D003080": (0.0, 0.0)}
    mapped = {"Drug": ["Chemical"], "Disease": ["Disease"]}
    # Cold Temperature is typed Chemical: a match; Common Cold (Disease) a conflict
    assert type_columns(mapped) == {"D003139": (0.0, 1.0), "D003080": (1.0, 0.0)}


def test_feature_subset_sets_the_model_width(tmp_path):
    from spacy_medllm.layers.torch_io import module_of

    fix_random_seed(0)
    nlp = spacy.blank("en")
    features = {"@misc": "spacy_medllm.linker_features.v1", "features": ["score", "exact", "type_match", "prior", "nil"]}
    linker = nlp.add_pipe("medllm_linker", config={"features": features})
    linker.set_kb(KnowledgeBase(CONCEPTS))
    assert linker.model.attrs["n_features"] == 5
    assert module_of(linker.model.get_ref("scorer")).config["n_features"] == 5
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(50):
        nlp.update(examples, sgd=optimizer, losses={})
    links = [[e.kb_id_ for e in predict(nlp, t, e).ents] for t, e in TRAIN]
    assert links[0] == ["D009270", "D007022", "D003000"]
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert loaded.get_pipe("medllm_linker").features.names == ["score", "exact", "type_match", "prior", "nil"]
    assert [[e.kb_id_ for e in predict(loaded, t, e).ents] for t, e in TRAIN] == links


def test_featurizer_errors():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=r"E135.*unknown linker feature 'colour'"):
        nlp.add_pipe("medllm_linker", config={"features": {"@misc": "spacy_medllm.linker_features.v1", "features": ["score", "colour"]}})
    config = {"features": {"@misc": "spacy_medllm.linker_features.v1", "features": ["score", "nil"]},
              "model": {"@architectures": "spacy_medllm.LinkerModel.v2", "n_features": 12}}
    with pytest.raises(ValueError, match=r"E136.*the model reads 12 features per candidate, the featurizer .* gives 2"):
        nlp.add_pipe("medllm_linker", name="other", config=config)


def test_linker_config_builds_with_its_type_labels():
    """configs/linker_trf.cfg validates (the sourced transformer and NER left out) and states
    its featurizer's label mapping."""
    from pathlib import Path

    from spacy import util

    config = util.load_config(Path(__file__).parent.parent / "configs" / "linker_trf.cfg")
    for other in set(config["nlp"]["pipeline"]) - {"medllm_linker"}:
        del config["components"][other]
    config["nlp"]["pipeline"] = ["medllm_linker"]
    config["training"]["frozen_components"] = []
    config["training"]["annotating_components"] = []
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    linker = nlp.get_pipe("medllm_linker")
    assert config["components"]["medllm_linker"]["features"]["type_labels"] == {"Chemical": ["Chemical"], "Disease": ["Disease"]}
    assert len(linker.features) == 12 == linker.model.attrs["n_features"]


# ---- alternative ids: one concept, two ids ---------------------------------------------------------
ALT_CONCEPTS = CONCEPTS + [Concept("C076029", "Olanzapine", ["LY170053"], ["Chemical"], alt_ids=["D000077152"])]
# the corpus uses the concept's alternative id (the 2024 descriptor id of a 2015 record)
ALT_TRAIN = [
    ("Olanzapine caused hypotension .", [(0, 10, "Chemical", "D000077152"), (18, 29, "Disease", "D007022")]),
    ("LY170053 was given with naloxone .", [(0, 8, "Chemical", "D000077152"), (24, 32, "Chemical", "D009270")]),
]


def test_scorer_counts_alternative_ids_of_the_kb():
    kb = KnowledgeBase(ALT_CONCEPTS)
    nlp = spacy.blank("en")
    ref = gold_doc(nlp, "Olanzapine .", [(0, 10, "Chemical", "D000077152")])
    pred = gold_doc(nlp, "Olanzapine .", [(0, 10, "Chemical", "C076029")])
    assert score_links([Example(pred, ref)])["medllm_link_acc"] == 0.0
    assert score_links([Example(pred, ref)], kb=kb)["medllm_link_acc"] == 1.0
    # and the other way round; another concept's id stays wrong, NIL too
    assert score_links([Example(ref, pred)], kb=kb)["medllm_link_acc"] == 1.0
    wrong = gold_doc(nlp, "Olanzapine .", [(0, 10, "Chemical", "D009270")])
    nil = gold_doc(nlp, "Olanzapine .", [(0, 10, "Chemical", NIL)])
    assert score_links([Example(wrong, ref), Example(nil, ref)], kb=kb)["medllm_link_acc"] == 0.0


def test_gold_alternative_ids_train_the_primary_id():
    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker")
    linker.set_kb(KnowledgeBase(ALT_CONCEPTS))
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN + ALT_TRAIN]
    nlp.initialize(lambda: examples)
    # priors and concept counts under the primary id, the id the candidates carry
    assert linker.priors["olanzapine"] == {"C076029": 1} and linker.priors["ly170053"] == {"C076029": 1}
    assert linker.concept_counts["C076029"] == 2 and "D000077152" not in linker.concept_counts
    # the gold alternative id is a training target: the mention's loss is not left out
    alt_only = [Example(nlp.make_doc(ALT_TRAIN[0][0]), gold_doc(nlp, *ALT_TRAIN[0]))]
    alt_only[0].reference.ents = alt_only[0].reference.ents[:1]
    assert linker.update(alt_only, losses={})["medllm_linker"] > 0.0
    optimizer = Adam(0.01)
    for _ in range(100):
        nlp.update(examples, sgd=optimizer, losses={})
    assert [e.kb_id_ for e in predict(nlp, *ALT_TRAIN[1]).ents] == ["C076029", "D009270"]
    # the component's score counts its answer (the primary id) right for the gold alternative id
    scored = [Example(predict(nlp, t, e), gold_doc(nlp, t, e)) for t, e in ALT_TRAIN]
    assert linker.score(scored)["medllm_link_acc"] == 1.0


def test_prediction_cache_gives_what_computing_gives_and_follows_the_priors():
    nlp, linker = make_nlp()
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    for _ in range(30):
        nlp.update(examples, sgd=Adam(0.01), losses={})

    def links(size):
        linker.block_cache_size = size
        linker._block_setting = None
        out = []
        for _ in range(2):  # the second pass reads its mentions' arrays from the cache
            docs = []
            for text, ents in TRAIN:
                doc = nlp.make_doc(text)
                doc.ents = [doc.char_span(s, e, label=l) for s, e, l, _ in ents]
                docs.append(doc)
            out.append([[(e.kb_id_, e._.kb_candidates, e._.kb_concept) for e in d.ents] for d in linker.pipe(docs, batch_size=2)])
        return out

    cached, uncached = links(4096), links(0)
    assert cached[0] == cached[1] == uncached[0] == uncached[1]
    assert len(linker._block_cache) == 0
    links(4096)
    n_keys = len({(normalize_alias(t[s:e]), l) for t, ents in TRAIN for s, e, l, _ in ents})
    assert 0 < len(linker._block_cache) <= n_keys
    # new priors (initialize again) empty the cache: the arrays hold the prior features
    nlp.initialize(lambda: examples[:1])
    linker._blocks(linker.cfg["top_k"])
    assert len(linker._block_cache) == 0


def test_short_exact_and_doc_support_columns():
    """short_exact: an expanded abbreviation's short form is itself a name of the concept;
    doc_support: the concept is the best candidate of another mention text of the document."""
    from spacy.tokens import Doc

    nlp = spacy.blank("en")
    features = {"@misc": "spacy_medllm.linker_features.v1", "features": ["score", "short_exact", "doc_support", "nil"]}
    linker = nlp.add_pipe("medllm_linker", config={"features": features})
    concepts = CONCEPTS + [Concept("D000001", "Lowering Blood Pressure", ["LBP"], ["Disease"])]
    linker.set_kb(KnowledgeBase(concepts))
    if not Doc.has_extension("abbreviations"):
        Doc.set_extension("abbreviations", default=[])
    doc = nlp.make_doc("Low blood pressure ( LBP ) followed clonidine ; LBP and hypotensive states .")
    doc._.abbreviations = [{"short_text": "LBP", "long_text": "Low blood pressure"}]
    doc.ents = [Span(doc, 9, 10, label="Disease"), Span(doc, 11, 12, label="Disease")]
    mentions = linker._mentions(doc)
    assert [(text, expanded) for _, text, expanded in mentions] == [("Low blood pressure", True), ("hypotensive", False)]
    batch, cands = linker._batch([doc], [mentions])
    columns = {name: i for i, name in enumerate(linker.features.names)}
    lbp = {cid: batch.feats[0, slot] for slot, (cid, _) in enumerate(cands[0], start=1)}
    hyp = {cid: batch.feats[1, slot] for slot, (cid, _) in enumerate(cands[1], start=1)}
    assert lbp["D000001"][columns["short_exact"]] == 1.0 and lbp["D007022"][columns["short_exact"]] == 0.0
    # "hypotensive" names Hypotension exactly, so Hypotension is its best candidate and
    # supports the expanded mention's; the reverse holds as well
    assert cands[1][0][0] == "D007022" and cands[0][0][0] == "D007022"
    assert lbp["D007022"][columns["doc_support"]] == 1.0 and hyp["D007022"][columns["doc_support"]] == 1.0
    assert all(v[columns["doc_support"]] == 0.0 for cid, v in lbp.items() if cid != "D007022")
    # a mention alone in its document has no support; the cache does not carry it over
    single = nlp.make_doc("hypotensive states .")
    single.ents = [Span(single, 0, 1, label="Disease")]
    batch, cands = linker._batch([single], [linker._mentions(single)])
    assert not batch.feats[0, :, columns["doc_support"]].any()


@pytest.mark.parametrize("names", [None, ["score", "type_match", "type_conflict", "concept_count", "alias_count", "prior", "short_exact", "doc_support", "nil"]])
def test_block_features_equal_the_per_candidate_ones(trained, names):
    """The all-candidates-at-once features (`LinkerFeatures.fill_block`) write exactly what the
    per-candidate functions write."""
    from spacy_medllm.linker.features import make_linker_features

    linker = trained.get_pipe("medllm_linker")
    features = make_linker_features({"Chemical": ["Chemical"], "Disease": ["Disease", "Chemical"]}, names)
    assert features.blocks is not None
    saved = linker.features
    try:
        linker.features = features
        mentions = [("cold", "Disease", False, ""), ("low blood pressure", "Disease", True, "lbp"), ("clonidine", "Chemical", False, "")]
        for mention in mentions:
            cs = linker.generator.detailed([mention[0]], k=linker.cfg["top_k"])[0]
            # nothing left out (prediction), a mention's own count, a document's counts
            for leave_out in (None, ({"D003139": 1}, {"D003139": 1}), ({"D003139": 2, "D003080": 1}, {"D003139": 3, "D003080": 1})):
                block = linker._mention_block(mention, cs, leave_out)
                features.blocks, kept = None, features.blocks
                single = linker._mention_block(mention, cs, leave_out)
                features.blocks = kept
                assert len(cs) and numpy.array_equal(block[0], single[0]) and numpy.array_equal(block[1], single[1])
                assert numpy.array_equal(block[2], single[2]) and block[3] == single[3]
    finally:
        linker.features = saved


def test_short_form_that_is_a_name_of_the_type_is_linked_as_written():
    """A defined abbreviation whose long form the KB lacks, but which is itself a name of a
    concept of the entity's type, is linked as written; otherwise through its long form."""
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker")
    linker.set_kb(KnowledgeBase([
        Concept("D008130", "Lomustine", ["CCNU"], ["Chemical"]),
        Concept("D007022", "Hypotension", ["Low Blood Pressure"], ["Disease"]),
        Concept("X1", "Low blood pressure syndrome", ["LBP"], ["Chemical"]),
    ]))
    doc = nlp.make_doc("Use of 1-(2-chloroethyl)-3-cyclohexyl-1-nitrosourea (CCNU) caused low blood pressure (LBP) .")
    ccnu = next(t.i for t in doc if t.text == "CCNU")
    lbp = next(t.i for t in doc if t.text == "LBP")
    doc.ents = [Span(doc, ccnu, ccnu + 1, label="Chemical"), Span(doc, lbp, lbp + 1, label="Disease")]
    assert [(text, expanded) for _, text, expanded in linker._mentions(doc)] == [
        ("CCNU", False),  # a Chemical name; the systematic name is none
        ("low blood pressure", True),  # "LBP" names a concept of another type only
    ]


def test_nil_bias_moves_abstention_not_probabilities(trained, tmp_path):
    """nil_bias shifts the NIL slot when the answer is chosen: high, every mention abstains;
    very low, a mention trained as NIL takes its best candidate; kb_candidates' probabilities
    stay the model's; the setting is saved with the pipeline; a non-finite value is refused."""
    linker = trained.get_pipe("medllm_linker")
    text, ents = TRAIN[3]  # "Nalozone": NIL in training, "Naloxone" among its candidates
    base = predict(trained, text, ents).ents[0]
    assert base.kb_id_ == NIL and base._.kb_candidates
    try:
        linker.cfg["nil_bias"] = -100.0
        low = predict(trained, text, ents).ents[0]
        assert low.kb_id_ == low._.kb_candidates[0][0] != NIL
        assert low._.kb_candidates == base._.kb_candidates
        linker.cfg["nil_bias"] = 100.0
        assert {e.kb_id_ for e in predict(trained, *TRAIN[0]).ents} == {NIL}
        # below the padded slots' score: a mention without candidates still gets NIL
        linker.cfg["nil_bias"] = -1e6
        none = predict(trained, "Xyzzy was given .", [(0, 5, "Chemical", None)]).ents[0]
        assert none.kb_id_ == NIL and none._.kb_candidates == []
        linker.cfg["nil_bias"] = 100.0
        trained.to_disk(tmp_path / "nlp")
        assert spacy.load(tmp_path / "nlp").get_pipe("medllm_linker").cfg["nil_bias"] == 100.0
    finally:
        linker.cfg["nil_bias"] = 0.0
    with pytest.raises(ValueError, match="nil_bias"):
        spacy.blank("en").add_pipe("medllm_linker", config={"nil_bias": float("inf")})


def test_nil_bias_per_label(trained, tmp_path):
    """A dict sets the NIL bias per entity label: only the named label's mentions move, a
    label it does not name gets 0; saved with the pipeline; a non-finite value is refused
    with the label in the message, from the config and when set on a loaded pipe."""
    linker = trained.get_pipe("medllm_linker")
    base = [(e.label_, e.kb_id_) for e in predict(trained, *TRAIN[0]).ents]
    assert base and NIL not in {k for _, k in base} and {lab for lab, _ in base} == {"Chemical", "Disease"}
    try:
        linker.cfg["nil_bias"] = {"Chemical": 100.0}
        per_label = [(e.label_, e.kb_id_) for e in predict(trained, *TRAIN[0]).ents]
        assert per_label == [(lab, NIL if lab == "Chemical" else k) for lab, k in base]
        linker.cfg["nil_bias"] = {"Chemical": 0.0, "Disease": 100.0}
        per_label = [(e.label_, e.kb_id_) for e in predict(trained, *TRAIN[0]).ents]
        assert per_label == [(lab, NIL if lab == "Disease" else k) for lab, k in base]
        trained.to_disk(tmp_path / "nlp")
        loaded = spacy.load(tmp_path / "nlp")
        assert loaded.get_pipe("medllm_linker").cfg["nil_bias"] == {"Chemical": 0.0, "Disease": 100.0}
        assert [(e.label_, e.kb_id_) for e in predict(loaded, *TRAIN[0]).ents] == per_label
        linker.cfg["nil_bias"] = {"Disease": float("nan")}
        with pytest.raises(ValueError, match=r"nil_bias\.Disease"):
            predict(trained, *TRAIN[0])
    finally:
        linker.cfg["nil_bias"] = 0.0
    nlp = spacy.blank("en")
    assert nlp.add_pipe("medllm_linker", config={"nil_bias": {"Chemical": 2, "Disease": 0}}).cfg["nil_bias"] == {"Chemical": 2.0, "Disease": 0.0}
    with pytest.raises(ValueError, match="nil_bias"):  # spaCy's own check of the config
        spacy.blank("en").add_pipe("medllm_linker", config={"nil_bias": {"Chemical": float("inf")}})


def _column(linker, name):
    return linker.features.names.index(name)


def test_document_leave_out_counts_a_text_seen_only_in_other_documents():
    """leave_out="document": a training mention's text counts as seen only when another
    document has it (as for a test document); "mention" leaves out its own count alone."""
    nlp, linker = make_nlp()
    twice = ("Hypotensive , then hypotensive again .", [(0, 11, "Disease", "D007022"), (19, 30, "Disease", "D007022")])
    once = ("A hypotensive patient .", [(2, 13, "Disease", "D007022")])
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in (twice, once)]
    alias_count = _column(linker, "alias_count")

    def counts(leave_out):
        nlp.initialize(lambda: examples)
        linker.initialize(lambda: examples, nlp=nlp, leave_out=leave_out)
        assert linker.priors["hypotensive"] == {"D007022": 3}
        out = []
        for eg in examples:
            spans = [Span(eg.predicted, e.start, e.end, label=e.label_) for e in eg.reference.ents]
            mentions = [linker._mentions(eg.predicted, spans)]
            doc_counts = [linker._doc_counts(eg.reference)] if leave_out == "document" else None
            batch, _ = linker._batch([eg.predicted], mentions, [e.kb_id_ for e in eg.reference.ents], doc_counts)
            # alias_count = log1p(the text's prior total) / 5, the same in every candidate slot
            out.append([round(float(numpy.expm1(batch.feats[j, 1, alias_count] * 5))) for j in range(len(spans))])
        return out

    assert counts("mention") == [[2, 2], [2]]
    assert counts("document") == [[1, 1], [2]]
    assert linker.cfg["leave_out"] == "document"
    with pytest.raises(ValueError, match="leave_out"):
        linker.initialize(lambda: examples, nlp=nlp, leave_out="corpus")


def test_training_kb_links_training_mentions_and_is_not_saved(tmp_path):
    """initialize(train_kb_path=...): training mentions are linked with that KB (here
    without the name "hypotensive"), prediction and the saved component with the KB."""
    nlp, linker = make_nlp()
    train_kb = KnowledgeBase([Concept(c.concept_id, c.canonical_name, [a for a in c.aliases if a != "hypotensive"], c.types) for c in CONCEPTS])
    train_kb.to_disk(tmp_path / "train_kb")
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    linker.initialize(lambda: examples, nlp=nlp, train_kb_path=tmp_path / "train_kb")
    assert linker.train_kb is not None and linker.train_kb is not linker.kb
    eg = examples[0]
    spans = [Span(eg.predicted, e.start, e.end, label=e.label_) for e in eg.reference.ents]
    mentions = [linker._mentions(eg.predicted, spans)]
    exact = _column(linker, "exact")

    def exact_of_gold(gold):
        batch, cands = linker._batch([eg.predicted], mentions, gold)
        slot = next(s for s, (cid, _) in enumerate(cands[1], start=1) if cid == "D007022")
        return float(batch.feats[1, slot, exact])

    assert exact_of_gold([e.kb_id_ for e in eg.reference.ents]) == 0.0  # training: the training KB
    assert exact_of_gold(None) == 1.0  # prediction: the component's KB
    for _ in range(3):
        nlp.update(examples, sgd=Adam(0.01), losses={})
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp").get_pipe("medllm_linker")
    assert loaded.train_kb is None and "hypotensive" in {normalize_alias(a) for a in loaded.kb["D007022"].aliases}


def test_hierarchy_features():
    """tree_depth, broader_than_top and narrower_than_top read the MeSH tree numbers among a
    concept's types (a supplementary record one level below its heading), relative to the
    generator's best candidate; the all-candidates form writes what the per-candidate one does."""
    from spacy_medllm.linker.features import is_ancestor, tree_depth, tree_numbers

    kidney, insufficiency = frozenset(["Disease", "C12.777.419"]), frozenset(["Disease", "C12.777.419.780", "C13.351.968.419.780"])
    record = frozenset(["Disease", "C12.777.419.780/C565467"])
    assert tree_numbers(record) == ("C12.777.419.780.C565467",) and tree_numbers(frozenset(["Disease"])) == ()
    assert tree_depth(kidney) == 0.3 and tree_depth(insufficiency) == 0.4 and tree_depth(frozenset(["Chemical"])) == 0.0
    assert is_ancestor(kidney, insufficiency) and is_ancestor(insufficiency, record) and not is_ancestor(insufficiency, kidney)
    # a prefix of the digits is not an ancestor
    assert not is_ancestor(frozenset(["C12.777.41"]), insufficiency)

    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker", config={"features": {
        "@misc": "spacy_medllm.linker_features.v1", "features": ["score", "tree_depth", "broader_than_top", "narrower_than_top", "nil"]}})
    linker.set_kb(KnowledgeBase([
        Concept("D007674", "Kidney Diseases", ["renal disease"], list(kidney)),
        Concept("D051437", "Renal Insufficiency", ["renal failure"], list(insufficiency)),
        Concept("C565467", "Renal insufficiency, familial", [], list(record)),
        Concept("D003000", "Clonidine", [], ["Chemical", "D02.092.311"]),
    ]))
    mention = ("renal insufficiency", "Disease", False, "")
    cs = linker.generator.detailed([mention[0]], k=linker.cfg["top_k"])[0]
    assert cs[0][0] == "D051437"
    block = linker._mention_block(mention, cs, None)
    linker.features.blocks, kept = None, linker.features.blocks
    single = linker._mention_block(mention, cs, None)
    linker.features.blocks = kept
    assert numpy.array_equal(block[0], single[0])
    rows = {cid: block[0][slot] for slot, (cid, _) in enumerate(block[3], start=1)}
    assert list(rows["D007674"][1:4]) == pytest.approx([0.3, 1.0, 0.0])
    assert list(rows["C565467"][1:4]) == pytest.approx([0.5, 0.0, 1.0])
    assert list(rows["D051437"][1:4]) == pytest.approx([0.4, 0.0, 0.0])


def test_convention_features_compare_training_counts_across_candidates():
    """prior_gap and concept_count_gap: a candidate's training counts against the best of its
    mention's candidates (0 for the best, negative for the others, 0 for every candidate of a
    text never linked); the all-candidates form writes what the per-candidate one does, and a
    training mention's own document is left out of both counts."""
    import math

    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker", config={"features": {
        "@misc": "spacy_medllm.linker_features.v1", "features": ["score", "prior_gap", "concept_count_gap", "nil"]}})
    linker.set_kb(KnowledgeBase([
        Concept("D000740", "Anemia", ["anaemia"], ["Disease"]),
        Concept("D000743", "Anemia, Hemolytic", ["hemolytic anemia"], ["Disease"]),
        Concept("D000741", "Anemia, Aplastic", ["aplastic anemia"], ["Disease"]),
    ]))
    linker.priors = {"anemia": {"D000740": 3, "D000743": 1}}
    linker.concept_counts = {"D000740": 20, "D000743": 6}

    def rows(mention, leave_out=None):
        cs = linker.generator.detailed([mention[0]], k=linker.cfg["top_k"])[0]
        block = linker._mention_block(mention, cs, leave_out)
        linker.features.blocks, kept = None, linker.features.blocks
        single = linker._mention_block(mention, cs, leave_out)
        linker.features.blocks = kept
        assert numpy.array_equal(block[0], single[0])
        return {cid: block[0][slot][1:3] for slot, (cid, _) in enumerate(block[3], start=1)}

    seen = rows(("anemia", "Disease", False, ""))
    assert set(seen) == {"D000740", "D000743", "D000741"}
    assert list(seen["D000740"]) == pytest.approx([0.0, 0.0])
    assert list(seen["D000743"]) == pytest.approx([-0.5, (math.log1p(6) - math.log1p(20)) / 5])
    assert list(seen["D000741"]) == pytest.approx([-0.75, -math.log1p(20) / 5])
    # a text never linked in training: no prior gap, the concept counts still compare
    unseen = rows(("anaemias", "Disease", False, ""))
    assert all(r[0] == 0.0 for r in unseen.values()) and unseen["D000740"][1] == 0.0 and unseen["D000743"][1] < 0
    # training leaves the mention's own document out: here it made D000740 the most linked
    left = rows(("anemia", "Disease", False, ""), leave_out=({"D000740": 3}, {"D000740": 18}))
    assert list(left["D000743"]) == pytest.approx([0.0, 0.0])
    assert list(left["D000740"]) == pytest.approx([-1.0, (math.log1p(2) - math.log1p(6)) / 5])


def test_ensemble_heads_train_apart_and_average_in_prediction(tmp_path):
    """n_heads: the feature MLPs start apart, each learns the training links on its own
    loss (each head alone answers them right), prediction is the mean of the heads'
    log-probabilities, and the ensemble is saved and loaded with the pipeline."""
    import torch

    from spacy_medllm.layers.torch_io import module_of

    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker", config={"model": {
        "@architectures": "spacy_medllm.LinkerModel.v2", "tok2vec": None, "n_features": None,
        "hidden_width": 64, "n_concept_rows": 65536, "n_heads": 3}})
    linker.set_kb(KnowledgeBase(CONCEPTS))
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    module = module_of(linker.model.get_ref("scorer"))
    assert module.n_heads == 3 and len(module.features) == 3
    first = [h[0].weight.detach().clone() for h in module.features]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    optimizer = Adam(0.01)
    for _ in range(100):
        nlp.update(examples, sgd=optimizer, losses={})
    docs = [predict(nlp, t, e) for t, e in TRAIN]
    for doc, (_, ents) in zip(docs, TRAIN):
        assert [e.kb_id_ for e in doc.ents] == [k for *_, k in ents]
    # the arrays the model reads, and what each head says alone
    mentions = [linker._mentions(doc) for doc in docs]
    batch, cands = linker._batch(docs, mentions)
    logits = linker.model.predict((docs, batch))
    feats, mask = torch.tensor(batch.feats), torch.tensor(batch.mask)
    with torch.no_grad():
        per_head = [head(feats).squeeze(-1).masked_fill(~mask, -1e4) for head in module.features]
    mean = torch.stack([torch.log_softmax(h, dim=-1) for h in per_head]).mean(dim=0)
    assert numpy.allclose(logits, mean.numpy(), atol=1e-5)
    gold = [k for _, ents in TRAIN for *_, k in ents]
    for head_logits in per_head:
        answers = [NIL if int(row.argmax()) == 0 else cs[int(row.argmax()) - 1][0] for row, cs in zip(head_logits, cands)]
        assert answers == gold
    # in training the model gives every head's scores, each head its own loss's gradient
    train_logits, _ = linker.model.begin_update((docs, batch))
    slots = linker.cfg["top_k"] + 1
    assert train_logits.shape == (len(gold), 3 * slots)
    loss, d = linker._loss(numpy.asarray(train_logits), [0], [1])
    one_loss, one_d = linker._loss(numpy.asarray(train_logits)[:, slots : 2 * slots], [0], [1])
    assert numpy.allclose(d[:, slots : 2 * slots], one_d)
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert module_of(loaded.get_pipe("medllm_linker").model.get_ref("scorer")).n_heads == 3
    assert numpy.allclose(loaded.get_pipe("medllm_linker").model.predict((docs, batch)), logits)
    with pytest.raises(ValueError, match="n_heads"):
        spacy.blank("en").add_pipe("medllm_linker", config={"model": {
            "@architectures": "spacy_medllm.LinkerModel.v2", "tok2vec": None, "n_features": 12, "n_heads": 0}})


def test_calibrate_nil_reads_the_bias_off_the_training_mentions(trained, tmp_path):
    """`medllm calibrate-nil`: per label the largest grid bias whose acc@1 on the training
    mentions is within max_cost of bias 0, the answer chosen as the component chooses it;
    written with the pipeline (cfg and config) to a new folder, the input untouched; bad
    input fails naming it."""
    from typer.testing import CliRunner

    from spacy_medllm.cli import app
    from spacy_medllm.linker.calibrate import accuracy_curves, calibrate_nil, choose_biases, training_scores
    from spacy_medllm.linker.pipe import choose_slot

    linker = trained.get_pipe("medllm_linker")
    model = tmp_path / "model"
    trained.to_disk(model)
    data = tmp_path / "train.spacy"
    DocBin(docs=[gold_doc(trained, t, e) for t, e in TRAIN]).to_disk(data)
    scored = training_scores(trained, "medllm_linker", [gold_doc(trained, t, e) for t, e in TRAIN])
    assert sorted(label for label, _, _ in scored) == ["Chemical"] * 4 + ["Disease"] * 4  # "Nalozone" (NIL) left out
    grid = (0.0, 1.0, 100.0)
    curves = accuracy_curves(scored, grid)
    assert curves["Disease"]["n"] == 4 and curves["Disease"]["acc"][0] == 100.0  # overfit: every training mention right
    assert all(c["acc"][-1] == 0.0 for c in curves.values())  # a huge bias abstains on every mention
    chosen = choose_biases(curves, max_cost=0.0)
    assert all(b in (0.0, 1.0) for b in chosen.values())
    assert choose_biases(curves, max_cost=99.0) == {"Chemical": 1.0, "Disease": 1.0}
    assert choose_biases({"X": {"bias": [0.0, 1.0, 2.0], "acc": [90.0, 89.9, 89.0]}}, 0.2) == {"X": 1.0}
    assert choose_slot(numpy.array([0.0, 1.0, -1e4]), 1, 2.0) == 0 and choose_slot(numpy.array([0.0, 1.0, -1e4]), 1, -1e6) == 1
    assert choose_slot(numpy.array([0.0, 1.0]), 1, 0.0, threshold=0.99) == 0

    result = calibrate_nil(model, tmp_path / "out", [data], max_cost=0.0, grid=grid, report_path=tmp_path / "report.json")
    assert result["nil_bias"] == chosen and set(chosen) == {"Chemical", "Disease"}
    loaded = spacy.load(tmp_path / "out")
    assert loaded.get_pipe("medllm_linker").cfg["nil_bias"] == chosen
    assert dict(loaded.config["components"]["medllm_linker"]["nil_bias"]) == chosen
    assert spacy.load(model).get_pipe("medllm_linker").cfg["nil_bias"] == linker.cfg["nil_bias"] == 0.0
    assert srsly.read_json(tmp_path / "report.json")["nil_bias"] == chosen

    with pytest.raises(FileExistsError, match="--force"):
        calibrate_nil(model, tmp_path / "out", [data])
    with pytest.raises(ValueError, match="model"):  # the output may not be the input
        calibrate_nil(model, model, [data], force=True)
    with pytest.raises(FileNotFoundError, match="missing.spacy"):
        calibrate_nil(model, tmp_path / "out2", [tmp_path / "missing.spacy"])
    runner = CliRunner()
    bad = runner.invoke(app, ["calibrate-nil", str(model), str(tmp_path / "out3"), "--data", str(data), "--max-cost", "-1"])
    assert bad.exit_code == 1 and "max-cost" in bad.output
    ok = runner.invoke(app, ["calibrate-nil", str(model), str(tmp_path / "out3"), "--data", str(data)])
    assert ok.exit_code == 0, ok.output
    assert "nil_bias" in ok.output and (tmp_path / "out3" / "meta.json").exists()
