"""Nothing from the training data travels inside a saved relation model unless asked for.

A tiny pipeline with a relation prior (PairRepresentation.v2) is trained on inline Docs
with invented words, saved with `nlp.to_disk`, and every byte of every saved file is
searched for the document texts, the mention strings (as written and lowercased), the
context words and hashes of the document texts. With the opt-in (`text_keys = true` in
`[initialize.components.medllm_rel]`) the mention keys of the entities without ids must be
there, so the search is known to find what it looks for.
"""
import hashlib
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_medllm.relations.knowledge import RelationKnowledge
from spacy_medllm.tokens import install_extensions, relation

MODEL = {
    "@architectures": "spacy_medllm.RelationModel.v1",
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2", "pretrained_vectors": None, "width": 16, "depth": 1,
        "embed_size": 200, "window_size": 1, "maxout_pieces": 2, "subword_features": True,
    },
    "pair_representation": {
        "@architectures": "spacy_medllm.PairRepresentation.v2", "hidden_width": 16, "distance_width": 4,
        "knowledge_width": 4, "depth": 0, "dropout": 0.0, "n_entity_labels": 8,
    },
    "classifier": {"@architectures": "spacy_medllm.RelationClassifier.v1", "hidden_width": 16, "dropout": 0.0},
}
CANDIDATES = {"@misc": "spacy_medllm.type_pairs.v1", "pairs": [["Drug", "Effect"]], "level": "mention", "max_pairs": 100, "max_distance": None}

# (text, [(start, end, label, kb_id)], [(label, head entity, tail entity)]); every word invented.
# Zorblaxine and Quintrophy have ids; Vexamoril and Glimmerosis have none.
DOCS = [
    ("Zorblaxine flummoxed the Quintrophy of a wibbleton .",
     [(0, 10, "Drug", "X901"), (25, 35, "Effect", "Y901")], [("ADE", 0, 1)]),
    ("Vexamoril gave Glimmerosis to a snorklewise farmer .",
     [(0, 9, "Drug", ""), (15, 26, "Effect", "")], [("ADE", 0, 1)]),
    ("Zorblaxine and Vexamoril spared the Glimmerosis of a plonquist .",
     [(0, 10, "Drug", "X901"), (15, 24, "Drug", ""), (36, 47, "Effect", "")], [("ADE", 1, 2)]),
]
MENTIONS = ["Zorblaxine", "Quintrophy", "Vexamoril", "Glimmerosis"]
CONTEXT = ["flummoxed", "wibbleton", "snorklewise", "plonquist"]


def needles():
    """What must not be in a saved file: document texts, their hashes, mentions, context words."""
    out = {}
    for text, _, _ in DOCS:
        data = text.encode("utf8")
        out[f"text {text[:12]}"] = data
        for algo in ("md5", "sha1", "sha256"):
            digest = hashlib.new(algo, data).hexdigest()
            out[f"{algo} {text[:12]}"] = digest.encode()
            out[f"{algo}[:16] {text[:12]}"] = digest[:16].encode()
        out[f"blake2b {text[:12]}"] = hashlib.blake2b(data, digest_size=16).hexdigest().encode()
    for word in MENTIONS + CONTEXT:
        out[word] = word.encode()
        out[word.lower()] = word.lower().encode()
    return out


def make_docs(make_doc):
    install_extensions()
    examples = []
    for text, ents, rels in DOCS:
        ref = make_doc(text)
        spans = [ref.char_span(s, e, label=label, kb_id=kb) for s, e, label, kb in ents]
        ref.ents = spans
        ref._.medllm_rels = [relation(label, spans[h], spans[t]) for label, h, t in rels]
        examples.append(Example(make_doc(text), ref))
    return examples


