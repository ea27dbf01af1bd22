"""`medllm annotate`: every input format with its ids, corrupt records skipped or stopping
the run, outputs never overwritten by accident, and a run killed halfway that resumes into
exactly the output of an uninterrupted run."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import Span
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.engines.records import doc_record, read_records

from test_ner_trf import trained  # noqa: F401  (the tiny transformer NER fixture)

TEXTS = ["Cisplatin induced acute renal failure in rats.", "Lithium toxicity caused seizures and fever.", "Propofol blunted the pressor responses."]


@pytest.fixture(scope="module")
def model(trained, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("annotate") / "model"
    trained.to_disk(path)
    return path


def run(*args):
    return CliRunner().invoke(app, ["annotate", *map(str, args)])


def read(path):
    return list(srsly.read_jsonl(path))


def test_formats_and_ids(tmp_path):
    (tmp_path / "lines.txt").write_text(TEXTS[0] + "\n\n" + TEXTS[1] + "\n", encoding="utf8")
    assert list(read_records(tmp_path / "lines.txt")) == [("line 1", TEXTS[0]), ("line 3", TEXTS[1])]
    assert list(read_records(tmp_path / "lines.txt", unit="file")) == [("lines.txt", TEXTS[0] + "\n\n" + TEXTS[1] + "\n")]
    (tmp_path / "notes" / "a").mkdir(parents=True)
    (tmp_path / "notes" / "a" / "x.txt").write_text(TEXTS[0], encoding="utf8")
    (tmp_path / "notes" / "y.txt").write_text(TEXTS[1], encoding="utf8")
    assert list(read_records(tmp_path / "notes")) == [("a/x.txt", TEXTS[0]), ("y.txt", TEXTS[1])]
    srsly.write_jsonl(tmp_path / "in.jsonl", [{"id": 7, "text": TEXTS[0]}, {"text": TEXTS[1]}, {"id": "n3", "body": TEXTS[2]}])
    records = list(read_records(tmp_path / "in.jsonl"))
    assert records[:2] == [("7", TEXTS[0]), ("line 2", TEXTS[1])]
    assert "line 3" in str(records[2]) and "'text' field" in str(records[2])  # a CorruptRecord
    assert [r[0] for r in read_records(tmp_path / "in.jsonl", field="body", id_field="id") if isinstance(r, tuple)] == ["n3"]
    (tmp_path / "in.csv").write_text('note_id,note\n1,"%s"\n2,"%s"\n' % (TEXTS[0], TEXTS[1]), encoding="utf8")
    assert list(read_records(tmp_path / "in.csv", column="note", id_column="note_id")) == [("1", TEXTS[0]), ("2", TEXTS[1])]
    with pytest.raises(ValueError, match="E067.*'nope'.*--id-column"):
        list(read_records(tmp_path / "in.csv", column="note", id_column="nope"))
    with gzip.open(tmp_path / "NOTEEVENTS.csv.gz", "wt", encoding="utf8") as f:
        f.write('"ROW_ID","SUBJECT_ID","CATEGORY","TEXT"\n11,1,"Discharge summary","%s"\n12,1,"Nursing","%s"\n' % (TEXTS[0], TEXTS[2]))
    assert list(read_records(tmp_path / "NOTEEVENTS.csv.gz")) == [("11", TEXTS[0]), ("12", TEXTS[2])]


def test_corrupt_records(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(
        (json.dumps({"id": "a", "text": TEXTS[0]}) + "\n{not json\n" + json.dumps({"id": "c", "text": "  "}) + "\n").encode()
        + b'{"id": "d", "text": "caf\xff"}\n' + (json.dumps({"id": "e", "text": TEXTS[1]}) + "\n").encode()
    )
    records = list(read_records(tmp_path / "in.jsonl"))
    assert [r[0] for r in records if isinstance(r, tuple)] == ["a", "e"]
    reasons = [(r.position, r.reason) for r in records if not isinstance(r, tuple)]
    assert [p for p, _ in reasons] == ["line 2", "line 3", "line 4"]
    assert "not JSON" in reasons[0][1] and "empty" in reasons[1][1] and "UTF-8" in reasons[2][1]


def test_annotate_writes_records_and_refuses_overwrites(model, tmp_path):
    srsly.write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": TEXTS[0]}, {"id": "b", "text": "{bad"}, {"id": "c", "text": TEXTS[1]}])
    with (tmp_path / "in.jsonl").open("a") as f:
        f.write("{not json\n")
    result = run(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--summary", tmp_path / "summary.json")
    assert result.exit_code == 0, result.output
    out = read(tmp_path / "out.jsonl")
    assert [o["id"] for o in out] == ["a", "b", "c"]
    assert [(e["start"], e["end"], e["label"]) for e in out[0]["entities"]] == [(0, 9, "Chemical"), (18, 37, "Disease")]
    summary = srsly.read_json(tmp_path / "summary.json")
    assert summary["documents"] == 3 and summary["skipped"][0]["position"] == "line 4" and "not JSON" in result.output
    again = run(model, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert again.exit_code == 1 and "--resume" in again.output and "--force" in again.output
    assert read(tmp_path / "out.jsonl") == out
    stop = run(model, tmp_path / "in.jsonl", tmp_path / "stopped.jsonl", "--on-error", "stop")
    assert stop.exit_code == 1 and "line 4" in stop.output
    assert [o["id"] for o in read(tmp_path / "stopped.jsonl")] == ["a", "b", "c"]  # what was done is kept
    into_input = run(model, tmp_path / "in.jsonl", tmp_path / "in.jsonl", "--force")
    assert into_input.exit_code == 1 and "E064" in into_input.output


def test_loaded_pipeline_drops_tensors_with_the_same_records(model):
    """The pipeline annotate loads itself gets spaCy's doc_cleaner last (once): the documents
    leave without their encoder outputs, and their records are what they were."""
    from spacy_medllm.engines.records import CLEANER, free_tensors

    nlp = spacy.load(model)
    before = [doc_record(str(i), doc) for i, doc in enumerate(nlp.pipe(TEXTS))]
    assert nlp.pipe_names[-1] != CLEANER and nlp(TEXTS[0])._.trf_data is not None
    assert free_tensors(free_tensors(nlp)) is nlp and nlp.pipe_names.count(CLEANER) == 1
    docs = list(nlp.pipe(TEXTS))
    assert all(doc._.trf_data is None and doc.tensor is None for doc in docs)
    assert [doc_record(str(i), doc) for i, doc in enumerate(docs)] == before


def test_doc_record_of_the_whole_pipeline():
    from spacy_medllm.tokens import install_extensions, relation

    install_extensions()
    nlp = spacy.blank("en")
    doc = nlp("Naloxone induced hypotension .")
    doc.ents = [Span(doc, 0, 1, label="Chemical", kb_id="D009270"), Span(doc, 2, 3, label="Disease", kb_id="D007022")]
    doc.ents[0]._.kb_candidates = [["D009270", 0.9], ["D003000", 0.05]]
    doc.ents[0]._.kb_concept = {"id": "D009270", "name": "Naloxone", "types": ["Chemical"], "definition": None}
    doc._.medllm_rels = [relation("CID", doc.ents[0], doc.ents[1], score=0.8), relation("CID", head_id="D009270", tail_id="D007022", score=0.7)]
    doc.cats = {"ADE": 0.25}
    rec = doc_record("x", doc, context=False)  # ConText did not run: no ConText attributes, whatever is registered
    assert rec["entities"][0] == {"text": "Naloxone", "label": "Chemical", "start": 0, "end": 8, "kb_id": "D009270", "kb_name": "Naloxone",
                                  "candidates": [["D009270", 0.9], ["D003000", 0.05]]}
    assert rec["relations"] == [{"label": "CID", "score": 0.8, "head_id": "D009270", "tail_id": "D007022", "head": 0, "tail": 1},
                                {"label": "CID", "score": 0.7, "head_id": "D009270", "tail_id": "D007022", "head": None, "tail": None}]
    assert rec["categories"] == {"ADE": 0.25}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_halfway_resumes_to_the_same_output(model, tmp_path, sig):
    n = 1500
    lines = [f"{TEXTS[i % 3]} Case {i} ." for i in range(n)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf8")
    assert run(model, tmp_path / "in.txt", tmp_path / "whole.jsonl", "--batch-size", "4").exit_code == 0
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "spacy_medllm", "annotate", str(model), str(tmp_path / "in.txt"), str(out), "--batch-size", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.stat().st_size and out.read_bytes().count(b"\n") >= n // 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    written = out.read_bytes().count(b"\n")
    assert n // 4 <= written < n
    resumed = run(model, tmp_path / "in.txt", out, "--resume", "--batch-size", "4")
    assert resumed.exit_code == 0, resumed.output
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
