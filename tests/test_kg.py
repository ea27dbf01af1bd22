"""Knowledge graph, PyKEEN embeddings, embedding table, and the KG-attention layer."""
import gzip
import os
import shutil
import tempfile
from pathlib import Path

# PyKEEN reads PYKEEN_HOME once, at import: point it away from the home folder first
os.environ.setdefault("PYKEEN_HOME", str(Path(tempfile.gettempdir()) / "spacy_medllm_test_pykeen"))

import numpy
import pytest
import spacy
import srsly
from spacy import util
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.io import VocabularyError
from spacy_medllm.kb import Concept, KnowledgeBase, build_kb
from spacy_medllm.kg import EmbeddingTable, build_kg, read_triples, write_triples
from spacy_medllm.kg.build import HAS_SEMANTIC_TYPE, INDUCES, ISA, MEDIC_PARENT, semantic_types_of
from spacy_medllm.layers.kg_attention import AliasMatcher, build_kg_attention, matcher_stats
from spacy_medllm.layers.torch_io import module_of
from spacy_medllm.tokens import install_extensions, relation

ROOT = Path(__file__).parent.parent

# ---- a tiny MeSH / MEDIC / BC5CDR --------------------------------------------------------
TERMS = """mesh_id\tmesh_name
D001\tCardiovascular Diseases
D006\tVascular Diseases
D002\tHypotension
D003\tHypertension
D005\tHeterocyclic Compounds
D004\tClonidine
"""
TREES = """mesh_id\tmesh_name\tmesh_tree_number
D001\tCardiovascular Diseases\tC14
D006\tVascular Diseases\tC14.907
D002\tHypotension\tC14.907.514
D003\tHypertension\tC14.907.489
D005\tHeterocyclic Compounds\tD03
D004\tClonidine\tD03.383
"""
MEDIC = "\n".join(
    [
        "# CTD header line",
        "Hypotension\tMESH:D002\t\tLow blood pressure.\tMESH:D006\tC14.907.514\tC14.907\tlow blood pressure|hypotensive\t",
        "Orthostatic Hypotension\tMESH:D007\t\t\tMESH:D002\tC14.907.514.500\tC14.907.514\t\t",
        "Some Syndrome\tOMIM:123\t\t\tMESH:D003|MESH:D999\t\t\t\t",
    ]
) + "\n"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("kg_sources")
    (root / "mesh").mkdir()
    (root / "mesh" / "terms.tsv").write_text(TERMS, encoding="utf8")
    (root / "mesh" / "tree-numbers.tsv").write_text(TREES, encoding="utf8")
    (root / "CTD_diseases.tsv.gz").write_bytes(gzip.compress(MEDIC.encode("utf8")))
    install_extensions()
    nlp = spacy.blank("en")
    docs = []
    for text, rels in [
        ("Clonidine caused hypotension .", [relation("CID", head_id="D004", tail_id="D002")]),
        ("Clonidine again .", [relation("CID", head_id="D004", tail_id="D002"), relation("CID", head_id="D004", tail_id="D003|D007")]),
        ("Nothing induced .", []),
    ]:
        doc = nlp(text)
        doc._.medllm_rels = rels
        docs.append(doc)
    DocBin(docs=docs, store_user_data=True).to_disk(root / "train.spacy")
    kb = build_kb(mesh_dir=root / "mesh", medic=root / "CTD_diseases.tsv.gz")
    kb.to_disk(root / "kb")
    return root, kb


SOURCE_TRIPLES = [
    ("D006", ISA, "D001"),
    ("D002", ISA, "D006"),
    ("D003", ISA, "D006"),
    ("D004", ISA, "D005"),
    ("D007", MEDIC_PARENT, "D002"),
    ("OMIM:123", MEDIC_PARENT, "D003"),
    ("D004", INDUCES, "D002"),
    ("D004", INDUCES, "D003"),
    ("D004", INDUCES, "D007"),
]


