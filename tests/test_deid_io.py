"""medllm deidentify: formats, refusal to overwrite, corrupt records, atomic output, and
annotations re-mapped through every replacement (property-based)."""
import csv
import json
from pathlib import Path

import pytest
import spacy
from hypothesis import given, settings, strategies as st
from spacy.tokens import Doc, DocBin, Span
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.deid.io import CorruptRecord, deidentify_path
from spacy_medllm.deid.remap import cut_spans, remap_doc
from spacy_medllm.deid.surrogates import Surrogates, replace_spans
from spacy_medllm.tokens import get_relations, install_extensions, relation

NOTE = "Dr. John Smith saw the patient on 3/14. Call 410-555-1234."
TAGGED = "Dr. [NAME] saw the patient on [DATE]. Call [PHONE]."


@pytest.fixture(scope="module")
def nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_deid", config={"replace": "tag"})
    return nlp


def test_jsonl_keeps_other_fields(nlp, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "text": NOTE}) + "\n" + json.dumps({"id": 2, "text": "No PHI."}) + "\n", encoding="utf8")
    summary = deidentify_path(nlp, src, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf8").splitlines()]
    assert rows == [{"id": 1, "text": TAGGED}, {"id": 2, "text": "No PHI."}]
    assert summary.documents == 2 and dict(summary.replaced) == {"NAME": 1, "DATE": 1, "PHONE": 1}


def test_csv_column_and_mimic(nlp, tmp_path):
    src = tmp_path / "notes.csv"
    with src.open("w", newline="", encoding="utf8") as f:
        w = csv.writer(f)
        w.writerow(["note_id", "body"])
        w.writerow(["7", NOTE])
    deidentify_path(nlp, src, tmp_path / "out.csv", column="body")
    assert list(csv.reader((tmp_path / "out.csv").open(encoding="utf8"))) == [["note_id", "body"], ["7", TAGGED]]
    mimic = tmp_path / "NOTEEVENTS.csv"
    with mimic.open("w", newline="", encoding="utf8") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "TEXT"])
        w.writerow(["1", "10", "Seen [**2101-10-20**] by [**Known lastname 1234**]."])
    deidentify_path(nlp, mimic, tmp_path / "mimic_out.csv")
    assert list(csv.reader((tmp_path / "mimic_out.csv").open(encoding="utf8")))[1] == ["1", "10", "Seen [DATE] by [NAME]."]


