"""The torch-backed layers (linker scorer, relation pair encoder, KG attention) save their
weights as safetensors with their shapes: exact round trips through bytes and disk, no
pickle in what is saved, the older `torch.save` format still read, and coded errors for
a damaged weights file."""
import io
import sys

import numpy
import pytest
import spacy
import srsly
import torch
from safetensors.torch import load as load_safetensors
from spacy.training import Example
from thinc.api import Adam, fix_random_seed

from spacy_medllm.kb import KnowledgeBase
from spacy_medllm.layers.torch_io import META_KEY, _safetensors_metadata, deserialize_module, module_of, serialize_module
from spacy_medllm.tokens import install_extensions

from test_kg import CONCEPTS as KG_CONCEPTS
from test_kg import TEXTS as KG_TEXTS
from test_linker import CONCEPTS, TRAIN, gold_doc
from test_relations import CID_TRAIN, cid_doc, make_nlp as make_rel_nlp, rels_of, train as train_rel

HASH_TOK2VEC = {
    "@architectures": "spacy.HashEmbedCNN.v2", "width": 16, "depth": 1, "embed_size": 200, "window_size": 1,
    "maxout_pieces": 2, "subword_features": False, "pretrained_vectors": None,
}
LINKER_TEXT = "Naloxone worsened the hypotensive state after clonidine ."
LINKER_ENTS = [(0, 8, "Chemical"), (22, 33, "Disease"), (46, 55, "Chemical")]
REL_TEXT, REL_ENTS, _ = CID_TRAIN[0]


def linker_pipeline(with_tok2vec: bool):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    model = {"@architectures": "spacy_medllm.LinkerModel.v2", "n_features": 12, "hidden_width": 16, "n_concept_rows": 64}
    if with_tok2vec:
        model["tok2vec"] = HASH_TOK2VEC
    linker = nlp.add_pipe("medllm_linker", config={"model": model})
    linker.set_kb(KnowledgeBase(CONCEPTS))
    return nlp


def train_linker(with_tok2vec: bool):
    nlp = linker_pipeline(with_tok2vec)
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in TRAIN]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(30):
        nlp.update(examples, sgd=optimizer, losses={})
    return nlp


@pytest.fixture(scope="module")
def linker_nlp():
    return train_linker(False)


@pytest.fixture(scope="module")
def linker_context_nlp():
    """The linker with a tok2vec: the scorer's context term, its width set at initialize."""
    return train_linker(True)


@pytest.fixture(scope="module")
def rel_nlp():
    install_extensions()
    nlp, _ = make_rel_nlp()
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
    return train_rel(nlp, examples, 20)


@pytest.fixture(scope="module")
def kg_nlp(tmp_path_factory):
    from spacy_medllm.kg import EmbeddingTable

    root = tmp_path_factory.mktemp("kg_io")
    KnowledgeBase(KG_CONCEPTS).to_disk(root / "kb")
    vectors = numpy.random.RandomState(0).normal(size=(5, 8)).astype("float32")
    EmbeddingTable(vectors, ["D002", "D004", "D008", "D009", "semtype:x"], {"model": "TransE"}).to_disk(root / "emb")
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec", config={"model": {
        "@architectures": "spacy_medllm.KGAttention.v1", "tok2vec": HASH_TOK2VEC, "n_heads": 2, "attention_width": 8,
        "embeddings_path": str(root / "emb"), "kb_path": str(root / "kb"),
    }})
    nlp.initialize()
    return nlp


def linker_out(nlp):
    doc = nlp.make_doc(LINKER_TEXT)
    doc.ents = [doc.char_span(s, e, label=l) for s, e, l in LINKER_ENTS]
    doc = nlp.get_pipe("medllm_linker")(doc)
    return [(ent.kb_id_, ent._.kb_candidates) for ent in doc.ents]


def rel_out(nlp):
    doc = cid_doc(nlp, REL_TEXT, REL_ENTS)
    return rels_of(nlp.get_pipe("medllm_rel")(doc), with_score=True)


def kg_out(nlp):
    return [nlp(text).tensor.tolist() for text in KG_TEXTS]


