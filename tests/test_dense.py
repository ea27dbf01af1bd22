"""The dense name encoder (SapBERT-style training on KB synonyms), the dense index, the merged
TF-IDF + dense candidates, and their round trip through a saved pipeline."""
import shutil
from pathlib import Path

import numpy
import pytest
import spacy
import srsly
from spacy.training import Example
from thinc.api import Adam, fix_random_seed
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.kb import CandidateGenerator, Concept, KnowledgeBase
from spacy_medllm.kb.dense import (DenseIndex, NameEncoder, NameEncoderSettings, NameEncoderTrainer, supcon_loss,
                                   synonym_retrieval, synonym_sets)

CONCEPTS = [
    Concept("D009270", "naloxone", ["narcan", "naloxone hydrochloride"], ["Chemical"]),
    Concept("D003000", "clonidine", ["catapres", "clonidine hcl"], ["Chemical"]),
    Concept("D006973", "hypertension", ["high blood pressure", "hypertensive disease"], ["Disease"]),
    Concept("D007022", "hypotension", ["low blood pressure", "hypotensive"], ["Disease"]),
    Concept("D051437", "renal failure", ["kidney failure", "renal insufficiency"], ["Disease"]),
    Concept("D056486", "liver toxicity", ["hepatotoxicity", "liver injury"], ["Disease"]),
    Concept("D008094", "lithium", ["lithium carbonate", "li"], ["Chemical"]),
    Concept("D002945", "cisplatin", ["cis-platinum", "platinol"], ["Chemical"]),
    Concept("D012640", "seizures", ["convulsions", "fits"], ["Disease"]),
    Concept("D005334", "fever", ["pyrexia", "high temperature"], ["Disease"]),
    Concept("D006333", "heart failure", ["cardiac failure"], ["Disease"]),
    Concept("D010146", "pain", ["ache"], ["Disease"]),
]


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase(CONCEPTS)


@pytest.fixture
def kb_dir(kb, tmp_path):
    """The KB as `medllm build-kb` writes it: kb.msgpack and its TF-IDF index."""
    path = tmp_path / "kb"
    kb.to_disk(path)
    CandidateGenerator(kb).to_disk(path / "index")
    return path


def settings(tiny_bert, **kw):
    base = dict(encoder=str(tiny_bert), steps=60, batch_concepts=4, learn_rate=2e-3, warmup_steps=5, heldout_concepts=0,
                save_every=10, eval_every=1000, log_every=10, temperature=0.1)
    base.update(kw)
    return NameEncoderSettings(**base)


@pytest.fixture(scope="module")
def trained(tiny_bert, kb, tmp_path_factory):
    out = tmp_path_factory.mktemp("name_encoder")
    metrics = NameEncoderTrainer(out, settings(tiny_bert), progress=False).run(kb)
    return out, metrics


def test_supcon_loss_prefers_grouped_synonyms():
    import torch

    labels = torch.tensor([0, 0, 1, 1])
    grouped = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=-1)
    mixed = grouped[[0, 2, 1, 3]]
    assert float(supcon_loss(grouped, labels, 0.1)) < float(supcon_loss(mixed, labels, 0.1))


def test_training_pulls_synonyms_together(trained, tiny_bert, kb):
    out, metrics = trained
    losses = [p["loss"] for p in metrics["curve"]]
    assert metrics["steps_done"] == 60 and metrics["finished"]
    assert losses[-1] < losses[0]
    _, sets = synonym_sets(kb)
    before = synonym_retrieval(NameEncoder(tiny_bert), sets)
    after = synonym_retrieval(NameEncoder(out / "model"), sets)
    gap = lambda r: r["synonym_cosine"] - r["other_cosine"]  # noqa: E731
    assert gap(after) > gap(before)
    assert after["recall_at_1"] > before["recall_at_1"]
    saved = srsly.read_json(out / "model" / "name_encoder.json")
    assert saved == {"pooling": "mean", "max_length": 24}
    assert list((out / "model").glob("*.safetensors")) and not list((out / "model").glob("*.bin"))


