"""`medllm evaluate-pipeline`'s NER label confusion and relation precision-recall curve: the
counting on hand-made Docs, the curve on hand-made scores, both on a tiny pipeline (an
entity ruler named "ner", a component that sets ids, a medllm_rel overfit on
test_relations' CID examples, with a tuned threshold), and the PNG files drawn from them."""

import pytest
import spacy
import srsly
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example

from spacy_medllm.evaluation.ner import label_confusion
from spacy_medllm.evaluation.pipeline import evaluate_pipeline, markdown
from spacy_medllm.evaluation.plots import write_plots
from spacy_medllm.evaluation.relations import candidate_pair_scores, concept_pair_counts, precision_recall_curve
from spacy_medllm.relations import concept_pairs, gold_entity_docs
from spacy_medllm.tokens import get_relations, install_extensions, relation

from test_relations import CID_TRAIN, cid_doc, make_nlp, train

# what the entity ruler finds in CID_TRAIN: right, a wrong label (nephrotoxicity), a part of
# a mention (breast cancer), a spurious one (rats); naloxone, xq-7 and the whole
# "ovarian and breast cancer" are missed
RULES = {
    "Chemical": ["cisplatin", "nephrotoxicity", "lithium", "clonidine"],
    "Disease": ["renal failure", "tremor", "hypotension", "breast cancer", "rats", "fever"],
}
IDS = {"cisplatin": "C1", "nephrotoxicity": "D1", "renal failure": "D2", "lithium": "C3", "clonidine": "C4", "tremor": "D3", "hypotension": "D4", "fever": "D7"}
CONFUSION = {
    "labels": ["Chemical", "Disease", "none"],
    "matrix": [[6, 0, 2], [1, 5, 1], [0, 2, 0]],
    "partial_overlaps": {"pairs": 1, "same_label": 1},
}


@Language.component("test_plots_ids", assigns=["token.ent_kb_id"])
def set_ids(doc: Doc) -> Doc:
    """The entities' ids from IDS, by lowercased text (a linker that never abstains wrongly)."""
    doc.ents = [Span(doc, e.start, e.end, label=e.label_, kb_id=IDS.get(e.text.lower(), "")) for e in doc.ents]
    return doc


def ents(nlp, text, spans):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(text.index(s), text.index(s) + len(s), label=label) for s, label in spans]
    return doc


def test_label_confusion_counts():
    """One right, one wrong label, one missed, one spurious, one boundary error (a missed
    and a spurious entity that overlap); a label only predicted. The P/R are spaCy's."""
    nlp = spacy.blank("en")
    text = "Naloxone and clonidine induced hypotension and acute renal failure in rats ."
    gold = ents(nlp, text, [("Naloxone", "Chemical"), ("clonidine", "Chemical"), ("hypotension", "Disease"), ("acute renal failure", "Disease")])
    pred = ents(nlp, text, [("Naloxone", "Chemical"), ("clonidine", "Disease"), ("renal failure", "Disease"), ("rats", "Disease")])
    text2 = "BRCA1 was not associated with fever ."
    gold2 = ents(nlp, text2, [("fever", "Disease")])
    pred2 = ents(nlp, text2, [("BRCA1", "Gene"), ("fever", "Chemical")])
    confusion = label_confusion([pred, pred2], [gold, gold2])
    assert confusion == {
        "labels": ["Chemical", "Disease", "Gene", "none"],
        "matrix": [[1, 1, 0, 0], [1, 0, 0, 2], [0, 0, 0, 0], [0, 2, 1, 0]],
        "partial_overlaps": {"pairs": 1, "same_label": 1},
    }
    tp, predicted, gold_n = prf_counts(confusion)
    s = Scorer.score_spans([Example(pred, gold), Example(pred2, gold2)], "ents")
    assert (tp, predicted, gold_n) == (1, 6, 5)
    assert (s["ents_p"], s["ents_r"]) == (pytest.approx(tp / predicted), pytest.approx(tp / gold_n))
    assert label_confusion([], []) == {"labels": ["none"], "matrix": [[0]], "partial_overlaps": {"pairs": 0, "same_label": 0}}


