"""Multi-task training: the corpus reader that keeps some annotations of each source and
leaves the rest missing, the heads' own learning rates, and configs/multitask.cfg trained
end to end through one shared (tiny) transformer."""
from pathlib import Path

import numpy
import pytest
import spacy
from spacy import util
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import SGD, fix_random_seed
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.corpus.readers import create_multitask_corpus
from spacy_medllm.evaluation.pipeline import evaluate_pipeline, markdown
from spacy_medllm.kb import Concept, KnowledgeBase
from spacy_medllm.layers.optim import ScaledOptimizer
from spacy_medllm.tokens import get_relations, install_extensions, relation

ROOT = Path(__file__).parent.parent

CONCEPTS = [
    Concept("D009270", "Naloxone", [], ["Chemical"]),
    Concept("D007022", "Hypotension", ["low blood pressure"], ["Disease"]),
    Concept("D003000", "Clonidine", [], ["Chemical"]),
    Concept("D006973", "Hypertension", [], ["Disease"]),
]
ABSTRACTS = [
    ("Naloxone induced hypotension in rats .", [(0, 8, "Chemical", "D009270"), (17, 28, "Disease", "D007022")]),
    ("Clonidine induced hypertension after treatment .", [(0, 9, "Chemical", "D003000"), (18, 30, "Disease", "D006973")]),
    ("Hypotension was not associated with clonidine .", [(0, 11, "Disease", "D007022"), (36, 45, "Chemical", "D003000")]),
]
SENTENCES = [
    ("Naloxone caused seizures in this patient .", 1.0),
    ("The study of blood pressure was done .", 0.0),
    ("Cisplatin induced renal toxicity .", 1.0),
    ("We studied rats for a day .", 0.0),
]


def abstract_doc(nlp, text, ents):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(s, e, label=l, kb_id=k) for s, e, l, k in ents]
    # the chemical induces the disease (CID, concept level)
    doc._.medllm_rels = [relation("CID", head_id=ents[0][3], tail_id=ents[1][3])]
    doc.cats = {"ADE": 1.0}
    return doc


def sentence_doc(nlp, text, ade):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(0, len(doc[0].text), label="Drug")] if ade else []  # as in the ADE corpus
    doc.cats = {"ADE": ade}
    return doc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    install_extensions()
    path = tmp_path_factory.mktemp("multitask")
    nlp = spacy.blank("en")
    DocBin(docs=[abstract_doc(nlp, t, e) for t, e in ABSTRACTS], store_user_data=True).to_disk(path / "abstracts.spacy")
    DocBin(docs=[sentence_doc(nlp, t, c) for t, c in SENTENCES], store_user_data=True).to_disk(path / "sentences.spacy")
    KnowledgeBase(CONCEPTS).to_disk(path / "kb")
    (path / "triples.tsv").write_text("D007022\tisa\tD006973\n", encoding="utf8")
    return path


def read(corpus, sources, seed=0):
    return list(create_multitask_corpus(sources, seed=seed)(spacy.blank("en")))


def test_kept_annotations_stay_the_rest_is_missing(corpus):
    examples = read(corpus, {
        "abstracts": {"path": corpus / "abstracts.spacy", "annotations": ["ents", "relations"]},
        "sentences": {"path": corpus / "sentences.spacy", "annotations": ["cats"]},
    })
    abstracts, sentences = examples[:3], examples[3:]
    assert len(sentences) == len(SENTENCES)
    for eg, (text, ents) in zip(abstracts, ABSTRACTS):
        ref = eg.reference
        assert [(e.start_char, e.end_char, e.label_, e.kb_id_) for e in ref.ents] == ents
        assert [r["label"] for r in get_relations(ref)] == ["CID"]
        assert ref.cats == {}  # no textcat loss: missing, not negative
    for eg, (text, ade) in zip(sentences, SENTENCES):
        ref = eg.reference
        assert ref.cats == {"ADE": ade}
        # no entity annotation at all (not "outside"): the NER learns nothing from them
        assert not ref.has_annotation("ENT_IOB") and all(t.ent_iob_ == "" for t in ref)
        assert get_relations(ref) == []
        assert eg.get_aligned_ner() == [None] * len(ref)


def test_limit_is_a_fixed_seeded_sample(corpus):
    sources = {"sentences": {"path": corpus / "sentences.spacy", "annotations": ["cats"], "limit": 2}}
    first = [eg.reference.text for eg in read(corpus, sources)]
    assert len(first) == 2 and first == [eg.reference.text for eg in read(corpus, sources)]
    assert set(first) <= {t for t, _ in SENTENCES}
    # in file order
    assert sorted(first, key=[t for t, _ in SENTENCES].index) == first


