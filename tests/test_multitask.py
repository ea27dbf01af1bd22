"""Multi-task training: the corpus reader that keeps some annotations of each source and
leaves the rest missing, the heads' own learning rates, and configs/multitask.cfg trained
end to end through one shared (tiny) transformer."""
from pathlib import Path

import numpy

import pytest
import spacy
import srsly
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
        "training.max_steps": 4, "training.eval_frequency": 2, "training.logger.progress_bar": None,
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
    # the plots: PNG files with something drawn on them
    from matplotlib.image import imread

    from spacy_medllm.evaluation.plots import write_plots

    pngs = write_plots({"int8": res}, tmp_path / "plots")
    assert [p.name for p in pngs] == ["ner_prf.png", "ner_confusion.png", "linker_recall_at_k.png", "relations_pr.png"]
    for png in pngs:
        image = imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image[..., :3].std() > 0.05
    report = runner.invoke(app, ["evaluate-pipeline", "--model", f"mt={trained / 'model-last'}", "--data", f"abstracts={corpus / 'abstracts.spacy'}",
                                 "--output", str(tmp_path / "metrics"), "--name", "mt"])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "metrics" / "mt.md").exists() and (tmp_path / "metrics" / "mt.json").exists()
    assert (tmp_path / "metrics" / "plots" / "mt" / "ner_prf.png").exists()
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
    # a linker taken from another pipeline brings its KB: one holding a local-only source
    # cannot enter a shareable package through add-components either
    local_meta = util.load_meta(tmp_path / "local" / "meta.json")
    local_meta.setdefault("performance", {})["medllm_link_acc"] = 0.25
    srsly.write_json(tmp_path / "local" / "meta.json", local_meta)
    # (scored on held-out data: its score is carried)
    config = util.load_config(tmp_path / "local" / "config.cfg", interpolate=False)
    corpus_file = config["paths"]["train"]
    assert config["paths"]["dev"] == corpus_file
    (tmp_path / "held_out.spacy").write_bytes(b"other documents")
    config["paths"]["dev"] = str(tmp_path / "held_out.spacy")
    config.to_disk(tmp_path / "local" / "config.cfg")
    swap = ["add-components", str(tmp_path / "pkg"), str(tmp_path / "swapped"), "--from", f"{tmp_path / 'local'}:medllm_linker", "--replace"]
    refused = runner.invoke(app, swap)
    assert refused.exit_code == 1 and "E145" in refused.output and "ctd_medic" in refused.output
    assert not (tmp_path / "swapped").exists()
    accepted = runner.invoke(app, swap + ["--local-only"])
    assert accepted.exit_code == 0, accepted.output
    swapped = util.load_meta(tmp_path / "swapped" / "meta.json")
    assert swapped["medllm_local_only"] is True and "LOCAL USE ONLY" in swapped["notes"]
    assert "knowledge base: CTD MEDIC disease vocabulary" in [s["name"] for s in swapped["sources"]]
    assert swapped["medllm_added"] == [{"component": "medllm_linker", "from": str(tmp_path / "local"), "replaced": True}]
    assert swapped["pipeline"] == meta["pipeline"] and swapped["performance"]["medllm_link_acc"] == 0.25
    # training data that cannot be found from here: the score is carried, marked unchecked
    config["paths"]["dev"] = str(tmp_path / "moved" / "dev.spacy")
    config.to_disk(tmp_path / "local" / "config.cfg")
    unchecked = runner.invoke(app, swap + ["--local-only"] + ["--force"])
    assert unchecked.exit_code == 0, unchecked.output
    unchecked_meta = util.load_meta(tmp_path / "swapped" / "meta.json")
    assert unchecked_meta["performance"]["medllm_link_acc"] == 0.25
    assert unchecked_meta["medllm_added"][0]["scores"].startswith(f"carried unchecked: its training config's paths.dev {tmp_path / 'moved' / 'dev.spacy'} not found")
    assert "scores carried unchecked" in unchecked.output
    # a package-KB linker keeps the package shareable, and says where it came from
    kept = runner.invoke(app, ["add-components", str(tmp_path / "pkg"), str(tmp_path / "kept"), "--from", f"{tmp_path / 'pkg'}:medllm_linker", "--replace"])
    assert kept.exit_code == 0, kept.output
    assert "medllm_linker from " in kept.output and "scores not carried" in kept.output
    kept_meta = util.load_meta(tmp_path / "kept" / "meta.json")
    assert kept_meta["medllm_local_only"] is False and kept_meta["sources"] == meta["sources"]
    assert kept_meta["medllm_added"][0]["from"] == str(tmp_path / "pkg")
    # the tiny pipelines here were scored on their training file (paths.dev = paths.train), as
    # a train+dev linker is: that score is not carried into the package as the linker's
    assert "medllm_link_acc" not in kept_meta["performance"] and "ents_f" in kept_meta["performance"]
    assert kept_meta["medllm_added"][0]["scores"] == f"not carried: its development data {corpus_file} is among its training data ({corpus_file})"


