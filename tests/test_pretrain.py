"""Domain-adaptive masked-LM pretraining on a tiny BERT: freezing, masking, resume, the CLI."""
import gzip
import json
import random

import numpy
import pytest
import srsly
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.pretrain import PretrainSettings, TextSource, pack_words, pretrain, read_texts, whole_word_mask
from spacy_medllm.pretrain.data import ExclusionFilter, is_heldout, tokenize_words

from conftest import WORDS

runner = CliRunner()


def _texts(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + "." for _ in range(n)]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "bio.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf8") as f:
        for i, t in enumerate(_texts(120)):
            f.write(json.dumps({"text": t, "id": str(i)}) + "\n")
    clinical = tmp_path / "notes.tsv"
    clinical.write_text("note_id\ttranscription\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(_texts(60, 1))), encoding="utf8")
    return [TextSource(path, "biomedical"), TextSource(clinical, "clinical", "transcription")]


def _settings(tiny_bert, **kw):
    base = dict(encoder=str(tiny_bert), freeze_layers=1, seq_len=32, batch_size=8, max_steps=4, head_steps=2,
                warmup_steps=1, eval_every=2, save_every=1, heldout_per_mille=100, heldout_max_docs=20, seed=0,
                learn_rate=1e-3)
    base.update(kw)
    return PretrainSettings(**base)


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_read_texts_formats_and_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": 3}\n', encoding="utf8")
    with pytest.raises(ValueError, match=r"a.jsonl, line 4: no string field 'text'"):
        list(read_texts(TextSource(p)))
    p.write_text('{"text": "one"}\nnot json\n', encoding="utf8")
    with pytest.raises(ValueError, match=r"a.jsonl, line 2: not JSON"):
        list(read_texts(TextSource(p)))
    c = tmp_path / "b.csv"
    c.write_text("id,body\n1,first note\n2,\n3,third\n", encoding="utf8")
    assert list(read_texts(TextSource(c, field="body"))) == ["first note", "third"]
    with pytest.raises(ValueError, match="column 'text' is missing"):
        list(read_texts(TextSource(c)))
    assert TextSource.parse(f"clinical={c}:body") == TextSource(c, "clinical", "body")
    assert TextSource.parse(str(c)) == TextSource(c, "biomedical", None)


def test_whole_word_masking_never_splits_a_word(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    docs = tokenize_words(tok, ["zqxv hypertension wxyz naloxone 12345 qqqq"] * 3)
    assert any(len(w) > 1 for w in docs[0])  # unknown words are split into several pieces
    packed = pack_words(docs, seq_len=64, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, pad_id=tok.pad_token_id)
    for seed in range(30):
        inputs, labels = whole_word_mask(packed.input_ids, packed.word_ids, numpy.random.default_rng(seed),
                                         mask_id=tok.mask_token_id, vocab_size=tok.vocab_size, prob=0.3)
        for r in range(len(packed)):
            for w in set(packed.word_ids[r].tolist()) - {-1}:
                chosen = labels[r][packed.word_ids[r] == w] != -100
                assert chosen.all() or not chosen.any()
                if chosen.all():
                    assert (labels[r][packed.word_ids[r] == w] == packed.input_ids[r][packed.word_ids[r] == w]).all()
            special = packed.word_ids[r] == -1
            assert (labels[r][special] == -100).all() and (inputs[r][special] == packed.input_ids[r][special]).all()


def test_masking_rates():
    rows, words = 200, 100
    word_ids = numpy.tile(numpy.arange(words), (rows, 1))
    ids = numpy.full((rows, words), 7)
    inputs, labels = whole_word_mask(ids, word_ids, numpy.random.default_rng(0), mask_id=3, vocab_size=50, n_special=5)
    chosen = labels != -100
    assert 0.14 < chosen.mean() < 0.16
    assert 0.78 < (inputs[chosen] == 3).mean() < 0.82
    assert 0.08 < (inputs[chosen] == 7).mean() < 0.12 + 1 / 45  # kept, or a random draw of the same id


def test_packing_keeps_words_whole():
    docs = [[[10, 11], [12], [13, 14, 15]], [[16], [17, 18]]]
    packed = pack_words(docs, seq_len=7, cls_id=1, sep_id=2, pad_id=0)
    assert packed.input_ids.tolist() == [[1, 10, 11, 12, 2, 0, 0], [1, 13, 14, 15, 2, 16, 2], [1, 17, 18, 2, 0, 0, 0]]
    assert packed.word_ids.tolist() == [[-1, 0, 0, 1, -1, -1, -1], [-1, 0, 0, 0, -1, 1, -1], [-1, 0, 0, -1, -1, -1, -1]]


def test_heldout_slice_and_exclusion_are_fixed():
    texts = _texts(400)
    held = [t for t in texts if is_heldout(t, 100)]
    assert held == [t for t in reversed(texts) if is_heldout(t, 100)][::-1]
    assert 0 < len(held) < 80
    run = " ".join(WORDS[:12])
    flt = ExclusionFilter([f"Dev text: {run.upper()}!"])
    assert flt(f"prefix, {run.replace(' ', '  ')} suffix") and not flt(" ".join(WORDS[:11]))


def test_pretrain_freezes_lower_layers_and_resumes(tiny_bert, corpus, tmp_path):
    out = tmp_path / "run"
    metrics = pretrain(out, corpus, settings=_settings(tiny_bert), progress=False)
    original, adapted = _weights(tiny_bert), _weights(out / "model")
    frozen = [k for k in original if k.startswith("embeddings.") or k.startswith("encoder.layer.0.")]
    trained = [k for k in original if k.startswith("encoder.layer.1.")]
    assert frozen and trained
    for k in frozen:
        assert numpy.array_equal(original[k], adapted[k]), k
    assert all(not numpy.array_equal(original[k], adapted[k]) for k in trained if k.endswith("weight"))
    assert set(metrics["before"]) == set(metrics["after"]) == {"biomedical", "clinical"}
    assert metrics["curve"][0]["step"] == 2 and metrics["curve"][-1]["step"] == 6
    assert metrics["tokens_seen"] > 0 and srsly.read_json(out / "metrics.json")["tokens_seen"] == metrics["tokens_seen"]
    assert metrics["after"]["biomedical"]["loss"] < metrics["before"]["biomedical"]["loss"]
    # the adapted encoder loads where the configs expect an encoder
    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(out / "model")).config.num_hidden_layers == 2
    # a second run into the same folder is refused without --resume
    with pytest.raises(ValueError, match="already holds a pretraining checkpoint"):
        pretrain(out, corpus, settings=_settings(tiny_bert), progress=False)

    # a run given more steps on resume continues from its last step
    part = tmp_path / "part"
    pretrain(part, corpus, settings=_settings(tiny_bert, max_steps=1), progress=False)
    assert srsly.read_json(part / "checkpoint" / "state.json")["step"] == 3
    longer = pretrain(part, corpus, settings=_settings(tiny_bert, max_steps=4, freeze_layers=0), resume=True, progress=False)
    assert longer["curve"][-1]["step"] == 6 and longer["settings"]["max_steps"] == 4
    assert longer["settings"]["freeze_layers"] == 1  # the checkpoint's


def test_resume_continues_from_the_saved_step(tiny_bert, corpus, tmp_path, monkeypatch):
    from spacy_medllm.pretrain.mlm import Pretrainer

    full = pretrain(tmp_path / "full", corpus, settings=_settings(tiny_bert), progress=False)
    save = Pretrainer.save_checkpoint

    def killed_after_step_4(self, model, optimizer, scheduler, state):
        save(self, model, optimizer, scheduler, state)
        if state["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(Pretrainer, "save_checkpoint", killed_after_step_4)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        pretrain(part, corpus, settings=_settings(tiny_bert), progress=False)
    monkeypatch.setattr(Pretrainer, "save_checkpoint", save)
    assert srsly.read_json(part / "checkpoint" / "state.json")["step"] == 4
    assert not (part / "model").exists()
    again = pretrain(part, corpus, settings=_settings(tiny_bert), resume=True, progress=False)
    assert [c["step"] for c in again["curve"]] == [c["step"] for c in full["curve"]] == [2, 4, 6]
    assert again["after"] == full["after"] and again["before"] == full["before"]
    a, b = _weights(tmp_path / "full" / "model"), _weights(part / "model")
    assert sorted(a) == sorted(b) and all(numpy.array_equal(a[k], b[k]) for k in a)


def test_cli_pretrain(tiny_bert, corpus, tmp_path):
    out = tmp_path / "cli"
    args = ["pretrain", str(out), "--text", f"biomedical={corpus[0].path}", "--text", f"clinical={corpus[1].path}:transcription",
            "--encoder", str(tiny_bert), "--freeze-layers", "2", "--max-steps", "2", "--head-steps", "1",
            "--batch-size", "8", "--seq-len", "32", "--eval-every", "1", "--save-every", "1", "--snapshots",
            "--heldout-per-mille", "100"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-1", "step-2"]
    assert (out / "snapshots" / "step-2" / "model.safetensors").exists() and (out / "snapshots" / "step-2" / "vocab.txt").exists()
    assert "biomedical: held-out perplexity" in result.output and "clinical: held-out perplexity" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "already holds a pretraining checkpoint" in result.output
    result = runner.invoke(app, ["pretrain", str(tmp_path / "deep")] + args[2:] + ["--freeze-layers", "3"])
    assert result.exit_code == 1 and "cannot freeze 3 layers of an encoder with 2" in result.output
    result = runner.invoke(app, ["pretrain", str(tmp_path / "x"), "--text", str(tmp_path / "missing.jsonl"), "--encoder", str(tiny_bert)])
    assert result.exit_code == 1 and "file not found" in result.output


def test_prepare_only_then_pretrain_from_a_bundle_without_spacy(tiny_bert, corpus, tmp_path):
    """--prepare-only packs the text; scripts/pretrain_bundle.py carries it (uint16 ids, word-start
    bits, an fp16 encoder) to a process where spaCy cannot be imported, trains there, and merge
    puts the trained blocks into the original fp32 encoder: frozen weights bit for bit."""
    import subprocess
    import sys
    from pathlib import Path

    from spacy_medllm.pretrain import PackedText

    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "prep"
    result = runner.invoke(app, ["pretrain", str(run_dir), "--text", f"biomedical={corpus[0].path}",
                                 "--text", f"clinical={corpus[1].path}:transcription", "--encoder", str(tiny_bert),
                                 "--seq-len", "32", "--heldout-per-mille", "100", "--prepare-only"])
    assert result.exit_code == 0, result.output
    assert "training rows" in result.output and not (run_dir / "model").exists()
    script = str(root / "scripts" / "pretrain_bundle.py")
    bundle = tmp_path / "bundle"
    subprocess.run([sys.executable, script, "pack", str(run_dir), str(bundle), "--encoder", str(tiny_bert), "--half"], check=True)
    # the compact rows read back exactly
    sys.path.insert(0, str(root / "scripts"))
    try:
        import pretrain_bundle
    finally:
        sys.path.remove(str(root / "scripts"))
    meta = json.loads((bundle / "bundle.json").read_text())
    original = PackedText.load(run_dir / "data" / "train")
    back = pretrain_bundle.load_packed(PackedText, bundle, "train", meta["parts"]["train"]["shape"])
    assert numpy.array_equal(original.input_ids, back.input_ids) and numpy.array_equal(original.word_ids, back.word_ids)
    # train where spaCy is not importable
    code = ("import sys; sys.modules['spacy'] = None; sys.argv = sys.argv[1:]; "
            "import runpy; runpy.run_path(sys.argv[0], run_name='__main__')")
    out, export = tmp_path / "out", tmp_path / "export"
    done = subprocess.run([sys.executable, "-c", code, script, "run", str(bundle), str(out), "--freeze-layers", "1",
                           "--batch-size", "8", "--head-steps", "1", "--max-steps", "3", "--evals", "3", "--learn-rate", "1e-3",
                           "--export", str(export)], capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out perplexity" in done.stdout
    assert sorted(p.name for p in export.iterdir()) == ["f1_layers_1-1.safetensors", "metrics_f1.json"]
    metrics = json.loads((export / "metrics_f1.json").read_text())
    assert metrics["settings"]["max_steps"] == 3 and metrics["tokens_seen"] > 0
    model = tmp_path / "merged" / "model"
    subprocess.run([sys.executable, script, "merge", str(export), "1", str(model), "--encoder", str(tiny_bert)], check=True)
    before, after = _weights(tiny_bert), _weights(model)
    assert sorted(before) == sorted(after)
    for k in before:
        changed = not numpy.array_equal(before[k], after[k])
        if not k.startswith("encoder.layer.1."):
            assert not changed, k  # embeddings, block 0, pooler: the original fp32, not the fp16 copy
        elif k.endswith("weight"):
            assert changed, k
    assert (tmp_path / "merged" / "metrics.json").exists()
    # a shard of another depth is refused
    bad = subprocess.run([sys.executable, script, "merge", str(export), "0", str(tmp_path / "m2"), "--encoder", str(tiny_bert)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no f0_layers_" in bad.stderr
