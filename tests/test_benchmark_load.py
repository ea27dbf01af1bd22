"""scripts/benchmark_load.py: fresh processes that import spaCy and load a pipeline; the
medians, each component's own share and the stock spacy-transformers floor come back."""
import subprocess
import sys
from pathlib import Path

import pytest
import srsly

from test_ner_trf import trained  # noqa: F401  (the tiny transformer NER fixture)

SCRIPT = Path(__file__).parent.parent / "scripts" / "benchmark_load.py"


@pytest.fixture(scope="module")
def pipeline(trained, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("load") / "model"
    trained.to_disk(path)
    return path


def test_benchmark_load_times_fresh_processes_and_the_floor(pipeline, tiny_bert, tmp_path):
    out = tmp_path / "metrics"
    run = subprocess.run([sys.executable, str(SCRIPT), str(pipeline), "--bare-encoder", str(tiny_bert), "--runs", "1", "--output", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    data = srsly.read_json(out / "load.json")
    bare = str(out / "bare_transformer")
    assert set(data["pipelines"]) == {str(pipeline), bare}
    ours = data["pipelines"][str(pipeline)]
    assert 0 < ours["import_s"]["median"] and 0 < ours["load_s"]["min"] <= ours["load_s"]["median"] <= ours["load_s"]["max"]
    assert {"transformer", "ner", "tokenizer", "vocab"} <= set(ours["components_s"])
    assert set(data["pipelines"][bare]["components_s"]) == {"transformer", "tokenizer", "vocab"}
    assert ours["peak_rss_mb"]["median"] > 50
    table = (out / "load.md").read_text(encoding="utf8")
    assert str(pipeline) in table and "bare_transformer" in table


def test_benchmark_load_refuses_a_folder_that_is_not_a_pipeline(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--runs", "1", "--output", str(tmp_path / "m")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and f"{tmp_path}: not a pipeline folder (no config.cfg)" in run.stderr
    assert not (tmp_path / "m").exists()