def test_text_folder(nlp, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text(NOTE, encoding="utf8")
    (tmp_path / "in" / "sub" / "b.txt").write_text("Wife MARY called.", encoding="utf8")
    deidentify_path(nlp, tmp_path / "in", tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text(encoding="utf8") == TAGGED
    assert (tmp_path / "out" / "sub" / "b.txt").read_text(encoding="utf8") == "Wife [NAME] called."


def test_refuses_to_overwrite(nlp, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": NOTE}) + "\n", encoding="utf8")
    with pytest.raises(ValueError, match="E064"):
        deidentify_path(nlp, src, src, force=True)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text(NOTE, encoding="utf8")
    with pytest.raises(ValueError, match="E064"):
        deidentify_path(nlp, tmp_path / "in", tmp_path / "in" / "out")
    out = tmp_path / "out.jsonl"
    out.write_text("keep me", encoding="utf8")
    with pytest.raises(FileExistsError, match="E063"):
        deidentify_path(nlp, src, out)
    assert out.read_text(encoding="utf8") == "keep me"
    deidentify_path(nlp, src, out, force=True)
    assert json.loads(out.read_text(encoding="utf8")) == {"text": TAGGED}


def test_corrupt_record_skipped_or_stops(nlp, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        (json.dumps({"text": NOTE}) + "\n{not json\n" + json.dumps({"other": 1}) + "\n").encode("utf8")
        + b'{"text": "bad \xff byte"}\n' + (json.dumps({"text": "Wife MARY called."}) + "\n").encode("utf8")
    )
    with pytest.warns(UserWarning, match="skipped 3 corrupt record"):
        summary = deidentify_path(nlp, src, tmp_path / "out.jsonl")
    assert summary.documents == 2
    assert [p for p, _ in summary.skipped] == ["line 2", "line 3", "line 4"]
    assert summary.skipped[2][1] == "not valid UTF-8"
    assert [json.loads(x)["text"] for x in (tmp_path / "out.jsonl").read_text(encoding="utf8").splitlines()] == [TAGGED, "Wife [NAME] called."]
    with pytest.raises(CorruptRecord, match=r"line 2: corrupt record: not JSON"):
        deidentify_path(nlp, src, tmp_path / "stop.jsonl", on_error="stop")
    # a stopped run leaves neither the output nor a temporary file behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_csv_row_with_wrong_columns(nlp, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,\"Dr. John Smith saw him.\"\n2,a,b\n3,\"Wife MARY called.\"\n", encoding="utf8")
    with pytest.warns(UserWarning):
        summary = deidentify_path(nlp, src, tmp_path / "out.csv")
    assert summary.skipped == [("line 3", "expected 2 columns, found 3 (truncated record or unbalanced quotes?)")]
    assert list(csv.reader((tmp_path / "out.csv").open(encoding="utf8"))) == [["id", "text"], ["1", "Dr. [NAME] saw him."], ["3", "Wife [NAME] called."]]


def test_cli(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": NOTE}) + "\n", encoding="utf8")
    runner = CliRunner()
    res = runner.invoke(app, ["deidentify", str(src), str(tmp_path / "out.jsonl"), "--replace", "tag", "--summary", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out.jsonl").read_text(encoding="utf8")) == {"text": TAGGED}
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf8"))["replaced"] == {"DATE": 1, "NAME": 1, "PHONE": 1}
    res = runner.invoke(app, ["deidentify", str(src), str(tmp_path / "out.jsonl")])
    assert res.exit_code == 1 and "E063" in res.output


def _annotated_doc(nlp, text, ents, rels):
    install_extensions()
    doc = nlp.make_doc(text)
    spans = [doc.char_span(s, e, label=l, alignment_mode="expand") for s, e, l in ents]
    spans = spacy.util.filter_spans([s for s in spans if s is not None])
    doc.ents = spans
    doc.spans["mentions"] = list(spans)
    doc._.medllm_rels = [relation("REL", head=spans[i], tail=spans[j]) for i, j in rels if i < len(spans) and j < len(spans)]
    return doc


def test_docbin_round_trip(nlp, tmp_path):
    words_nlp = spacy.blank("en")
    doc = _annotated_doc(words_nlp, "Dr. John Smith gave aspirin on 3/14 for chest pain.", [(4, 14, "Person"), (20, 27, "Drug"), (40, 50, "Disease")], [(1, 2)])
    db = DocBin(store_user_data=True)
    db.add(doc)
    db.to_disk(tmp_path / "in.spacy")
    deidentify_path(nlp, tmp_path / "in.spacy", tmp_path / "out.spacy")
    out = list(DocBin().from_disk(tmp_path / "out.spacy").get_docs(words_nlp.vocab))[0]
    assert out.text == "Dr. [NAME] gave aspirin on [DATE] for chest pain."
    assert [(e.text, e.label_) for e in out.ents] == [("[NAME]", "Person"), ("aspirin", "Drug"), ("chest pain", "Disease")]
    assert [(out[r["head"][0]:r["head"][1]].text, out[r["tail"][0]:r["tail"][1]].text) for r in get_relations(out)] == [("aspirin", "chest pain")]


WORDS = ["the", "pt", "John", "Smith", "aspirin", "3/14", "pain", "Boston", "x", "MRN", "12345678"]


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=25),
    ents=st.lists(st.tuples(st.integers(0, 24), st.integers(1, 3), st.sampled_from(["A", "B"])), max_size=6),
    phi=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 12)), max_size=6),
    mode=st.sampled_from(["tag", "surrogate"]),
)
def test_remap_keeps_every_entity_and_relation(words, ents, phi, mode):
    """Random entities and relations, random replacements (also partly overlapping the
    entities): every entity, span and relation survives, with its label, and the text of an
    entity outside every replacement is unchanged."""
    nlp = spacy.blank("en")
    text = " ".join(words)
    doc = nlp.make_doc(text)
    spans = []
    for start, length, label in ents:
        if start < len(doc):
            spans.append(Span(doc, start, min(len(doc), start + length), label=label))
    spans = spacy.util.filter_spans(spans)
    install_extensions()
    doc.ents = spans
    doc.spans["mentions"] = list(spans)
    doc._.medllm_rels = [relation("R", head=spans[i], tail=spans[i + 1]) for i in range(len(spans) - 1)]
    replacements = sorted({(min(s, len(text)), min(len(text), s + n)) for s, n in phi})
    chosen, last = [], -1
    for s, e in replacements:  # non-overlapping, non-empty
        if s >= last and e > s:
            chosen.append((s, e, "NAME"))
            last = e
    from spacy_medllm.deid.remap import annotation_boundaries

    cut = cut_spans(text, chosen, annotation_boundaries(doc))
    new_text, offsets = replace_spans(text, cut, mode, Surrogates(text, seed=0) if mode == "surrogate" else None)
    new = remap_doc(doc, new_text, offsets, nlp)
    assert new.text == new_text
    assert [e.label_ for e in new.ents] == [e.label_ for e in doc.ents]
    assert [s.label_ for s in new.spans["mentions"]] == [s.label_ for s in doc.spans["mentions"]]
    rels = get_relations(new)
    assert len(rels) == len(doc._.medllm_rels)
    ents_by_tokens = {(e.start, e.end) for e in new.ents}
    for r in rels:
        assert tuple(r["head"]) in ents_by_tokens and tuple(r["tail"]) in ents_by_tokens
    for old, moved in zip(doc.ents, new.ents):
        touched = any(s < old.end_char and e > old.start_char for s, e, _ in cut)
        if not touched:
            assert moved.text == old.text