CHAIN_TEXT = "Patient denies hypotension after naloxone . Mother has hypertension . Clonidine caused low blood pressure ( LBP ) ."


def test_chains_with_scispacy_abbreviations_and_medspacy_context(trained):
    """The pipeline with scispaCy's abbreviation detector before the linker and medspaCy's
    ConText after it (spaCy 3.8; scripts/install_medspacy.sh). The tiny NER is barely
    trained, so the entities are given and every other component runs on them."""
    import medspacy  # noqa: F401  (registers medspacy_context)
    import scispacy.abbreviation  # noqa: F401  (registers abbreviation_detector)

    nlp = spacy.load(trained / "model-last")
    nlp.add_pipe("sentencizer", first=True)
    nlp.add_pipe("abbreviation_detector", before="medllm_linker")
    nlp.add_pipe("medspacy_context", last=True)
    doc = nlp.make_doc(CHAIN_TEXT)
    wanted = [("hypotension", "Disease"), ("naloxone", "Chemical"), ("hypertension", "Disease"), ("Clonidine", "Chemical"), ("LBP", "Disease")]
    doc.ents = [doc.char_span(CHAIN_TEXT.index(t), CHAIN_TEXT.index(t) + len(t), label=label) for t, label in wanted]
    for name, proc in nlp.pipeline:
        if name != "ner":
            doc = proc(doc)
    ents = {e.text: e for e in doc.ents}
    assert ents["hypotension"]._.is_negated and not ents["naloxone"]._.is_family
    assert ents["hypertension"]._.is_family and not ents["hypertension"]._.is_negated
    assert not ents["Clonidine"]._.is_negated
    # "LBP" shares no 3-gram with a KB name: its candidates come from its long form
    assert [str(a._.long_form) for a in doc._.abbreviations] == ["low blood pressure"]
    assert "D007022" in [cid for cid, _ in ents["LBP"]._.kb_candidates]
    assert all(e.kb_id_ for e in doc.ents)  # the linker ran on every entity (an id or NIL)
    assert isinstance(doc._.medllm_rels, list) and set(doc.cats) == {"ADE"}
    # and the whole chain from raw text
    full = nlp(CHAIN_TEXT)
    assert all(hasattr(e._, "is_negated") for e in full.ents)
    # `medllm annotate` writes the ConText flags of a pipeline that runs ConText
    from spacy_medllm.engines.records import doc_record, runs_context

    assert runs_context(nlp) and not runs_context(spacy.load(trained / "model-last"))
    record = doc_record("x", doc, context=runs_context(nlp))
    assert [(e["text"], e["is_negated"], e["is_family"]) for e in record["entities"]][:3] == [
        ("hypotension", True, False), ("naloxone", True, False), ("hypertension", False, True)]  # "denies" scopes over both


def predictions(nlp, texts):
    out = []
    for doc in nlp.pipe(texts):
        out.append({
            "ents": [(e.start_char, e.end_char, e.label_, e.kb_id_) for e in doc.ents],
            "cats": {k: round(v, 5) for k, v in doc.cats.items()},
            "rels": [(r["head_id"], r["tail_id"], r["label"], round(r["score"], 5)) for r in doc._.medllm_rels],
        })
    return out


