"""The surrogate augmenter of the PHI NER (spacy_medllm.phi_surrogate_augmenter.v1)."""
import pytest
import spacy
from hypothesis import given, settings, strategies as st
from spacy.training import Example
from spacy.util import registry

NOTE = "Pt seen by Dr. Healey at GH on 7/22 with his wife Mary. Call 410-555-1234. Transfer to Catonsville."
PHI = [("Healey", "NAME"), ("GH", "LOCATION"), ("7/22", "DATE"), ("Mary", "NAME"), ("410-555-1234", "PHONE"), ("Catonsville", "LOCATION")]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def annotated(nlp, text=NOTE, phi=PHI):
    doc = nlp.make_doc(text)
    ents, pos = [], 0
    for value, label in phi:
        start = text.index(value, pos)
        ents.append(doc.char_span(start, start + len(value), label=label))
        pos = start + len(value)
    doc.ents = ents
    return Example(nlp.make_doc(text), doc)


def make(**kwargs):
    return registry.augmenters.get("spacy_medllm.phi_surrogate_augmenter.v1")(**kwargs)


def test_copies_replace_every_phi_span_and_keep_the_rest(nlp):
    example = annotated(nlp)
    out = list(make(level=1.0, copies=2, seed=3)(nlp, example))
    assert len(out) == 3 and out[0] is example
    for copy in out[1:]:
        ref = copy.reference
        assert [e.label_ for e in ref.ents] == [label for _, label in PHI]
        assert all(e.text != value for e, (value, _) in zip(ref.ents, PHI))
        # the text between the PHI is untouched
        assert "Pt seen by Dr. " in ref.text and " with his wife " in ref.text and ". Call " in ref.text
        # the predicted side has the same tokens and no annotation
        assert [t.text for t in copy.predicted] == [t.text for t in ref] and not copy.predicted.ents
        assert "-" in ref.ents[4].text and any(c.isdigit() for c in ref.ents[2].text)


def test_notes_without_phi_are_down_sampled(nlp):
    empty = Example(nlp.make_doc("Resting comfortably."), nlp.make_doc("Resting comfortably."))
    assert list(make(keep_empty=1.0)(nlp, empty)) == [empty]
    assert list(make(keep_empty=0.0)(nlp, empty)) == []
    kept = sum(len(list(make(keep_empty=0.5, seed=s)(nlp, empty))) for s in range(200))
    assert 60 < kept < 140
    # a note with PHI is always kept
    assert len(list(make(level=0.0, copies=2, keep_empty=0.0)(nlp, annotated(nlp)))) == 1


@pytest.mark.parametrize("kwargs", [{"level": 1.5}, {"keep_empty": -0.1}, {"copies": -1}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError, match="phi_surrogate_augmenter"):
        make(**kwargs)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), picks=st.lists(st.booleans(), min_size=len(PHI), max_size=len(PHI)))
def test_entities_are_valid_token_spans(nlp, seed, picks):
    phi = [p for p, keep in zip(PHI, picks) if keep]
    example = annotated(nlp, NOTE, phi)
    for copy in list(make(level=1.0, copies=1, seed=seed)(nlp, example))[1:]:
        ref = copy.reference
        assert len(ref.ents) == len(phi)
        for ent in ref.ents:
            assert ent.text == ref.text[ent.start_char:ent.end_char] and ent.text.strip() == ent.text and ent.text
        # the copy trains: its gold aligns with its predicted tokens
        assert copy.get_aligned_ner().count("O") < len(ref) or not phi


def test_surrogate_config_reads_augmented_corpus(nlp, tmp_path):
    from pathlib import Path

    from spacy.tokens import DocBin

    example = annotated(nlp)
    empty = nlp.make_doc("Resting comfortably.")
    DocBin(docs=[example.reference, empty, empty, empty]).to_disk(tmp_path / "train.spacy")
    config = spacy.util.load_config(
        Path(__file__).parent.parent / "configs" / "deid_ner_surrogates.cfg",
        overrides={"paths.train": str(tmp_path / "train.spacy"), "paths.dev": str(tmp_path / "train.spacy")},
        interpolate=True,
    )
    corpus = registry.resolve(config["corpora"])["train"]
    out = list(corpus(nlp))
    # the note with PHI, its two surrogate copies, and at most some of the three empty notes
    with_phi = [e for e in out if e.reference.ents]
    assert len(with_phi) == 3 and len(out) - 3 < 3
    assert len({e.reference.text for e in with_phi}) == 3