def test_build_kg_sources(sources):
    root, kb = sources
    graph = build_kg(kb, mesh_dir=root / "mesh", medic=root / "CTD_diseases.tsv.gz", relation_files=[root / "train.spacy"], semantic_network=False)
    assert graph.triples == SOURCE_TRIPLES
    assert graph.sources["medic_parent"] == {"read": 4, "kept": 2, "dropped_same_as_isa": 1, "dropped_not_in_kb": 1}
    assert graph.sources["cid_relations"] == {"read": 4, "kept": 3, "dropped_duplicate": 1}
    stats = graph.stats(kb)
    assert stats["relations"] == {ISA: 4, INDUCES: 3, MEDIC_PARENT: 2}
    assert stats["kb_concepts"] == 8 and stats["kb_concepts_in_graph"] == 8


def test_semantic_network_and_types(sources):
    root, kb = sources
    graph = build_kg(kb, semantic_network=True)
    stats = graph.stats(kb)
    assert stats["sources"]["semantic_network"]["kept"] == 6529  # PyKEEN's UMLS, all splits
    types = {h: t for h, r, t in graph.triples if r == HAS_SEMANTIC_TYPE}
    assert types["D002"] == "semtype:disease_or_syndrome"
    assert types["D004"] == "semtype:organic_chemical"
    assert types["OMIM:123"] == "semtype:disease_or_syndrome"  # no tree number: its category
    assert semantic_types_of(["C04.557", "T047"]) == ["neoplastic_process", "disease_or_syndrome"]
    assert semantic_types_of(["C23.888.592"]) == ["sign_or_symptom"]


