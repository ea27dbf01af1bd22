"""LabelledCorpus.v1: entities re-chosen among the mentions of some labels."""
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_medllm.corpus.convert import blank_biomedical


def test_labelled_corpus_brings_back_hidden_mentions(tmp_path):
    nlp = blank_biomedical()
    doc = Doc(nlp.vocab, words="no history of severe heart failure within 6 months".split())
    scope = Span(doc, 1, 6, label="Scope")
    cond = Span(doc, 4, 6, label="Condition", kb_id="C1")
    qual = Span(doc, 3, 4, label="Qualifier")
    neg = Span(doc, 0, 1, label="Negation")
    temp = Span(doc, 6, 9, label="Temporal")
    doc.spans["mentions"] = [scope, cond, qual, neg, temp]
    doc.ents = [neg, scope, temp]  # the longest of overlapping mentions over every label
    DocBin(docs=[doc], store_user_data=True).to_disk(tmp_path / "x.spacy")
    cfg = {"r": {"@readers": "spacy_medllm.LabelledCorpus.v1", "path": str(tmp_path / "x.spacy"),
                 "labels": ["Condition", "Qualifier", "Negation", "Temporal"]}}
    reader = spacy.registry.resolve(cfg)["r"]
    (ex,) = list(reader(nlp))
    assert [(e.text, e.label_, e.kb_id_) for e in ex.reference.ents] == [
        ("no", "Negation", ""), ("severe", "Qualifier", ""), ("heart failure", "Condition", "C1"), ("within 6 months", "Temporal", ""),
    ]
    assert ex.predicted.text == doc.text and not ex.predicted.ents
    with pytest.raises(FileNotFoundError, match="missing.spacy: file not found"):
        list(spacy.registry.resolve({"r": dict(cfg["r"], path=str(tmp_path / "missing.spacy"))})["r"](nlp))