CASES = {
    "linker": ("linker_nlp", "medllm_linker", linker_out),
    "linker_context": ("linker_context_nlp", "medllm_linker", linker_out),
    "relations": ("rel_nlp", "medllm_rel", rel_out),
    "kg_attention": ("kg_nlp", "tok2vec", kg_out),
}


@pytest.fixture(params=list(CASES))
def case(request):
    fixture, name, out = CASES[request.param]
    return request.getfixturevalue(fixture), name, out


def weight_states(model_bytes: bytes):
    """The module state of every torch shim in a thinc model's bytes."""
    msg = srsly.msgpack_loads(model_bytes)
    return [srsly.msgpack_loads(shim)["state"] for node in msg["shims"] for shim in node]


def rewrite_states(model_bytes: bytes, rewrite) -> bytes:
    msg = srsly.msgpack_loads(model_bytes)
    for node in msg["shims"]:
        for i, shim in enumerate(node):
            shim_msg = srsly.msgpack_loads(shim)
            shim_msg["state"] = rewrite(shim_msg["state"])
            node[i] = srsly.msgpack_dumps(shim_msg)
    return srsly.msgpack_dumps(msg)


def as_torch_save(state: bytes) -> bytes:
    """What thinc's default PyTorchWrapper serializer wrote: `torch.save` of the state dict."""
    buffer = io.BytesIO()
    torch.save(load_safetensors(state), buffer)
    return buffer.getvalue()


def test_bytes_round_trip_exact(case):
    nlp, name, out = case
    expected = out(nlp)
    fresh = spacy.blank("en", config=nlp.config)
    fresh.get_pipe(name).from_bytes(nlp.get_pipe(name).to_bytes())
    assert out(fresh) == expected


def test_disk_round_trip_exact(case, tmp_path):
    nlp, name, out = case
    expected = out(nlp)
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert out(loaded) == expected
    # and saved again, the weights are the same bytes
    assert weight_states(loaded.get_pipe(name).model.to_bytes()) == weight_states(nlp.get_pipe(name).model.to_bytes())