def test_resume_reproduces_the_uninterrupted_run(tiny_bert, kb, tmp_path, trained, monkeypatch):
    import torch

    full, _ = trained
    cut = tmp_path / "cut"
    trainer = NameEncoderTrainer(cut, settings(tiny_bert), progress=False)
    original = NameEncoderTrainer.save_checkpoint

    def interrupt(self, encoder, optimizer, scheduler, state):
        original(self, encoder, optimizer, scheduler, state)
        if state["step"] == 30:
            raise KeyboardInterrupt

    monkeypatch.setattr(NameEncoderTrainer, "save_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(kb)
    monkeypatch.setattr(NameEncoderTrainer, "save_checkpoint", original)
    with pytest.raises(ValueError, match="E156"):
        NameEncoderTrainer(cut, settings(tiny_bert), progress=False).run(kb)
    metrics = NameEncoderTrainer(cut, settings(tiny_bert), progress=False).run(kb, resume=True)
    assert metrics["steps_done"] == 60
    a = NameEncoder(full / "model").model.state_dict()
    b = NameEncoder(cut / "model").model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_too_few_synonym_sets(tiny_bert, tmp_path):
    kb = KnowledgeBase([Concept("D1", "one"), Concept("D2", "two", ["deux"])])
    with pytest.raises(ValueError, match="E155"):
        NameEncoderTrainer(tmp_path, settings(tiny_bert), progress=False).run(kb)


@pytest.mark.parametrize("kind", ["numpy", "Flat", "SQ8", "IVF2,Flat"])
def test_dense_index_exact_kinds_agree_and_round_trip(trained, kb, kind, tmp_path):
    encoder = NameEncoder(trained[0] / "model")
    exact = DenseIndex.build(kb, encoder, kind="numpy", progress=False)
    index = DenseIndex.build(kb, encoder, kind=kind, progress=False, nprobe=2)
    queries = ["kidney failure", "narcan", "convulsions"]
    got, want = index.search(queries, k=3), exact.search(queries, k=3)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        assert numpy.allclose(list(g.values()), list(w.values()), atol=0.02)
    index.to_disk(tmp_path / "dense")
    loaded = DenseIndex.from_disk(tmp_path / "dense", kb)
    assert loaded.kind == kind and len(loaded) == len(index)
    assert loaded.search(queries, k=3) == index.search(queries, k=3)


def test_dense_index_refuses_damage_and_other_kbs(trained, kb, tmp_path):
    encoder = NameEncoder(trained[0] / "model")
    DenseIndex.build(kb, encoder, kind="numpy", progress=False).to_disk(tmp_path / "np")
    other = KnowledgeBase(CONCEPTS[:-1])
    with pytest.raises(ValueError, match="E052"):
        DenseIndex.from_disk(tmp_path / "np", other)
    numpy.save(tmp_path / "np" / "vectors.npy", numpy.zeros((3, 2), dtype=numpy.float16))
    with pytest.raises(ValueError, match="E051.*vectors.npy"):
        DenseIndex.from_disk(tmp_path / "np", kb)
    DenseIndex.build(kb, encoder, kind="SQ8", progress=False).to_disk(tmp_path / "sq")
    (tmp_path / "sq" / "vectors.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="E051.*vectors.faiss"):
        DenseIndex.from_disk(tmp_path / "sq", kb)
    with pytest.raises(ValueError, match="E154"):
        DenseIndex.build(kb, encoder, kind="NoSuchIndex42", progress=False)


def test_merged_candidates_union_and_exact_scores(trained, kb):
    encoder = NameEncoder(trained[0] / "model")
    dense = DenseIndex.build(kb, encoder, kind="numpy", progress=False)
    plain = CandidateGenerator(kb)
    merged = CandidateGenerator(kb, dense=dense, alpha=0.5)
    mentions = ["renal failures", "pyrexia", "xq"]
    for cands in merged.detailed(mentions, k=5):
        assert len(cands) <= 5
        for cid, score, tfidf, dense_score in cands:
            if score < 1.0:
                assert score == pytest.approx(0.5 * tfidf + 0.5 * dense_score, abs=2e-4)
    # the dense score of a concept equals its best name's cosine, whichever search found it
    names = {c.concept_id: c.names for c in kb}
    q = encoder.encode(["renal failures"])[0]
    for cid, _, _, d in merged.detailed(["renal failures"], k=5)[0]:
        best = max(float(encoder.encode([n.lower()])[0] @ q) for n in names[cid])
        assert d == pytest.approx(min(best, 0.9999), abs=1e-3)
    # exact names still come first; alpha 1 ranks as TF-IDF alone does, dense adds candidates below
    assert merged(["Pyrexia"], k=3)[0][0] == ("D005334", 1.0)
    merged.alpha = 1.0
    top_plain = [c for c, _ in plain(["renal failures"], k=3)[0]]
    assert [c for c, _ in merged(["renal failures"], k=3)[0]] == top_plain
    # a mention sharing no 3-gram with any name still gets dense candidates
    assert plain(["xq"], k=3) == [[]] and len(merged(["xq"], k=3)[0]) == 3
    with pytest.raises(ValueError, match="E154"):
        CandidateGenerator(kb, alpha=1.5)


def test_merged_candidates_match_a_brute_force_search(trained, kb):
    """Each mention's candidates: the exact matches, the k concepts with the best TF-IDF name
    cosine and the k with the best dense name cosine, each scored by its best name in both,
    ranked by merged score then id (computed here concept by concept, over every name)."""
    from spacy_medllm.kb.knowledge_base import normalize_alias

    encoder = NameEncoder(trained[0] / "model")
    dense = DenseIndex.build(kb, encoder, kind="numpy", progress=False)
    merged = CandidateGenerator(kb, dense=dense, alpha=0.3)
    mentions = ["renal failures", "Pyrexia", "xq", "low blood pressures", "clonidine hcl tablets", "lithium", "heart"]
    k = 3
    names = [(c.concept_id, normalize_alias(n)) for c in kb for n in c.names]
    name_vectors = dense.name_vectors(numpy.arange(len(names)))
    for mention, got in zip(mentions, merged.detailed(mentions, k=k)):
        key = normalize_alias(mention)
        t_sims = (merged.vectorizer.transform([key]) @ merged.matrix.T).toarray()[0]
        d_sims = name_vectors @ encoder.encode([key])[0]
        t_best, d_best = {}, {}
        for (cid, _), t, d in zip(names, t_sims, d_sims):
            t_best[cid] = max(t_best.get(cid, -1.0), float(t))
            d_best[cid] = max(d_best.get(cid, -1.0), float(d))
        by_t = [c for c, v in sorted(t_best.items(), key=lambda x: -x[1]) if v > 0][:k]
        by_d = sorted(d_best, key=lambda c: -d_best[c])[:k]
        exact = set(kb.lookup(mention))
        expected = []
        for cid in set(by_t) | set(by_d) | exact:
            t, d = min(max(t_best[cid], 0.0), 0.9999), min(max(d_best[cid], 0.0), 0.9999)
            score = 1.0 if cid in exact else round(min(0.3 * t + 0.7 * d, 0.9999), 4)
            expected.append((cid, score, round(t, 4), round(d, 4)))
        expected = sorted(expected, key=lambda x: (-x[1], x[0]))[:k]
        assert [c[0] for c in got] == [c[0] for c in expected], mention
        for g, e in zip(got, expected):
            assert g[1:] == pytest.approx(e[1:], abs=2e-4)
    # searched two texts at a time: the same lists
    whole = merged.detailed(mentions, k=k)
    merged._cache.clear()
    assert merged.detailed(mentions, k=k, chunk_size=2) == whole


def test_generator_with_dense_round_trip(trained, kb, tmp_path):
    dense = DenseIndex.build(kb, NameEncoder(trained[0] / "model"), kind="SQ8", progress=False)
    gen = CandidateGenerator(kb, dense=dense, alpha=0.3)
    gen.to_disk(tmp_path / "index")
    loaded = CandidateGenerator.from_disk(tmp_path / "index", kb)
    assert loaded.alpha == 0.3 and loaded.dense.kind == "SQ8"
    assert loaded.detailed(["kidney failure", "ache"], k=4) == gen.detailed(["kidney failure", "ache"], k=4)


def test_linker_with_dense_candidates_through_nlp_to_disk(trained, kb, tmp_path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker", config={"features": {"@misc": "spacy_medllm.linker_features.v1",
                                                                 "features": ["score", "exact", "tfidf", "dense", "dense_gap", "nil"]}})
    dense = DenseIndex.build(kb, NameEncoder(trained[0] / "model"), kind="numpy", progress=False)
    linker.set_kb(kb, CandidateGenerator(kb, dense=dense, alpha=0.5))
    texts = [("Narcan reversed the hypotensive state .", [(0, 6, "Chemical", "D009270"), (20, 31, "Disease", "D007022")]),
             ("Kidney failure and pyrexia followed .", [(0, 14, "Disease", "D051437"), (19, 26, "Disease", "D005334")])]
    examples = []
    for text, ents in texts:
        doc = nlp.make_doc(text)
        gold = nlp.make_doc(text)
        gold.ents = [gold.char_span(s, e, label=l, kb_id=k) for s, e, l, k in ents]
        examples.append(Example(doc, gold))
    nlp.initialize(lambda: examples)
    opt = Adam(0.01)
    for _ in range(30):
        nlp.update(examples, sgd=opt, losses={})

    def links(pipeline):
        out = []
        for text, ents in texts:
            doc = pipeline.make_doc(text)
            doc.ents = [doc.char_span(s, e, label=l) for s, e, l, _ in ents]
            doc = pipeline(doc)
            out.append([(e.kb_id_, e._.kb_candidates) for e in doc.ents])
        return out

    before = links(nlp)
    nlp.to_disk(tmp_path / "nlp")
    assert (tmp_path / "nlp" / "medllm_linker" / "index" / "dense" / "vectors.npy").exists()
    loaded = spacy.load(tmp_path / "nlp")
    assert loaded.get_pipe("medllm_linker").generator.dense is not None
    assert links(loaded) == before
    assert [k for doc in before for k, _ in doc] == ["D009270", "D007022", "D051437", "D005334"]


