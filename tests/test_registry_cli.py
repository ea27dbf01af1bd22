"""Registered readers, the tokenizer, the augmenter and the `medllm` CLI (the entry points
of every registered name: tests/test_entry_points.py)."""
import random

import spacy
import srsly
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_medllm.augment.entity_swap import swap_entities
from spacy_medllm.cli import app
from spacy_medllm.corpus.convert import CORPORA, blank_biomedical

from test_pubtator import GOOD

runner = CliRunner()


def test_registered_reader_in_config(tmp_path):
    path = tmp_path / "sample.txt"
    path.write_text(GOOD)
    config = {"@readers": "spacy_medllm.PubTatorCorpus.v1", "path": str(path), "limit": 1}
    reader = spacy.registry.resolve({"r": config})["r"]
    nlp = blank_biomedical()
    examples = list(reader(nlp))
    assert len(examples) == 1
    assert [e.text for e in examples[0].reference.ents] == ["Propofol", "lidocaine", "clonidine", "hypotension", "nalozone"]
    assert examples[0].predicted.text == examples[0].reference.text and not examples[0].predicted.ents


def test_biomedical_tokenizer():
    nlp = blank_biomedical()
    assert [t.text for t in nlp("PAN)-induced Na+/K+ thallium-201 vitamin D. e.g. and/or Dr. Smith")] == [
        "PAN", ")", "-", "induced", "Na", "+", "/", "K", "+", "thallium", "-", "201", "vitamin", "D", ".",
        "e.g.", "and/or", "Dr.", "Smith",
    ]


def test_entity_swap():
    nlp = blank_biomedical()
    doc = nlp("Cisplatin caused renal failure.")
    doc.ents = [doc.char_span(0, 9, "Chemical", kb_id="D002945"), doc.char_span(17, 30, "Disease", kb_id="D051437")]
    names = {"Chemical": [("5-fluorouracil", "D005472")], "Disease": [("acute kidney injury", "D058186")]}
    new = swap_entities(nlp, doc, names, random.Random(0), swap_prob=1.0)
    assert new.text == "5-fluorouracil caused acute kidney injury."
    assert [(e.text, e.label_, e.kb_id_) for e in new.ents] == [("5-fluorouracil", "Chemical", "D005472"), ("acute kidney injury", "Disease", "D058186")]
    assert swap_entities(nlp, doc, names, random.Random(0), swap_prob=0.0) is None


def test_augmenter_from_docbin(tmp_path):
    nlp = blank_biomedical()
    doc = nlp("Cisplatin caused renal failure.")
    doc.ents = [doc.char_span(0, 9, "Chemical"), doc.char_span(17, 30, "Disease")]
    other = nlp("Lithium caused seizures.")
    other.ents = [other.char_span(0, 7, "Chemical"), other.char_span(15, 23, "Disease")]
    DocBin(docs=[doc, other]).to_disk(tmp_path / "train.spacy")
    config = {"@augmenters": "spacy_medllm.entity_swap_augmenter.v1", "names_path": str(tmp_path / "train.spacy"), "level": 1.0, "swap_prob": 1.0}
    augment = spacy.registry.resolve({"a": config})["a"]
    from spacy.training import Example

    out = list(augment(nlp, Example(nlp.make_doc(doc.text), doc)))
    assert len(out) == 2 and out[0].reference is doc
    # level and swap_prob 1: both mentions replaced by the other training names
    assert out[1].reference.text == "Lithium caused seizures."
    assert [(e.text, e.label_) for e in out[1].reference.ents] == [("Lithium", "Chemical"), ("seizures", "Disease")]
    assert out[1].predicted.text == out[1].reference.text and not out[1].predicted.ents


def test_cli_convert_and_errors(tmp_path):
    src = tmp_path / "bc5cdr"
    src.mkdir()
    for name in ("CDR_TrainingSet", "CDR_DevelopmentSet", "CDR_TestSet"):
        (src / f"{name}.PubTator.txt").write_text(GOOD)
    result = runner.invoke(app, ["convert", "bc5cdr", str(src), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "bc5cdr train: 2 documents, 9 mentions, 1 relations", "bc5cdr dev: 2 documents, 9 mentions, 1 relations",
        "bc5cdr test: 2 documents, 9 mentions, 1 relations", f"wrote {tmp_path / 'out'}/{{train,dev,test}}.spacy and stats.json",
    ]
    stats = srsly.read_json(tmp_path / "out" / "stats.json")
    assert stats["test"]["labels"] == {"Chemical": 5, "Disease": 3, "SpecificDisease": 1}
    docs = list(DocBin().from_disk(tmp_path / "out" / "dev.spacy").get_docs(blank_biomedical().vocab))
    assert len(docs) == 2 and docs[0].ents[0].kb_id_ == "D009270"
    # a malformed test file: nothing is written, the error names file and line
    (src / "CDR_TestSet.PubTator.txt").write_text(GOOD.replace("9000001\t85\t96", "9000001\t85\t960"))
    result = runner.invoke(app, ["convert", "bc5cdr", str(src), str(tmp_path / "out2")])
    assert result.exit_code == 1
    assert result.output == f"error: [E001] {src / 'CDR_TestSet.PubTator.txt'}, line 6: offsets 85-960 lie outside the document text (length 115) or are empty\n"
    assert not (tmp_path / "out2").exists()
    # the earlier output is intact
    assert (tmp_path / "out" / "train.spacy").exists()
    result = runner.invoke(app, ["convert", "bc5cdr", str(src), str(tmp_path / "out2"), "--skip-errors"])
    assert result.exit_code == 0
    assert result.output.splitlines()[:4] == [
        "bc5cdr train: 2 documents, 9 mentions, 1 relations", "bc5cdr dev: 2 documents, 9 mentions, 1 relations",
        "bc5cdr test: 2 documents, 8 mentions, 1 relations, 1 skipped", f"wrote {tmp_path / 'out2'}/{{train,dev,test}}.spacy and stats.json",
    ]
    result = runner.invoke(app, ["convert", "nope", str(src), str(tmp_path / "out3")])
    assert result.exit_code == 1 and result.output == f"error: [E007] Unknown corpus format 'nope'. Known: {', '.join(sorted(CORPORA))}.\n"
    assert {"ade", "bc5cdr", "chia", "ncbi_disease"} <= set(CORPORA)