def train(text_keys=None, separate_vocab=True):
    """A trained tiny pipeline. The Docs come from another Vocab unless `separate_vocab`
    is false: spaCy's own string store (vocab/strings.json) records every token string the
    pipeline's Vocab has tokenized, whatever the components keep (see
    test_spacy_string_store_is_the_only_other_holder)."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_rel", config={"model": MODEL, "candidates": CANDIDATES})
    if text_keys is not None:
        nlp.config["initialize"]["components"]["medllm_rel"] = {"text_keys": text_keys}
    examples = make_docs(spacy.blank("en").make_doc if separate_vocab else nlp.make_doc)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(5):
        nlp.update(examples, sgd=optimizer, losses={})
    return nlp


def found_in(path: Path):
    """{needle name: sorted relative paths of the files holding it}."""
    files = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    assert "medllm_rel/knowledge" in files and "medllm_rel/model" in files and "config.cfg" in files
    return {name: sorted(f for f, data in files.items() if needle in data) for name, needle in needles().items() if any(needle in d for d in files.values())}


@pytest.fixture(scope="module")
def default_nlp():
    return train()


def test_default_saves_no_training_text(default_nlp, tmp_path):
    default_nlp.to_disk(tmp_path / "nlp")
    assert found_in(tmp_path / "nlp") == {}
    # the prior is there, keyed by concept ids only; the entities without ids have none
    know = srsly.read_msgpack(tmp_path / "nlp" / "medllm_rel" / "knowledge")
    assert sorted(know) == ["entities", "pairs", "parents", "text_keys"] and know["text_keys"] is False
    assert sorted(map(tuple, know["pairs"])) == [("X901", "Y901", 1, 1)]
    assert sorted(map(tuple, know["entities"])) == [("head", "X901", 2, 1), ("tail", "Y901", 1, 1)]


def test_bytes_hold_no_training_text(default_nlp):
    data = default_nlp.get_pipe("medllm_rel").to_bytes()
    assert [name for name, needle in needles().items() if needle in data] == []
    assert b"counted" not in data


def test_leave_one_out_is_training_state_only(default_nlp, tmp_path):
    rel = default_nlp.get_pipe("medllm_rel")
    assert len(rel.knowledge.counted) == 3  # in memory while training: the leave-one-out works
    default_nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp").get_pipe("medllm_rel")
    assert loaded.knowledge.counted == set()
    assert loaded.knowledge.pairs == rel.knowledge.pairs and loaded.knowledge.entities == rel.knowledge.entities
    assert loaded.knowledge.text_keys is False


def test_opt_in_saves_mention_keys(tmp_path):
    nlp = train(text_keys=True)
    nlp.to_disk(tmp_path / "nlp")
    # the mention texts of the entities without ids, lowercased, in the knowledge file only;
    # never the texts of the entities with ids, the documents or their hashes
    assert found_in(tmp_path / "nlp") == {"vexamoril": ["medllm_rel/knowledge"], "glimmerosis": ["medllm_rel/knowledge"]}
    know = srsly.read_msgpack(tmp_path / "nlp" / "medllm_rel" / "knowledge")
    assert know["text_keys"] is True
    assert sorted(map(tuple, know["pairs"])) == [("X901", "Y901", 1, 1), ("X901", "text:glimmerosis", 1, 0), ("text:vexamoril", "text:glimmerosis", 2, 2)]
    assert spacy.load(tmp_path / "nlp").get_pipe("medllm_rel").knowledge.text_keys is True


def test_spacy_string_store_is_the_only_other_holder(tmp_path):
    """Docs tokenized by the pipeline's own Vocab put their token strings into spaCy's
    string store, which nlp.to_disk saves as vocab/strings.json: single tokens, never a
    document text or a hash. Nothing of this package adds to it."""
    nlp = train(separate_vocab=False)
    nlp.to_disk(tmp_path / "nlp")
    found = found_in(tmp_path / "nlp")
    assert set(found) == {w for w in MENTIONS + CONTEXT} | {w.lower() for w in MENTIONS}
    assert {f for files in found.values() for f in files} == {"vocab/strings.json"}


def test_old_knowledge_files_still_load():
    """A knowledge file saved before the setting existed (hashes of the counted Docs, text
    keys): the counts load, keyed as they were counted; the hashes are dropped."""
    old = {"pairs": [["X1", "text:foo", 3, 1]], "entities": [["tail", "text:foo", 3, 1]], "counted": ["0123456789abcdef"], "parents": {}}
    know = RelationKnowledge().from_bytes(srsly.msgpack_dumps(old))
    assert (know.text_keys, know.counted, know.pairs) == (True, set(), {("X1", "text:foo"): [3, 1]})
    assert "counted" not in know.to_dict()
    assert RelationKnowledge().from_dict({}).text_keys is False


@pytest.mark.parametrize("data,reason", [
    (b"\xc1\xc1garbage", "not msgpack"),
    (srsly.msgpack_dumps([1, 2]), "expected a mapping, found list"),
    (srsly.msgpack_dumps({"pairs": [["X1", "Y1", "many"]]}), "malformed counts or hierarchy"),
])
def test_corrupted_knowledge_file(tmp_path, data, reason):
    path = tmp_path / "knowledge"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"\[E050\] .*knowledge: not a relation knowledge file") as err:
        RelationKnowledge().from_disk(path)
    assert reason in str(err.value)


def test_corrupted_knowledge_file_in_a_pipeline(default_nlp, tmp_path):
    default_nlp.to_disk(tmp_path / "nlp")
    (tmp_path / "nlp" / "medllm_rel" / "knowledge").write_bytes(b"\x00\x01truncated")
    with pytest.raises(ValueError, match=r"\[E050\] .*medllm_rel/knowledge: not a relation knowledge file"):
        spacy.load(tmp_path / "nlp")


def test_corrupted_relation_model_file(default_nlp, tmp_path):
    """The relation model's weights: garbage or a truncated file raise E032 naming the file."""
    default_nlp.to_disk(tmp_path / "nlp")
    model = tmp_path / "nlp" / "medllm_rel" / "model"
    data = model.read_bytes()
    for broken in (data[: len(data) // 2], b"\x00garbage"):
        model.write_bytes(broken)
        with pytest.raises(ValueError, match=r"\[E032\] medllm_rel: the relation model could not be loaded from .*nlp/medllm_rel/model"):
            spacy.load(tmp_path / "nlp")