def test_weights_are_safetensors_with_shapes(case, tmp_path):
    nlp, name, _ = case
    nlp.to_disk(tmp_path / "nlp")
    data = (tmp_path / "nlp" / name / "model").read_bytes()
    assert b"torch._utils" not in data and b"_rebuild_tensor" not in data
    states = weight_states(data)
    assert len(states) == 1
    state = states[0]
    assert not state.startswith(b"PK")  # not torch.save's zip archive
    # safetensors: an 8-byte header length, a JSON header, then raw tensor bytes and nothing else
    n = int.from_bytes(state[:8], "little")
    header = srsly.json_loads(state[8 : 8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert 8 + n + max(v["data_offsets"][1] for v in tensors.values()) == len(state)
    info = srsly.json_loads(_safetensors_metadata(state)[META_KEY])
    assert info["format"] == "spacy_medllm.torch_module" and info["version"] == 1
    wrapper = next(node for node in nlp.get_pipe(name).model.walk() if node.shims)
    assert set(load_safetensors(state)) == set(module_of(wrapper).state_dict())
    if name == "medllm_linker":
        assert info["config"]["n_features"] == 12 and info["config"]["hidden"] == 16
    elif name == "tok2vec":
        assert info["config"]["n_concepts"] == 5 and info["config"]["embedding_dim"] == 8 and info["config"]["width"] == 16


@pytest.mark.parametrize("case", ["linker", "linker_context", "relations"], indirect=True)
def test_torch_save_format_still_loads(case, tmp_path):
    nlp, name, out = case
    expected = out(nlp)
    nlp.to_disk(tmp_path / "nlp")
    path = tmp_path / "nlp" / name / "model"
    path.write_bytes(rewrite_states(path.read_bytes(), as_torch_save))
    assert weight_states(path.read_bytes())[0].startswith(b"PK")
    assert out(spacy.load(tmp_path / "nlp")) == expected


def test_pickled_code_is_refused(tmp_path):
    """`torch.load(weights_only=True)` reads tensors only: a pickle that would run code is an error."""
    nlp = linker_pipeline(False)
    nlp.get_pipe("medllm_linker").initialize(lambda: [], nlp=nlp)
    nlp.to_disk(tmp_path / "nlp")
    path = tmp_path / "nlp" / "medllm_linker" / "model"

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    def evil(_):
        buffer = io.BytesIO()
        torch.save({"x": Evil()}, buffer)
        return buffer.getvalue()

    path.write_bytes(rewrite_states(path.read_bytes(), evil))
    with pytest.raises(ValueError, match=r"E134.*medllm_linker: the model could not be loaded from .*model: .*E131.*medllm_linker_model: the saved weights cannot be read"):
        spacy.load(tmp_path / "nlp")


@pytest.mark.parametrize("case", list(CASES), indirect=True)
def test_corrupted_weights_give_coded_error(case, tmp_path):
    nlp, name, _ = case
    nlp.to_disk(tmp_path / "nlp")
    path = tmp_path / "nlp" / name / "model"
    path.write_bytes(rewrite_states(path.read_bytes(), lambda state: state[: len(state) // 2]))
    expected = {
        "medllm_linker": r"E134.*medllm_linker: the model could not be loaded from .*medllm_linker.model: .*E131.*medllm_linker_model",
        "medllm_rel": r"E032.*medllm_rel: the relation model could not be loaded from .*medllm_rel.model: .*E131.*medllm_pair_representation",
        "tok2vec": r"E131.*kg_attention: the saved weights cannot be read",
    }[name]
    with pytest.raises(ValueError, match=expected):
        spacy.load(tmp_path / "nlp")


def test_weights_of_another_module_or_shape_give_coded_errors(linker_nlp, rel_nlp):
    """Weights saved for another module, or not of the saved shapes, are refused, named."""
    from safetensors.torch import save

    cpu = torch.device("cpu")
    scorer = linker_nlp.get_pipe("medllm_linker").model.get_ref("scorer")
    pairs = rel_nlp.get_pipe("medllm_rel").model.get_ref("pair_representation").layers[0]
    other = serialize_module(module_of(pairs), name="medllm_pair_representation")
    with pytest.raises(ValueError, match=r"E132.*medllm_linker_model: .*weights of 'medllm_pair_representation'"):
        deserialize_module(module_of(scorer), other, cpu, io=scorer.attrs["torch_io"])
    data = serialize_module(module_of(scorer), name="medllm_linker_model")
    info = srsly.json_loads(_safetensors_metadata(data)[META_KEY])
    info["config"]["hidden"] = 8
    wrong = save(load_safetensors(data), metadata={META_KEY: srsly.json_dumps(info)})
    with pytest.raises(ValueError, match=r"(?s)E133.*medllm_linker_model: the saved weights do not fit the module: .*size mismatch"):
        deserialize_module(module_of(scorer), wrong, cpu, io=scorer.attrs["torch_io"])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status; glibc's heap")
def test_linker_updates_keep_resident_memory_flat():
    """thinc's torch shim gives each updated parameter a new tensor; glibc kept the freed
    buffers of the 65,536-row concept table resident (~2-7 MB a step, until the OOM killer);
    `finish_update_scaled` hands them back."""
    from thinc.api import Model

    from spacy_medllm.layers.optim import finish_update_scaled
    from spacy_medllm.linker.model import LinkerBatch, build_linker_model

    fix_random_seed(0)
    nlp = spacy.blank("en")
    docs = [nlp.make_doc("word " * 50) for _ in range(4)]
    vectors = numpy.random.rand(50, 96).astype("float32")
    tok2vec = Model("fixed", lambda model, docs, is_train: ([vectors for _ in docs], lambda d: docs), dims={"nO": 96})
    model = build_linker_model(tok2vec, 6, 64, 65536)
    model.initialize()
    optimizer = Adam(0.005)
    rng = numpy.random.default_rng(0)

    def step():
        spans = [(i % 4, i % 40, i % 40 + 2) for i in range(100)]
        batch = LinkerBatch(spans=spans, feats=rng.random((100, 31, 6), dtype="float32"),
                            rows=rng.integers(0, 65536, (100, 31)), mask=numpy.ones((100, 31), dtype=bool))
        logits, backprop = model.begin_update((docs, batch))
        backprop(model.ops.alloc2f(*logits.shape) + 0.01)
        finish_update_scaled(model, optimizer, 1.0)

    for _ in range(20):
        step()
    before = _rss_mb()
    for _ in range(150):
        step()
    assert _rss_mb() - before < 100
