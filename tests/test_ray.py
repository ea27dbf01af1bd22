"""`medllm annotate --engine ray` on a local Ray instance the test starts (loopback only): the
same records in the same order as the local engine, with 1 and 2 actors, over several
windows, and the same `--resume` semantics."""
import json

import pytest
import srsly
from spacy.tokens import Span
from typer.testing import CliRunner

from spacy_medllm.cli import app

from test_annotate import TEXTS, model  # noqa: F401  (the tiny NER pipeline, saved)
from test_ner_trf import trained  # noqa: F401

ray = pytest.importorskip("ray", reason="the optional Ray engine: pip install spacy_medllm[ray]")

NOTES = [{"id": f"n{i}", "text": TEXTS[i % len(TEXTS)] + f" Note {i}."} for i in range(9)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def run(*args):
    return CliRunner().invoke(app, ["annotate", *map(str, args)])


@pytest.fixture(scope="module")
def corpus(model, tmp_path_factory):  # noqa: F811
    # a ConText attribute registered in this process (as importing medspaCy does) while the
    # pipeline runs no ConText: no engine writes it, whatever was imported where
    if not Span.has_extension("is_negated"):
        Span.set_extension("is_negated", default=False)
    path = tmp_path_factory.mktemp("ray")
    with (path / "notes.jsonl").open("w", encoding="utf8") as f:
        for i, note in enumerate(NOTES):
            f.write(json.dumps(note) + "\n")
            if i == 4:
                f.write("{broken\n")  # a corrupt record, line 6
    result = run(model, path / "notes.jsonl", path / "local.jsonl", "--with-text")
    assert result.exit_code == 0, result.output
    assert "is_negated" not in (path / "local.jsonl").read_text(encoding="utf8")
    return path


def test_ray_engine_writes_what_the_local_engine_writes(local_ray, model, corpus, tmp_path):  # noqa: F811
    expected = (corpus / "local.jsonl").read_text(encoding="utf8")
    assert [r["id"] for r in srsly.read_jsonl(corpus / "local.jsonl")] == [n["id"] for n in NOTES]
    for workers, window, batch in (("1", "10000", "32"), ("2", "5", "4")):
        out = tmp_path / f"ray_{workers}.jsonl"
        result = run(model, corpus / "notes.jsonl", out, "--with-text", "--engine", "ray", "--workers", workers,
                     "--window", window, "--batch-size", batch, "--summary", tmp_path / "summary.json")
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf8") == expected, (workers, window)
        assert "line 6" in result.output  # the corrupt record, reported and skipped
        summary = srsly.read_json(tmp_path / "summary.json")
        assert summary["engine"] == "ray" and summary["documents"] == len(NOTES)
        # one pool of `workers` actors per window of documents (9 documents: 1 or 2 windows)
        windows = -(-len(NOTES) // int(window))
        assert summary["workers"]["workers"] == int(workers) and 1 <= summary["workers"]["actors_started"] <= int(workers) * windows
        assert summary["workers"]["actor_peak_rss_mb"] > 100
        assert summary["skipped"] == [{"position": "line 6", "reason": summary["skipped"][0]["reason"]}]


def test_ray_engine_resumes(local_ray, model, corpus, tmp_path):  # noqa: F811
    expected = (corpus / "local.jsonl").read_text(encoding="utf8")
    lines = expected.splitlines(keepends=True)
    # an interrupted run: three records and a fourth cut short
    (tmp_path / "out.jsonl").write_text("".join(lines[:3]) + lines[3][:25], encoding="utf8")
    assert run(model, corpus / "notes.jsonl", tmp_path / "out.jsonl", "--engine", "ray").exit_code == 1  # no --resume, no --force
    result = run(model, corpus / "notes.jsonl", tmp_path / "out.jsonl", "--with-text", "--engine", "ray", "--workers", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.jsonl").read_text(encoding="utf8") == expected
    assert "(3 already there)" in result.output


def test_ray_engine_needs_a_loadable_model(local_ray, trained, tmp_path):  # noqa: F811
    from spacy_medllm.engines.ray import annotate

    srsly.write_jsonl(tmp_path / "in.jsonl", NOTES[:1])
    with pytest.raises(TypeError, match="E150"):
        annotate(trained, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="E151"):
        annotate("x", tmp_path / "in.jsonl", tmp_path / "out.jsonl", workers=0)
    # a pipeline no actor could load is refused before the output is touched
    (tmp_path / "out.jsonl").write_text("kept\n", encoding="utf8")
    with pytest.raises(FileNotFoundError, match="E152"):
        annotate("en_no_such_pipeline", tmp_path / "in.jsonl", tmp_path / "out.jsonl", force=True)
    assert (tmp_path / "out.jsonl").read_text(encoding="utf8") == "kept\n"