def test_build_kg_cli(sources, tmp_path):
    root, _ = sources
    result = CliRunner().invoke(app, [
        "build-kg", str(tmp_path / "kg"), "--kb", str(root / "kb"), "--mesh", str(root / "mesh"),
        "--medic", str(root / "CTD_diseases.tsv.gz"), "--relations", str(root / "train.spacy"), "--no-semantic-network",
    ])
    assert result.exit_code == 0, result.output
    assert read_triples(tmp_path / "kg" / "triples.tsv") == SOURCE_TRIPLES
    assert srsly.read_json(tmp_path / "kg" / "stats.json")["relations"] == {ISA: 4, INDUCES: 3, MEDIC_PARENT: 2}
    bad = CliRunner().invoke(app, ["build-kg", str(tmp_path / "kg2"), "--kb", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and bad.output == f"error: [E003] {tmp_path / 'missing'}: file not found\n"


def test_read_triples_errors(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("a\tr\tb\na\tr\n", encoding="utf8")
    with pytest.raises(VocabularyError, match=r"triples.tsv, line 2: expected 3"):
        read_triples(path)
    write_triples(path, [("a", "r", "b")])
    assert read_triples(path) == [("a", "r", "b")]


# ---- PyKEEN ------------------------------------------------------------------------------
def composition_graph(n: int = 12):
    """treats(d_i, s_i), causes(s_i, c_i), prevents(d_i, c_i) for all i but the last:
    prevents(d_last, c_last) follows from the other two (TransE: r_prevents ~ r_treats + r_causes)."""
    triples = []
    for i in range(n):
        triples += [(f"d{i}", "treats", f"s{i}"), (f"s{i}", "causes", f"c{i}")]
        if i < n - 1:
            triples.append((f"d{i}", "prevents", f"c{i}"))
    return triples, (f"d{n - 1}", "prevents", f"c{n - 1}")


def test_transe_ranks_planted_triple_first(tmp_path):
    from spacy_medllm.kg.train import train_kg

    triples, planted = composition_graph()
    result = train_kg(
        triples, heldout=[planted], embedding_dim=16, num_epochs=400, batch_size=64, learning_rate=0.02,
        early_stopping=False, per_relation=False, seed=0, scoring_norm=2,
    )
    assert result.predict_tails(planted[0], planted[1], k=1)[0][0] == planted[2]
    assert result.metrics["heldout_tail"]["hits@1"] == 1.0
    table = result.table
    assert table.vectors.shape == (36, 16) and set(table.ids) == {e for h, _, t in triples for e in (h, t)}
    assert table.meta["model"] == "TransE" and table.meta["dimension"] == 16 and table.meta["epochs"] == 400
    assert table.meta["model_kwargs"] == {"embedding_dim": 16, "scoring_fct_norm": 2}
    table.to_disk(tmp_path / "emb")
    loaded = EmbeddingTable.from_disk(tmp_path / "emb")
    assert loaded.ids == table.ids and numpy.array_equal(loaded.vectors, table.vectors)
    assert loaded.meta["metrics"]["heldout_tail"]["hits@1"] == 1.0


def test_train_kg_split_early_stopping_cli(tmp_path):
    triples, _ = composition_graph()
    write_triples(tmp_path / "triples.tsv", triples)
    result = CliRunner().invoke(app, [
        "train-kg", str(tmp_path / "triples.tsv"), str(tmp_path / "emb"), "--dim", "8", "--epochs", "6",
        "--eval-every", "2", "--patience", "1", "--batch-size", "64", "--heldout", "0.1", "--no-umls-anchor",
        "--metrics", str(tmp_path / "kg.json"), "--pykeen-home", str(tmp_path / "pykeen"),
    ])
    assert result.exit_code == 0, result.output
    metrics = srsly.read_json(tmp_path / "kg.json")
    assert set(metrics["heldout"]) == {"mrr", "hits@1", "hits@3", "hits@10"}
    assert metrics["triples"] == {"training": 28, "validation": 3, "testing": 4}  # 35 triples, seeded split
    assert set(metrics["heldout_by_relation"]) == {"treats"}
    assert EmbeddingTable.from_disk(tmp_path / "emb").dimension == 8


def test_train_kg_bad_model(tmp_path):
    from spacy_medllm.kg.train import train_kg

    with pytest.raises(ValueError, match="E023"):
        train_kg([("a", "r", "b")], model="NoSuchModel")


# ---- the embedding table -----------------------------------------------------------------
def test_embedding_table_errors(tmp_path):
    table = EmbeddingTable(numpy.ones((2, 3), dtype="float32"), ["A", "B"], {"model": "TransE"})
    table.to_disk(tmp_path / "t")
    meta = srsly.read_json(tmp_path / "t" / "meta.json")
    assert meta["format"] == "spacy_medllm.kg_embeddings" and meta["version"] == 1 and meta["dimension"] == 3

    newer = tmp_path / "newer"
    shutil.copytree(tmp_path / "t", newer)
    srsly.write_json(newer / "meta.json", dict(meta, version=99))
    with pytest.raises(ValueError, match=r"E016.*version 99 is newer"):
        EmbeddingTable.from_disk(newer)

    pickled = tmp_path / "pickled"
    shutil.copytree(tmp_path / "t", pickled)
    numpy.save(pickled / "embeddings.npy", numpy.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"E015.*embeddings.npy"):
        EmbeddingTable.from_disk(pickled)

    short = tmp_path / "short"
    shutil.copytree(tmp_path / "t", short)
    srsly.write_json(short / "ids.json", ["A"])
    with pytest.raises(ValueError, match="2 vectors but 1 ids"):
        EmbeddingTable.from_disk(short)

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "t", other)
    (other / "meta.json").write_text("{not json", encoding="utf8")
    with pytest.raises(ValueError, match=r"E015.*meta.json: not a knowledge graph embedding table"):
        EmbeddingTable.from_disk(other)

    for name, data in [("truncated", "half"), ("empty", b""), ("garbage", b"\x93NUMPY\x01\x00")]:
        broken = tmp_path / name
        shutil.copytree(tmp_path / "t", broken)
        vectors = broken / "embeddings.npy"
        vectors.write_bytes(vectors.read_bytes()[: len(vectors.read_bytes()) // 2] if data == "half" else data)
        with pytest.raises(ValueError, match=rf"\[E015\] .*{name}/embeddings.npy: not a knowledge graph embedding table: not a plain numeric .npy array"):
            EmbeddingTable.from_disk(broken)

    (tmp_path / "t" / "ids.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"\[E003\] .*t/ids.json: file not found"):
        EmbeddingTable.from_disk(tmp_path / "t")
    with pytest.raises(ValueError, match="more than once"):
        EmbeddingTable(numpy.ones((2, 3)), ["A", "A"])


# ---- the KG-attention layer --------------------------------------------------------------
CONCEPTS = [
    Concept("D002", "Hypotension", ["low blood pressure", "hypotensive"], ["Disease"]),
    Concept("D004", "Clonidine", [], ["Chemical"]),
    Concept("D008", "Blood", [], ["Tissue"]),
    Concept("D009", "was", [], ["Noise"]),  # a stop word: never matched
    Concept("D010", "No Embedding", [], ["Disease"]),  # not in the table: never matched
]


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory):
    root = tmp_path_factory.mktemp("kg_layer")
    KnowledgeBase(CONCEPTS).to_disk(root / "kb")
    vectors = numpy.random.RandomState(0).normal(size=(5, 8)).astype("float32")
    EmbeddingTable(vectors, ["D002", "D004", "D008", "D009", "semtype:x"], {"model": "TransE"}).to_disk(root / "emb")
    return root


def hash_tok2vec():
    return util.registry.resolve({"t": {
        "@architectures": "spacy.HashEmbedCNN.v2", "width": 16, "depth": 1, "embed_size": 200, "window_size": 1,
        "maxout_pieces": 2, "subword_features": False, "pretrained_vectors": None,
    }})["t"]


def make_layer(knowledge, **kwargs):
    fix_random_seed(0)
    tok2vec = hash_tok2vec()
    layer = build_kg_attention(tok2vec, embeddings_path=str(knowledge / "emb"), kb_path=str(knowledge / "kb"), n_heads=2, attention_width=8, **kwargs)
    return layer, tok2vec


TEXTS = ["Clonidine caused low blood pressure and it was bad .", "Nothing known here .", ""]


def test_matcher_spans(knowledge):
    layer, _ = make_layer(knowledge)
    nlp = spacy.blank("en")
    layer.initialize(X=[nlp(t) for t in TEXTS])
    matcher: AliasMatcher = layer.attrs["matcher"]
    assert set(matcher.aliases) == {"hypotension", "low blood pressure", "hypotensive", "clonidine", "blood"}
    doc = nlp(TEXTS[0])
    assert [(s, e) for s, e, _ in matcher.spans(doc)] == [(0, 1), (2, 5), (3, 4)]
    tokens, rows, mask = matcher(doc)
    assert tokens.tolist() == [0, 2, 3, 4]
    # "blood": the longer span's concept (Hypotension, row 0) first, then Blood (row 2)
    assert rows[2].tolist()[:2] == [0, 2] and mask[2].tolist()[:2] == [True, True] and mask[1].sum() == 1
    ref = nlp(TEXTS[0])
    ref.ents = [ref.char_span(0, 9, label="Chemical"), ref.char_span(17, 35, label="Disease"), ref.char_span(43, 46, label="X")]
    stats = matcher_stats(matcher, [doc, nlp(TEXTS[1])], gold=[ref, nlp(TEXTS[1])])
    assert stats["tokens_with_candidates"] == 4 and stats["tokens"] == 14
    assert stats["entity_tokens"] == 5 and stats["entity_token_fraction_with_candidates"] == 0.8


def test_matcher_abbreviations_keep_their_case():
    kb = KnowledgeBase([
        Concept("D1", "Magnesium", ["Mg"]), Concept("D2", "Myasthenia Gravis", ["MG"]),
        Concept("D3", "Deafness 22", ["INCLUDED"]), Concept("D4", "Acquired Immunodeficiency Syndrome", ["AIDS"]),
    ])
    matcher = AliasMatcher()
    matcher.set_from_kb(kb, ["D1", "D2", "D3", "D4"])
    doc = spacy.blank("en")("Mg and MG at 5 mg were included ; AIDS , aids , myasthenia gravis .")
    assert [(doc[s:e].text, rows) for s, e, rows in matcher.spans(doc)] == [
        ("Mg", [0]), ("MG", [1]), ("AIDS", [3]), ("myasthenia gravis", [1])
    ]


def test_layer_shape_pass_through_and_gate_gradient(knowledge):
    layer, tok2vec = make_layer(knowledge)
    nlp = spacy.blank("en")
    docs = [nlp(t) for t in TEXTS]
    layer.initialize(X=docs)
    assert layer.get_dim("nO") == 16
    outputs, backprop = layer(docs, is_train=True)
    plain = tok2vec.predict(docs)
    assert [o.shape for o in outputs] == [(10, 16), (4, 16), (0, 16)]
    with_candidates = {0, 2, 3, 4}
    for i in range(10):
        if i in with_candidates:
            # the gate starts nearly closed: a small change, not none
            assert 0 < numpy.abs(outputs[0][i] - plain[0][i]).max() < 0.5
        else:
            assert numpy.array_equal(outputs[0][i], plain[0][i])
    assert numpy.array_equal(outputs[1], plain[1])
    backprop([numpy.ones_like(o) for o in outputs])
    module = module_of(layer.get_ref("attention"))
    assert float(module.gate.weight.grad.abs().sum()) > 0 and float(module.gate.bias.grad.abs().sum()) > 0
    assert float(module.query.weight.grad.abs().sum()) > 0
    assert module.embeddings.weight.grad is None  # frozen by default
    # the embedding table is the exported one
    assert numpy.allclose(module.embeddings.weight.detach().numpy(), EmbeddingTable.from_disk(knowledge / "emb").vectors)


def test_layer_fine_tuned_embeddings(knowledge):
    layer, _ = make_layer(knowledge, freeze_embeddings=False)
    nlp = spacy.blank("en")
    docs = [nlp(TEXTS[0])]
    layer.initialize(X=docs)
    outputs, backprop = layer(docs, is_train=True)
    backprop([numpy.ones_like(o) for o in outputs])
    grad = module_of(layer.get_ref("attention")).embeddings.weight.grad.abs().sum(axis=1).numpy()
    assert grad[0] > 0 and grad[1] > 0 and grad[2] > 0 and grad[3] == 0 and grad[4] == 0


def test_layer_errors(knowledge, tmp_path):
    nlp = spacy.blank("en")
    docs = [nlp("Clonidine .")]
    with pytest.raises(ValueError, match="E019"):
        build_kg_attention(hash_tok2vec(), n_heads=3, attention_width=8)
    layer = build_kg_attention(hash_tok2vec(), n_heads=2, attention_width=8)
    with pytest.raises(ValueError, match="E017"):
        layer.initialize(X=docs)
    with pytest.raises(ValueError, match="E021"):
        layer.predict(docs)
    EmbeddingTable(numpy.ones((1, 4), dtype="float32"), ["X999"]).to_disk(tmp_path / "other")
    layer = build_kg_attention(hash_tok2vec(), embeddings_path=str(tmp_path / "other"), kb_path=str(knowledge / "kb"), n_heads=2, attention_width=8)
    with pytest.raises(ValueError, match="E018"):
        layer.initialize(X=docs)


def test_layer_bytes_round_trip(knowledge):
    layer, _ = make_layer(knowledge)
    nlp = spacy.blank("en")
    docs = [nlp(t) for t in TEXTS]
    layer.initialize(X=docs)
    data = layer.to_bytes()
    fresh = build_kg_attention(hash_tok2vec(), n_heads=2, attention_width=8)  # no paths: nothing read
    fresh.from_bytes(data)
    for a, b in zip(layer.predict(docs), fresh.predict(docs)):
        assert numpy.array_equal(a, b)
    assert fresh.attrs["matcher"].aliases == layer.attrs["matcher"].aliases


def test_layer_weights_errors():
    import json

    import torch
    from safetensors.torch import save

    from spacy_medllm.layers.kg_attention_torch import KGAttentionModule
    from spacy_medllm.layers.torch_io import deserialize_module, serialize_module

    io = build_kg_attention(hash_tok2vec(), n_heads=2, attention_width=8).get_ref("attention").attrs["torch_io"]
    cpu = torch.device("cpu")
    module = KGAttentionModule(6, 3, 4, n_heads=2, attention_width=8)
    copy = deserialize_module(KGAttentionModule(1, 1, 1, 2, 8), serialize_module(module, name="kg_attention"), cpu, io=io)
    assert copy.embeddings.weight.shape == (3, 4) and copy.width == 6
    with pytest.raises(ValueError, match=r"E131.*kg_attention: the saved weights cannot be read"):
        deserialize_module(module, b"not safetensors", cpu, io=io)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    # the layer's first format (shapes in the tensors, heads in the metadata) still loads
    first = save(state, metadata={"config": json.dumps({"format": "spacy_medllm.kg_attention", "version": 1, "n_heads": 2, "freeze_embeddings": True})})
    copy = deserialize_module(KGAttentionModule(1, 1, 1, 2, 8), first, cpu, io=io)
    assert all(torch.equal(copy.state_dict()[k], v) for k, v in state.items())
    newer = save(state, metadata={"config": json.dumps({"format": "spacy_medllm.kg_attention", "version": 2, "n_heads": 2, "freeze_embeddings": True})})
    with pytest.raises(ValueError, match="E133.*version 2 is newer"):
        deserialize_module(module, newer, cpu, io=io)
    with pytest.raises(ValueError, match="E020.*alias matcher format version 5"):
        AliasMatcher().from_bytes(srsly.msgpack_dumps({"format": "spacy_medllm.kg_alias_matcher", "version": 5}))


NER_TRAIN = [
    ("Clonidine caused low blood pressure .", [(0, 9, "Chemical"), (17, 35, "Disease")]),
    ("Hypotension after clonidine was seen .", [(0, 11, "Disease"), (18, 27, "Chemical")]),
    ("The rats were fine .", []),
]


def kg_ner_pipeline(tiny_bert, knowledge):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy_medllm.TransformerModel.v1", "name": str(tiny_bert),
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 16, "stride": 12}}})
    nlp.add_pipe("ner", config={"model": {
        "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False,
        "hidden_width": 16, "maxout_pieces": 2, "use_upper": False, "nO": None,
        "tok2vec": {
            "@architectures": "spacy_medllm.KGAttention.v1", "embeddings_path": str(knowledge / "emb"),
            "kb_path": str(knowledge / "kb"), "n_heads": 2, "attention_width": 8,
            "tok2vec": {"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
                        "pooling": {"@layers": "reduce_mean.v1"}, "upstream": "*"},
        }}})
    return nlp