def prf_counts(confusion):
    """(true positives, predicted, gold) of a confusion matrix."""
    matrix, n = confusion["matrix"], len(confusion["labels"]) - 1
    tp = sum(matrix[i][i] for i in range(n))
    return tp, sum(row[j] for row in matrix for j in range(n)), sum(sum(row) for row in matrix[:n])


def test_precision_recall_curve_exact():
    """Ties come in together; a gold pair without a candidate is never found; the P/R/F at
    the threshold are concept_pair_counts' on the pairs the threshold accepts."""
    install_extensions()
    nlp = spacy.blank("en")
    golds = [nlp.make_doc("a"), nlp.make_doc("b")]
    golds[0]._.medllm_rels = [relation("CID", head_id="C1", tail_id="D1"), relation("CID", head_id="C1", tail_id="D2")]
    golds[1]._.medllm_rels = [relation("CID", head_id="C3", tail_id="D3"), relation("CID", head_id="C3", tail_id="D4")]
    scores = [{("C1", "D1"): 0.9, ("C1", "D2"): 0.4, ("C2", "D1"): 0.6}, {("C3", "D3"): 0.6, ("C4", "D3"): 0.2}]
    curve = precision_recall_curve(scores, golds, "CID", threshold=0.5)
    assert curve == {
        "thresholds": [0.9, 0.6, 0.4, 0.2], "precision": [100.0, 66.67, 75.0, 60.0], "recall": [25.0, 50.0, 75.0, 75.0],
        "average_precision": 60.42,  # 0.25 * (1 + 2/3 + 3/4)
        "pairs": 5, "gold": 4,
        "at_threshold": {"p": 66.67, "r": 50.0, "f": 57.14, "predicted": 3, "gold": 4},
    }
    preds = []
    for doc_scores in scores:
        doc = nlp.make_doc("x")
        doc._.medllm_rels = [relation("CID", head_id=h, tail_id=t, score=s) for (h, t), s in doc_scores.items() if s >= 0.5]
        preds.append(doc)
    assert concept_pair_counts(preds, golds, "CID") == curve["at_threshold"]
    fewer = precision_recall_curve(scores, golds, "CID", threshold=0.5, max_points=2)
    assert (fewer["thresholds"], fewer["recall"], fewer["average_precision"]) == ([0.9, 0.2], [25.0, 75.0], 60.42)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """The pipeline (entity ruler "ner", ids, medllm_rel with a tuned threshold that lets
    exactly one wrong concept pair through on the gold entities), the gold file, and the
    threshold."""
    install_extensions()
    nlp, rel = make_nlp()
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
    train(nlp, examples, 60)
    ruler = nlp.add_pipe("entity_ruler", name="ner", first=True, config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": label, "pattern": text} for label, texts in RULES.items() for text in texts])
    nlp.add_pipe("test_plots_ids", after="ner")
    gold_docs = [cid_doc(nlp, t, e, p) for t, e, p in CID_TRAIN]
    gold, other = [], []
    for eg, (_, _, pairs) in zip(gold_entity_docs(nlp, gold_docs, upto="medllm_rel"), CID_TRAIN):
        (inst,), probs = rel.predict([eg.predicted])
        for (h, t), prob in zip(inst.pairs, probs[:, 0]):
            key = (inst.entities[h].concept_id, inst.entities[t].concept_id)
            if None not in key:
                (gold if key in set(pairs) else other).append(float(prob))
    other.sort()
    threshold = round((other[-1] + other[-2]) / 2, 4)
    assert min(gold) > other[-1] > threshold > other[-2]  # the overfit model separates them
    rel.cfg["thresholds"] = {"CID": threshold}
    tmp = tmp_path_factory.mktemp("plots")
    nlp.to_disk(tmp / "model")
    DocBin(docs=gold_docs, store_user_data=True).to_disk(tmp / "cid.spacy")
    return tmp / "model", tmp / "cid.spacy", threshold


@pytest.fixture(scope="module")
def evaluated(tiny_pipeline):
    model, data, _ = tiny_pipeline
    return evaluate_pipeline(model, [("cid", data)])


def test_confusion_of_the_evaluated_pipeline(evaluated):
    ner = evaluated["datasets"]["cid"]["ner"]
    assert ner["confusion"] == CONFUSION
    tp, predicted, gold = prf_counts(ner["confusion"])
    assert (ner["p"], ner["r"]) == (round(100 * tp / predicted, 2), round(100 * tp / gold, 2)) == (78.57, 73.33)


def test_relation_curve_of_the_evaluated_pipeline(evaluated, tiny_pipeline):
    """The curve's P/R at the component's threshold are the report's; with gold entities the
    gold pairs score highest (AP 100) and the threshold lets one other pair through."""
    d = evaluated["datasets"]["cid"]
    pr = d["relations_pr"]["CID"]
    assert pr["threshold"] == pytest.approx(tiny_pipeline[2], abs=1e-9) and pr["relative_threshold"] is None
    for setting in ("gold_entities", "end_to_end"):
        curve, reported = pr[setting], d["relations"]["CID"][setting]
        assert curve["at_threshold"] == reported
        ts, ps, rs = curve["thresholds"], curve["precision"], curve["recall"]
        assert len(ts) == len(ps) == len(rs) > 0 and len(ts) <= 200
        assert all(a > b for a, b in zip(ts, ts[1:])) and all(a <= b for a, b in zip(rs, rs[1:]))
        assert curve["gold"] == reported["gold"] == 4
        assert all(type(x) is float for x in ts + ps + rs)  # plain JSON numbers in the report
    assert d["relations"]["CID"]["gold_entities"] == {"p": 80.0, "r": 100.0, "f": 88.89, "predicted": 5, "gold": 4}
    assert pr["gold_entities"]["average_precision"] == 100.0
    assert pr["gold_entities"]["recall"][-1] == 100.0 and pr["end_to_end"]["recall"][-1] < 100.0
    assert d["relations"]["CID"]["end_to_end"]["predicted"] > 0


def test_candidate_scores_leave_the_component_as_it_is(tiny_pipeline):
    """The scores of every candidate, below the threshold too; the thresholds, the records
    and what the component predicts afterwards stay the same."""
    model, data, threshold = tiny_pipeline
    nlp = spacy.load(model)
    rel = nlp.get_pipe("medllm_rel")
    docs = list(nlp.pipe(d.text for d in DocBin().from_disk(data).get_docs(nlp.vocab)))
    cfg, records = srsly.json_dumps(rel.cfg), [get_relations(d) for d in docs]
    scores = candidate_pair_scores(rel, docs, ["CID"])["CID"]
    assert srsly.json_dumps(rel.cfg) == cfg and [get_relations(d) for d in docs] == records
    assert any(s < threshold for doc_scores in scores for s in doc_scores.values())
    for doc, doc_scores in zip(docs, scores):
        above = {key for key, s in doc_scores.items() if s >= threshold}
        assert {(h, t) for _, h, t in concept_pairs(doc, "CID")} == above
        assert [r for r in get_relations(rel(doc.copy()))] == get_relations(doc)


def test_write_plots_valid_pngs(evaluated, tmp_path):
    from matplotlib.image import imread

    pngs = write_plots({"tiny": evaluated}, tmp_path / "plots")
    assert [p.name for p in pngs] == ["ner_prf.png", "ner_confusion.png", "relations_pr.png"]  # no linker: no recall@k
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300 and image[..., :3].std() > 0.05
    # results without the new keys (an older report): only the plots they have data for
    old = srsly.json_loads(srsly.json_dumps(evaluated))
    for d in old["datasets"].values():
        del d["ner"]["confusion"], d["relations_pr"]
    assert [p.name for p in write_plots({"tiny": old}, tmp_path / "old")] == ["ner_prf.png"]
    assert markdown({"tiny": old}).count("\n") == 3


def test_markdown_holds_the_confusion_and_average_precision(evaluated):
    table = markdown({"tiny": evaluated})
    assert "| gold \\ predicted | Chemical | Disease | none |" in table
    assert "| Chemical | 6 | 0 | 2 |\n| Disease | 1 | 5 | 1 |\n| none | 0 | 2 | 0 |" in table
    assert "1 missed and spurious pairs overlap, 1 of them with the same label" in table
    assert "CID relations, tiny on cid: average precision 100.00 with gold entities" in table