def test_build_dense_index_cli(trained, kb, kb_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "kb_dense"
    args = ["build-dense-index", str(kb_dir), str(out), "--encoder", str(trained[0] / "model"), "--kind", "numpy", "--alpha", "0.4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    gen = CandidateGenerator.from_disk(out / "index", KnowledgeBase.from_disk(out))
    assert gen.alpha == 0.4 and len(gen.dense) == sum(len(c.names) for c in kb)
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--force" in again.output
    same = runner.invoke(app, ["build-dense-index", str(kb_dir), str(kb_dir), "--encoder", str(trained[0] / "model")])
    assert same.exit_code == 1 and "input" in same.output
    result = runner.invoke(app, ["evaluate-candidates", str(out), "--data", f"x={tmp_path / 'missing.spacy'}"])
    assert result.exit_code != 0


def test_build_dense_index_reuses_vectors(trained, kb, kb_dir, tmp_path):
    runner = CliRunner()
    exact = tmp_path / "exact"
    assert runner.invoke(app, ["build-dense-index", str(kb_dir), str(exact), "--encoder", str(trained[0] / "model"), "--kind", "numpy"]).exit_code == 0
    sq8 = tmp_path / "sq8"
    result = runner.invoke(app, ["build-dense-index", str(kb_dir), str(sq8), "--vectors-from", str(exact), "--kind", "SQ8"])
    assert result.exit_code == 0, result.output
    a = CandidateGenerator.from_disk(exact / "index", kb)
    b = CandidateGenerator.from_disk(sq8 / "index", kb)
    assert b.dense.kind == "SQ8"
    assert [c for c, _ in a(["kidney failure"], k=3)[0]] == [c for c, _ in b(["kidney failure"], k=3)[0]]
    both = runner.invoke(app, ["build-dense-index", str(kb_dir), str(tmp_path / "x"), "--vectors-from", str(exact), "--encoder", "y"])
    assert both.exit_code == 1 and "not both" in both.output


def test_query_cache_gives_the_encoder_vectors_and_stays_bounded(trained, kb):
    encoder = NameEncoder(trained[0] / "model")
    index = DenseIndex.build(kb, encoder, kind="numpy", progress=False)
    index.cache_size = 3
    keys = ["narcan", "kidney failure", "fits", "ache"]
    first = index.encode_queries(keys)
    assert len(index._cache) == 3 and "narcan" not in index._cache
    again = index.encode_queries(keys[::-1])
    assert numpy.allclose(again[::-1], first, atol=1e-6)
    assert numpy.allclose(first, encoder.encode(keys), atol=1e-6)
    gen = CandidateGenerator(kb, dense=index)
    assert gen(["Kidney Failure"], k=2) == gen(["kidney failure"], k=2)


@pytest.mark.parametrize("kind", ["numpy", "SQ8"])
def test_mentions_that_are_kb_names_reuse_the_stored_vectors(trained, kb, kind):
    encoder = NameEncoder(trained[0] / "model")
    dense = DenseIndex.build(kb, encoder, kind=kind, progress=False)
    gen = CandidateGenerator(kb, dense=dense, alpha=0.5)
    mentions = ["Kidney  Failure", "narcan", "renal failures", "pyrexia", "xq"]
    reused = gen.detailed(mentions, k=4)
    # "renal failures" and "xq" are no KB name: only they go through the encoder
    assert dense.encoded == 2
    dense.reuse_name_vectors = False
    dense._cache.clear()
    gen._cache.clear()
    encoded = gen.detailed(mentions, k=4)
    assert dense.encoded == 2 + 5
    for a, b in zip(reused, encoded):
        assert [c[0] for c in a] == [c[0] for c in b]
        for (_, s1, t1, d1), (_, s2, t2, d2) in zip(a, b):
            assert t1 == t2 and d1 == pytest.approx(d2, abs=0.02) and s1 == pytest.approx(s2, abs=0.01)
    # the reused vector is the encoder's own, up to the index's storage
    row = gen._exact_name_row("narcan", kb.lookup("narcan"))
    assert row >= 0 and numpy.allclose(dense.encode_queries(["narcan"], [row]), encoder.encode(["narcan"]), atol=0.02)


def test_benchmark_linker_speed_times_both_settings(trained, kb, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from spacy.tokens import DocBin

    kb_dir = tmp_path / "kb_dense"
    kb.to_disk(kb_dir)
    dense = DenseIndex.build(kb, NameEncoder(trained[0] / "model"), kind="numpy", progress=False)
    CandidateGenerator(kb, dense=dense, alpha=0.5).to_disk(kb_dir / "index")
    nlp = spacy.blank("en")
    db = DocBin(store_user_data=True)
    for text, ents in [("Narcan reversed the hypotension .", [(0, 6, "Chemical", "D009270"), (20, 31, "Disease", "D007022")]),
                       ("Kidney failures and pyrexia followed .", [(0, 15, "Disease", "D051437"), (20, 27, "Disease", "D005334")])]:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=l, kb_id=k) for s, e, l, k in ents]
        db.add(doc)
    db.to_disk(tmp_path / "data.spacy")
    script = Path(__file__).parent.parent / "scripts" / "benchmark_linker_speed.py"
    data = str(tmp_path / "data.spacy")
    run = subprocess.run([sys.executable, str(script), str(kb_dir), "--data", data, "--train", data, "--recall", data,
                          "--runs", "1", "--output", str(tmp_path / "m")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    report = srsly.read_json(tmp_path / "m" / "linker_speed.json")
    by_reuse = {r["reuse"]: r for r in report["runs"]}
    assert set(by_reuse) == {True, False} and all(r["mentions"] == 4 and r["linker_s"] > 0 for r in by_reuse.values())
    # "kidney failures" is the one text that is no KB name
    assert by_reuse[False]["encoded"] == 4 and by_reuse[True]["encoded"] == 1
    a, b = report["recall"]
    assert (a["reuse"], b["reuse"]) == (False, True) and a["R@10"] == b["R@10"] == 100.0


def test_int8_query_encoder_round_trips_and_stays_close(trained, kb, tmp_path):
    encoder = NameEncoder(trained[0] / "model")
    index = DenseIndex.build(kb, encoder, kind="numpy", progress=False)
    keys = ["renal failures", "narcan tablets", "xq", "pyrexia of unknown origin"]
    fp32 = index.encode_queries(keys)
    stored = index.name_vectors(numpy.arange(len(index))).copy()
    index.quantize_queries()
    assert index.query_int8 and not index._cache
    int8 = index.encode_queries(keys)
    # the names keep their fp32 vectors; the mentions move by the int8 rounding only
    assert numpy.array_equal(index.name_vectors(numpy.arange(len(index))), stored)
    assert not numpy.allclose(int8, fp32, atol=1e-6)
    assert float((int8 * fp32).sum(axis=1).min()) > 0.98
    index.to_disk(tmp_path / "dense")
    assert srsly.read_json(tmp_path / "dense" / "dense.json")["query_int8"] is True
    assert (tmp_path / "dense" / "encoder" / "int8_scales.json").exists()
    loaded = DenseIndex.from_disk(tmp_path / "dense", kb)
    assert loaded.query_int8
    # the saved encoder holds the int8 weights' values and scales: the same int8 weights
    assert numpy.array_equal(loaded.encode_queries(keys), int8)
    # its weights file is read into memory, not left mapped (the mapping kept every page
    # read resident, the fp32 weights the quantization replaced among them)
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(tmp_path / "dense" / "encoder") not in maps.read_text()


MENTIONS = ["renal failures", "narcan tablets", "xq", "pyrexia of unknown origin", "li", "acute kidney failure",
            "cis-platinum induced nephrotoxicity", "fits", "low blood pressure", "hypotensive episodes"]


def test_int8_per_token_vectors_do_not_depend_on_their_batch(trained, kb, tmp_path):
    """Per-token int8 activations: a mention's vector is the same bits alone, in any batch and
    after a round trip; PyTorch's per-call scale (per_batch) moves it with its batch."""
    vectors = {}
    for mode in ("per_token", "per_batch"):
        index = DenseIndex.build(kb, NameEncoder(trained[0] / "model"), kind="numpy", progress=False)
        index.quantize_queries(mode)
        assert index.query_precision == f"int8 {mode}" and index.encoder.int8_activations == mode
        enc = index.encoder
        together = enc.encode(MENTIONS, batch_size=64)
        alone = numpy.stack([enc.encode([m])[0] for m in MENTIONS])
        # each mention beside another text of its token length (encode batches one length)
        partners = [" ".join(("9%z#q!" * 8)[: len(enc.tokenizer(m)["input_ids"]) - 2]) for m in MENTIONS]
        assert [len(enc.tokenizer(p)["input_ids"]) for p in partners] == [len(enc.tokenizer(m)["input_ids"]) for m in MENTIONS]
        pairs = numpy.stack([enc.encode([m, p], batch_size=2)[0] for m, p in zip(MENTIONS, partners)])
        if mode == "per_token":
            assert numpy.array_equal(together, alone) and numpy.array_equal(together, pairs)
            index.to_disk(tmp_path / "dense")
            meta = srsly.read_json(tmp_path / "dense" / "encoder" / "name_encoder.json")
            assert meta["int8_activations"] == "per_token"
            loaded = DenseIndex.from_disk(tmp_path / "dense", kb)
            assert loaded.query_precision == "int8 per_token"
            # (the scales are saved exactly: the same int8 layers, the same bits)
            assert numpy.array_equal(loaded.encoder.encode(MENTIONS), together)
        else:
            # one scale per call: a text alone gets other vectors than in company
            assert not numpy.array_equal(alone, pairs)
        vectors[mode] = together
    fp32 = NameEncoder(trained[0] / "model").encode(MENTIONS)
    # fp32 vectors do not depend on the batch either (same-length batches, no padding)
    assert numpy.allclose(fp32, numpy.stack([NameEncoder(trained[0] / "model").encode([m])[0] for m in MENTIONS]), atol=1e-6)
    close = {mode: float((v * fp32).sum(axis=1).min()) for mode, v in vectors.items()}
    assert close["per_token"] > 0.98 and close["per_batch"] > 0.95


def test_int8_encoder_saved_without_its_activation_mode_loads_per_batch(trained, kb, tmp_path):
    """Encoders saved before the mode was recorded keep the activations they were built with."""
    index = DenseIndex.build(kb, NameEncoder(trained[0] / "model"), kind="numpy", progress=False)
    with pytest.raises(ValueError, match="per_row"):
        index.quantize_queries("per_row")
    assert index.query_precision == "fp32"
    index.quantize_queries("per_batch")
    index.quantize_queries("per_batch")
    with pytest.raises(ValueError, match="per_batch already"):
        index.quantize_queries("per_token")
    index.to_disk(tmp_path / "dense")
    meta_path = tmp_path / "dense" / "encoder" / "name_encoder.json"
    meta = srsly.read_json(meta_path)
    del meta["int8_activations"]
    srsly.write_json(meta_path, meta)
    assert DenseIndex.from_disk(tmp_path / "dense", kb).query_precision == "int8 per_batch"
    meta["int8_activations"] = "per_word"
    srsly.write_json(meta_path, meta)
    with pytest.raises(ValueError, match="name_encoder.json.*per_word"):
        DenseIndex.from_disk(tmp_path / "dense", kb)


def test_per_token_int8_linear_is_exact_per_row():
    import torch

    from spacy_medllm.layers.quantize import quantize_module, set_per_token_activations

    torch.manual_seed(0)
    fp32 = torch.nn.Linear(37, 11)
    # built straight from the fp32 layer: the int8 weights and scales PyTorch's observer picks
    from spacy_medllm.layers.int8 import Int8Linear

    direct = Int8Linear.from_float(fp32)
    model = quantize_module(torch.nn.Sequential(fp32), inplace=True)
    dynamic = model[0]
    assert torch.equal(direct.weight_t, dynamic.weight().int_repr().t()) and torch.equal(direct.scales, dynamic.weight().q_per_channel_scales().float())
    assert type(quantize_module(torch.nn.Sequential(torch.nn.Linear(37, 11)), activations="per_token")[0]) is Int8Linear
    assert set_per_token_activations(model) == 1 and set_per_token_activations(model) == 1
    assert type(model[0]).__name__ == "Int8Linear"
    assert torch.equal(model[0].weight_t.t(), dynamic.weight().int_repr())
    assert torch.equal(model[0].dequantized_weight(), dynamic.weight().dequantize())
    x = torch.randn(2, 9, 37) * torch.linspace(0.01, 30, 9)[None, :, None]
    with torch.inference_mode():
        batched = model(x)
        rows = torch.stack([torch.stack([model(x[i, j][None])[0] for j in range(9)]) for i in range(2)])
        ref = torch.nn.functional.linear(x, dynamic.weight().dequantize(), dynamic.bias())
    assert torch.equal(batched, rows)
    # each row is quantized at its own range: small and large rows alike stay close
    rel = (batched - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(rel.max()) < 0.02
    # the scheme written out: each row over its largest magnitude / 127, rounded half to even,
    # the integer product exact, then the row's and the output's scales and the bias
    flat = torch.cat([x.reshape(-1, 37), torch.zeros(1, 37), -x[0, :1]])
    scale = (flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0)
    ints = torch.round(flat / scale)
    assert float(ints.abs().max()) == 127.0
    expect = (ints.double() @ model[0].weight_t.double()).float() * scale * model[0].scales[None, :] + model[0].bias
    with torch.inference_mode():
        got = model[0](flat)
    assert torch.equal(got, expect)
    assert torch.equal(got[-2], model[0].bias)  # an all-zero row: the bias alone


def test_saved_int8_encoder_loads_its_int8_weights_as_they_are_used(trained, kb, tmp_path):
    """A per-token int8 encoder loads straight into `Int8Linear` layers (no re-quantization
    through PyTorch): the int8 weights and vectors of the quantize_dynamic path, bit for
    bit, and a second save writes the same files; scales of another model are refused."""
    import torch

    from spacy_medllm.layers.quantize import _quantized_linears, set_per_token_activations

    index = DenseIndex.build(kb, NameEncoder(trained[0] / "model"), kind="numpy", progress=False)
    index.quantize_queries("per_token")
    index.to_disk(tmp_path / "a")
    enc = NameEncoder(tmp_path / "a" / "encoder")
    assert enc.int8_activations == "per_token"
    layers = dict(_quantized_linears(enc.model))
    assert layers and all(type(layer).__name__ == "Int8Linear" for layer in layers.values())
    assert not any(isinstance(m, torch.nn.Linear) for m in enc.model.modules())
    # the quantize_dynamic path from the same files: the same int8 weights and vectors
    shutil.copytree(tmp_path / "a" / "encoder", tmp_path / "ref")
    srsly.write_json(tmp_path / "ref" / "name_encoder.json", {"pooling": enc.pooling, "max_length": enc.max_length, "int8_activations": "per_batch"})
    ref = NameEncoder(tmp_path / "ref")
    # a per-call encoder saves what it loaded too (its scales read back exactly)
    ref.save(tmp_path / "ref_saved")
    for name in ("model.safetensors", "int8_scales.json", "name_encoder.json"):
        assert (tmp_path / "ref_saved" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    ref_layers = dict(_quantized_linears(ref.model))
    assert all(isinstance(layer, torch.ao.nn.quantized.dynamic.Linear) for layer in ref_layers.values())
    assert all(torch.equal(layers[n].weight_t.t(), ref_layers[n].weight().int_repr()) for n in layers)
    set_per_token_activations(ref.model)
    assert numpy.array_equal(enc.encode(MENTIONS), ref.encode(MENTIONS))
    enc.save(tmp_path / "b")
    for name in ("model.safetensors", "int8_scales.json", "name_encoder.json"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / "encoder" / name).read_bytes(), name
    scales = srsly.read_json(tmp_path / "b" / "int8_scales.json")
    scales["encoder.layer.9.output.dense"] = scales.popitem()[1]
    srsly.write_json(tmp_path / "b" / "int8_scales.json", scales)
    with pytest.raises(ValueError, match="E154.*int8_scales.json.*encoder.layer.9.output.dense"):
        NameEncoder(tmp_path / "b")
    # an int8 weight outside [-128, 127] at its scale is refused, not clipped
    from spacy_medllm.layers.int8 import Int8Linear

    linear = torch.nn.Linear(2, 1)
    with torch.no_grad():
        linear.weight[:] = torch.tensor([[1.28, -1.28]])
    with pytest.raises(ValueError, match="int8 range"):
        Int8Linear.from_saved(linear, {"axis": 0, "scales": [0.01], "zero_points": [0]})
    assert Int8Linear.from_saved(linear, {"axis": 0, "scales": [0.0101], "zero_points": [0]}).weight_t.t().tolist() == [[127, -127]]


def test_build_dense_index_cli_query_int8(trained, kb, kb_dir, tmp_path):
    out = tmp_path / "kb_int8"
    result = CliRunner().invoke(app, ["build-dense-index", str(kb_dir), str(out), "--encoder", str(trained[0] / "model"),
                                      "--kind", "numpy", "--query-int8"])
    assert result.exit_code == 0, result.output
    assert srsly.read_json(out / "index" / "dense" / "dense.json")["query_int8"] is True
    gen = CandidateGenerator.from_disk(out / "index", KnowledgeBase.from_disk(out))
    assert gen.dense.query_int8 and gen.dense.query_precision == "int8 per_token"
    assert "queries int8 per_token" in result.output
    assert gen(["kidney failure"], k=1)[0][0][0] == "D051437"
    result = CliRunner().invoke(app, ["build-dense-index", str(kb_dir), str(tmp_path / "x"), "--encoder", str(trained[0] / "model"),
                                      "--kind", "numpy", "--query-int8", "--query-activations", "per_row"])
    assert result.exit_code == 1 and "per_row" in result.output


def test_build_dense_index_reuses_the_shared_names_of_a_larger_kb(trained, kb, kb_dir, tmp_path):
    """A KB with more aliases (e.g. more training mentions) takes the vectors of the names it
    shares with an indexed KB and encodes only the new ones: the same vectors as encoding all."""
    runner = CliRunner()
    exact = tmp_path / "exact"
    assert runner.invoke(app, ["build-dense-index", str(kb_dir), str(exact), "--encoder", str(trained[0] / "model"), "--kind", "numpy"]).exit_code == 0
    grown = KnowledgeBase([Concept(c.concept_id, c.canonical_name, c.aliases + (["kidney shutdown"] if c.concept_id == "D051437" else []), c.types)
                           for c in CONCEPTS])
    grown_dir = tmp_path / "grown"
    grown.to_disk(grown_dir)
    CandidateGenerator(grown).to_disk(grown_dir / "index")
    out = tmp_path / "grown_dense"
    result = runner.invoke(app, ["build-dense-index", str(grown_dir), str(out), "--vectors-from", str(exact), "--kind", "numpy"])
    assert result.exit_code == 0, result.output
    assert "encoding the 1 names it lacks" in result.output
    full = tmp_path / "grown_full"
    assert runner.invoke(app, ["build-dense-index", str(grown_dir), str(full), "--encoder", str(trained[0] / "model"), "--kind", "numpy"]).exit_code == 0
    a = CandidateGenerator.from_disk(out / "index", grown).dense
    b = CandidateGenerator.from_disk(full / "index", grown).dense
    rows = numpy.arange(len(a))
    assert numpy.allclose(a.name_vectors(rows), b.name_vectors(rows), atol=2e-3)


def test_int8_query_index_is_not_a_vector_source(trained, kb, kb_dir, tmp_path):
    runner = CliRunner()
    int8 = tmp_path / "int8"
    assert runner.invoke(app, ["build-dense-index", str(kb_dir), str(int8), "--encoder", str(trained[0] / "model"), "--kind", "numpy", "--query-int8"]).exit_code == 0
    result = runner.invoke(app, ["build-dense-index", str(kb_dir), str(tmp_path / "x"), "--vectors-from", str(int8), "--kind", "SQ8"])
    assert result.exit_code == 1 and "int8" in result.output and "fp32 index" in result.output
    result = runner.invoke(app, ["build-dense-index", str(kb_dir), str(tmp_path / "y"), "--encoder", str(trained[0] / "model"), "--query-int8", "--gpu-id", "0"])
    assert result.exit_code == 1 and "CPU" in result.output


def test_mention_stage_anchors_batches_on_training_mention_texts(tiny_bert, kb, trained, tmp_path):
    """--mentions: half of each batch's concepts come from the annotated files' linked
    concepts, each with one of its mention texts; alternative ids resolve, NIL and unknown
    ids are skipped, and a file that links nothing the encoder trains on is refused."""
    from spacy.tokens import DocBin, Span

    nlp = spacy.blank("en")
    doc = nlp("Narcan reversed the hypotensive crisis ; NIL thing and pressure drop")
    doc.ents = [Span(doc, 0, 1, "Chemical", kb_id="D009270"), Span(doc, 3, 5, "Disease", kb_id="D007022"),
                Span(doc, 6, 8, "Disease", kb_id="NIL"), Span(doc, 9, 11, "Disease", kb_id="D007022")]
    other = nlp("a rash")
    other.ents = [Span(other, 1, 2, "Disease", kb_id="D999999")]
    path = tmp_path / "train.spacy"
    DocBin(docs=[doc, other], store_user_data=True).to_disk(path)

    trainer = NameEncoderTrainer(tmp_path / "ft", settings(tiny_bert, encoder=str(trained[0] / "model"), steps=20,
                                                         mentions=[str(path)]), progress=False)
    seen = []
    original = NameEncoderTrainer.batch

    def spy(self, step, n_train, neighbours, train_pos, anchored=()):
        chosen = original(self, step, n_train, neighbours, train_pos, anchored)
        seen.append((list(anchored), chosen))
        return chosen

    NameEncoderTrainer.batch = spy
    try:
        metrics = trainer.run(kb)
    finally:
        NameEncoderTrainer.batch = original
    assert metrics["mention_concepts"] == 2 and metrics["mention_texts"] == 3
    assert metrics["settings"]["mentions"] == [str(path)] and metrics["steps_done"] == 20
    ids, sets = synonym_sets(kb)
    anchored = {ids[i] for i in seen[0][0]}
    assert anchored == {"D009270", "D007022"}
    # batch_concepts 4, share 0.5: both mentioned concepts are in every batch
    assert all(set(a) <= set(chosen) for a, chosen in seen)
    assert NameEncoder(tmp_path / "ft" / "model").encode(["hypotensive crisis"]).shape == (1, NameEncoder(tiny_bert).dim)

    empty = tmp_path / "empty.spacy"
    DocBin(docs=[other]).to_disk(empty)
    with pytest.raises(ValueError, match="E160"):
        NameEncoderTrainer(tmp_path / "none", settings(tiny_bert, mentions=[str(empty)]), progress=False).run(kb)
    result = CliRunner().invoke(app, ["train-name-encoder", str(tmp_path / "kb.msgpack"), str(tmp_path / "x"),
                                      "--mentions", str(path), "--mention-share", "0"])
    assert result.exit_code == 1 and "--mention-share 0" in result.output