def kg_layer_of(nlp):
    return next(node for node in nlp.get_pipe("ner").model.walk() if node.name == "kg_attention")


def test_pipeline_round_trip(tiny_bert, tmp_path):
    knowledge = tmp_path / "knowledge"
    KnowledgeBase(CONCEPTS).to_disk(knowledge / "kb")
    EmbeddingTable(numpy.random.RandomState(1).normal(size=(3, 8)).astype("float32"), ["D002", "D004", "D008"]).to_disk(knowledge / "emb")
    nlp = kg_ner_pipeline(tiny_bert, knowledge)
    examples = []
    for text, ents in NER_TRAIN:
        doc = nlp.make_doc(text)
        ref = nlp.make_doc(text)
        ref.ents = [ref.char_span(s, e, label=l) for s, e, l in ents]
        examples.append(Example(doc, ref))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, losses={})
    assert kg_layer_of(nlp).get_dim("nO") == 32
    nlp.to_disk(tmp_path / "nlp")
    shutil.rmtree(knowledge)  # spacy.load reads neither the table nor the KB
    loaded = spacy.load(tmp_path / "nlp")
    texts = [t for t, _ in NER_TRAIN]
    for a, b in zip(nlp.pipe(texts), loaded.pipe(texts)):
        assert [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
    docs = [nlp.get_pipe("transformer")(nlp.make_doc(t)) for t in texts]
    for x, y in zip(kg_layer_of(nlp).predict(docs), kg_layer_of(loaded).predict(docs)):
        assert numpy.array_equal(x, y)
    assert kg_layer_of(loaded).attrs["matcher"].aliases == kg_layer_of(nlp).attrs["matcher"].aliases
    # a nearly closed gate, but knowledge reaches the tokens that have candidates
    plain = kg_layer_of(loaded).get_ref("tok2vec").predict(docs)
    enhanced = kg_layer_of(loaded).predict(docs)
    assert numpy.array_equal(plain[2], enhanced[2]) and not numpy.array_equal(plain[0][0], enhanced[0][0])


def test_ner_trf_kg_config_builds(tiny_bert):
    config = util.load_config(ROOT / "configs" / "ner_trf_kg.cfg")
    config["components"]["transformer"]["model"]["name"] = str(tiny_bert)
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.pipe_names == ["transformer", "ner"]
    assert config["components"]["ner"]["model"]["tok2vec"]["@architectures"] == "spacy_medllm.KGAttention.v1"
    assert config["paths"]["kg_embeddings"] == "corpus/kg/embeddings"
