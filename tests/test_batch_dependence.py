"""scripts/batch_dependence.py: a pipeline's entities batched against one text at a time."""
import subprocess
import sys
from pathlib import Path

import pytest
import srsly
from spacy.tokens import DocBin

from test_ner_trf import TRAIN, trained  # noqa: F401  (the tiny transformer NER fixture)

SCRIPT = Path(__file__).parent.parent / "scripts" / "batch_dependence.py"


@pytest.fixture(scope="module")
def pipeline(trained, tmp_path_factory):  # noqa: F811
    path = tmp_path_factory.mktemp("batches") / "model"
    trained.to_disk(path)
    return path


def test_batch_dependence_counts_entities_and_outputs(pipeline, trained, tmp_path):  # noqa: F811
    texts = [t for t, _ in TRAIN] + ["Cisplatin induced seizures.", "Lithium."]
    data = tmp_path / "texts.spacy"
    DocBin(docs=[trained.make_doc(t) for t in texts]).to_disk(data)
    out = tmp_path / "m" / "batches.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(pipeline), "--data", str(data), "--limit", "4", "--batch-size", "3",
                          "--output", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    result = srsly.read_json(out)["results"][0]
    assert result["documents"] == 4 and result["batch_size"] == 3 and result["components"] == ["transformer", "ner"]
    # the tiny NER finds its training entities, alike in both runs
    assert result["entities_batched"] == sum(len(trained(t).ents) for t in texts[:4]) > 0
    assert result["entities_differing"] == 0 and result["documents_whose_entities_differ"] == 0
    assert result["windows"] >= 4 and result["windows_differing"] == 0
    assert "entities differing 0 in 0 documents" in run.stdout


def test_batch_dependence_refuses_a_folder_that_is_not_a_pipeline(tmp_path):
    data = tmp_path / "none.spacy"
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--data", str(data)], capture_output=True, text=True)
    assert run.returncode != 0 and f"{tmp_path}: not a pipeline folder (no config.cfg)" in run.stderr