def test_bad_sources_fail_clearly(corpus):
    with pytest.raises(ValueError, match=r"E138.*'sentences'.*\['relations'\]"):
        create_multitask_corpus({"sentences": {"path": corpus / "sentences.spacy", "annotations": ["relations"]}})
    with pytest.raises(ValueError, match=r"E138.*'x'.*labels"):
        create_multitask_corpus({"x": {"path": "a.spacy", "annotations": ["labels"]}})
    with pytest.raises(ValueError, match=r"E137.*'x'.*needs a `path`"):
        create_multitask_corpus({"x": {"file": "a.spacy"}})
    with pytest.raises(FileNotFoundError, match="E003"):
        read(corpus, {"x": {"path": corpus / "missing.spacy"}})


def test_linker_learn_rate_scale():
    with pytest.raises(ValueError, match="E037"):
        spacy.blank("en").add_pipe("medllm_linker", config={"learn_rate_scale": 0.0})
    # the wrapper multiplies the step the optimizer takes
    weights, grad = numpy.ones(4, dtype="f"), numpy.full(4, 0.5, dtype="f")
    plain, _ = SGD(0.1, L2=0.0, grad_clip=0.0)((1, "W"), weights.copy(), grad.copy())
    scaled, _ = ScaledOptimizer(SGD(0.1, L2=0.0, grad_clip=0.0), 3.0)((1, "W"), weights.copy(), grad.copy())
    numpy.testing.assert_allclose(1.0 - scaled, 3.0 * (1.0 - plain), rtol=1e-6)


def test_scaled_linker_moves_faster():
    def step(scale):
        fix_random_seed(0)
        nlp = spacy.blank("en")
        linker = nlp.add_pipe("medllm_linker", config={"learn_rate_scale": scale})
        linker.set_kb(KnowledgeBase(CONCEPTS))
        examples = [Example(nlp.make_doc(t), abstract_doc(nlp, t, e)) for t, e in ABSTRACTS]
        nlp.initialize(lambda: examples)
        before = [p.detach().numpy().copy() for p in _torch(linker).parameters()]
        nlp.update(examples, sgd=SGD(0.01, L2=0.0, grad_clip=0.0), losses={})
        return [numpy.abs(p.detach().numpy() - b).sum() for p, b in zip(_torch(linker).parameters(), before)]

    slow, fast = step(1.0), step(4.0)
    moved = [(s, f) for s, f in zip(slow, fast) if s > 0]
    assert moved and all(f == pytest.approx(4.0 * s, rel=1e-3) for s, f in moved)


def _torch(linker):
    return next(node for node in linker.model.walk() if node.shims).shims[0]._model


@pytest.fixture(scope="module")
def trained(corpus, tiny_bert, tmp_path_factory):
    """configs/multitask.cfg trained for 4 steps with the tiny encoder on the inline corpora."""
    from spacy.cli.train import train

    tmp_path = tmp_path_factory.mktemp("trained")

    overrides = {
        "paths.train": str(corpus / "abstracts.spacy"), "paths.dev": str(corpus / "abstracts.spacy"),
        "paths.ade_train": str(corpus / "sentences.spacy"), "paths.ade_dev": str(corpus / "sentences.spacy"),
        "paths.kb": str(corpus / "kb"), "paths.kg_triples": str(corpus / "triples.tsv"),
        "components.transformer.model.name": str(tiny_bert),
        "components.transformer.model.get_spans.window": 16, "components.transformer.model.get_spans.stride": 12,
        "corpora.train.sources.ade.limit": 0,
        "training.max_steps": 4, "training.eval_frequency": 2, "training.logger.progress_bar": False,
    }
    train(ROOT / "configs" / "multitask.cfg", tmp_path, overrides=overrides)
    return tmp_path