def test_package_installs_and_loads_by_name(trained, corpus, tmp_path):
    """`spacy package` of the assembled pipeline, installed with pip, loads by name in a fresh
    process (offline, nothing but spacy_medllm and its requirements) and predicts what the
    pipeline folder predicts."""
    import json
    import os
    import subprocess
    import sys

    from spacy_medllm.assemble import assemble

    package_kb = KnowledgeBase(CONCEPTS)
    package_kb.add_source("mesh", title="MeSH descriptors", licence="CC0", redistribution="yes")
    package_kb.to_disk(tmp_path / "kb")
    folder = tmp_path / "medllm_test"
    assemble(trained / "model-last", folder, kb_path=tmp_path / "kb", name="medllm_test", version="0.0.1")
    (tmp_path / "packages").mkdir()
    subprocess.run([sys.executable, "-m", "spacy", "package", str(folder), str(tmp_path / "packages"), "--name", "medllm_test",
                    "--version", "0.0.1", "--force"], check=True, capture_output=True)
    sdist = tmp_path / "packages" / "en_medllm_test-0.0.1" / "dist" / "en_medllm_test-0.0.1.tar.gz"
    assert sdist.exists()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(tmp_path / "site"), str(sdist)],
                   check=True, capture_output=True)
    texts = [t for t, _ in ABSTRACTS] + [CHAIN_TEXT, ""]
    script = "import json, sys, spacy\nfrom test_multitask import predictions\nnlp = spacy.load('en_medllm_test')\n" \
             "print(json.dumps({'meta': nlp.meta, 'preds': predictions(nlp, json.loads(sys.argv[1]))}))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(Path(__file__).parent)]), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", script, json.dumps(texts)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["preds"] == json.loads(json.dumps(predictions(spacy.load(folder), texts)))
    meta = loaded["meta"]
    assert any(r.startswith("spacy_medllm") or r.startswith("spacy-medllm") for r in meta["requirements"])
    assert meta["sources"][-1]["license"] == "CC0" and meta["medllm_local_only"] is False


def _textcat(nlp, arch):
    tok2vec = {"@architectures": "spacy.HashEmbedCNN.v2", "width": 16, "depth": 1, "embed_size": 100, "window_size": 1,
               "maxout_pieces": 2, "subword_features": True, "pretrained_vectors": None}
    return nlp.add_pipe("textcat_multilabel", config={"model": {
        "@architectures": arch, "exclusive_classes": False, "use_reduce_first": False, "use_reduce_last": False,
        "use_reduce_max": True, "use_reduce_mean": True, "tok2vec": tok2vec}})


def test_textcat_takes_an_empty_document_in_a_batch():
    """spaCy's TextCatReduce.v1 with max pooling fails on ["text", ""]; ours does not, trains
    on empty documents, and holds the same weights (a spaCy-trained textcat loads into it)."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    ours = _textcat(nlp, "spacy_medllm.TextCatReduce.v1")
    examples = [Example.from_dict(nlp.make_doc(t), {"cats": {"ADE": c}}) for t, c in [("drug caused rash", 1.0), ("", 0.0), ("nothing here", 0.0)]]
    nlp.initialize(lambda: examples)
    for _ in range(3):
        assert nlp.update(examples)["textcat_multilabel"] > 0
    cats = [d.cats["ADE"] for d in nlp.pipe(["drug caused rash", "", "nothing"])]
    assert all(0.0 <= c <= 1.0 for c in cats)
    spacys = spacy.blank("en")
    theirs = _textcat(spacys, "spacy.TextCatReduce.v1")
    theirs.from_bytes(ours.to_bytes())
    assert spacys("drug caused rash").cats == nlp("drug caused rash").cats
    with pytest.raises(ValueError, match="sequence lengths must be > 0"):
        list(spacys.pipe(["drug caused rash", ""]))
    ours.from_bytes(theirs.to_bytes())
    assert nlp("drug caused rash").cats == spacys("drug caused rash").cats