def test_multitask_config_trains_one_shared_encoder(trained, corpus, tmp_path):
    """Every head listens to the one transformer, and the saved pipeline predicts every task;
    its int8 version too; every component scored in one report."""
    nlp = spacy.load(trained / "model-last")
    assert nlp.pipe_names == ["transformer", "ner", "medllm_linker", "medllm_rel", "textcat_multilabel"]
    assert sorted(nlp.get_pipe("transformer").listening_components) == ["medllm_linker", "medllm_rel", "ner", "textcat_multilabel"]
    assert nlp.get_pipe("medllm_linker").learn_rate_scale == 50.0
    doc = nlp("Naloxone induced hypotension in rats .")
    assert set(doc.cats) == {"ADE"} and 0.0 <= doc.cats["ADE"] <= 1.0
    meta = util.load_meta(trained / "model-last" / "meta.json")
    assert {"ents_f", "medllm_link_acc", "medllm_rel_f", "cats_score"} <= set(meta["performance"])

    # every component scored on the same texts, in one report; then the int8 pipeline
    runner = CliRunner()
    quantized = runner.invoke(app, ["quantize", str(trained / "model-last"), str(tmp_path / "int8")])
    assert quantized.exit_code == 0, quantized.output
    int8 = spacy.load(tmp_path / "int8")
    doc8 = int8("Naloxone induced hypotension in rats .")
    assert set(doc8.cats) == {"ADE"}
    datasets = [("abstracts", corpus / "abstracts.spacy"), ("sentences", corpus / "sentences.spacy")]
    res = evaluate_pipeline(tmp_path / "int8", datasets)
    abstracts, sentences = res["datasets"]["abstracts"], res["datasets"]["sentences"]
    assert res["quantized"]["components"] == ["transformer"] and res["size_mb"] > 0
    assert {"ner", "linker", "relations", "textcat"} <= set(abstracts)  # the raw file has gold cats too
    assert abstracts["linker"]["gold_mentions"]["overall"]["mentions"] == 6
    assert abstracts["relations"]["CID"]["gold_entities"]["gold"] == 3
    assert sentences["textcat"]["textcat_multilabel"]["documents"] == len(SENTENCES)
    assert "ner" not in sentences and "linker" not in sentences  # their entity labels are not the NER's
    table = markdown({"int8": res})
    assert table.count("| int8 |") == 2
    report = runner.invoke(app, ["evaluate-pipeline", "--model", f"mt={trained / 'model-last'}", "--data", f"abstracts={corpus / 'abstracts.spacy'}",
                                 "--output", str(tmp_path / "metrics"), "--name", "mt"])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "metrics" / "mt.md").exists() and (tmp_path / "metrics" / "mt.json").exists()
    missing = runner.invoke(app, ["evaluate-pipeline", "--model", f"mt={tmp_path / 'nope'}", "--data", f"a={corpus / 'abstracts.spacy'}"])
    assert missing.exit_code == 1 and "--model mt" in missing.output


def test_assemble_swaps_the_kb_and_states_the_licences(trained, tmp_path):
    runner = CliRunner()
    local = KnowledgeBase(CONCEPTS)
    local.add_source("ctd_medic", title="CTD MEDIC disease vocabulary", licence="CTD terms of use: local use only", redistribution="no")
    local.to_disk(tmp_path / "kb_local")
    package_kb = KnowledgeBase(CONCEPTS[:3])
    package_kb.add_source("mesh", title="MeSH descriptors", licence="CC0", redistribution="yes")
    package_kb.to_disk(tmp_path / "kb_package")
    (tmp_path / "triples.tsv").write_text("D007022\tisa\tD006973\nD003000\tisa\tD009270\n", encoding="utf8")
    model = str(trained / "model-last")
    # a local-only source is refused, with the way out
    refused = runner.invoke(app, ["assemble", model, str(tmp_path / "out"), "--kb", str(tmp_path / "kb_local")])
    assert refused.exit_code == 1 and "E145" in refused.output and "ctd_medic" in refused.output and "--local-only" in refused.output
    assert not (tmp_path / "out").exists()
    local_only = runner.invoke(app, ["assemble", model, str(tmp_path / "local"), "--kb", str(tmp_path / "kb_local"), "--local-only"])
    assert local_only.exit_code == 0 and "LOCAL USE ONLY" in local_only.output
    assert util.load_meta(tmp_path / "local" / "meta.json")["medllm_local_only"] is True
    ok = runner.invoke(app, ["assemble", model, str(tmp_path / "pkg"), "--kb", str(tmp_path / "kb_package"), "--hierarchy", str(tmp_path / "triples.tsv"),
                             "--name", "medllm_test", "--version", "0.2.0", "--training", "bc5cdr"])
    assert ok.exit_code == 0, ok.output
    nlp = spacy.load(tmp_path / "pkg")
    assert len(nlp.get_pipe("medllm_linker").kb) == 3
    assert nlp.get_pipe("medllm_rel").knowledge.parents == {"D007022": ["D006973"], "D003000": ["D009270"]}
    meta = nlp.meta
    assert (meta["name"], meta["version"], meta["medllm_local_only"]) == ("medllm_test", "0.2.0", False)
    assert [s["name"].split(" (")[0] for s in meta["sources"]] == ["BioCreative V CDR corpus", "knowledge base: MeSH descriptors"]
    assert meta["sources"][1]["license"] == "CC0"
    assert nlp("Naloxone induced hypotension .") is not None
    again = runner.invoke(app, ["assemble", model, str(tmp_path / "pkg"), "--kb", str(tmp_path / "kb_package")])
    assert again.exit_code == 1 and "exists" in again.output
