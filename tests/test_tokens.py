"""The shared schema (`spacy_medllm.tokens`): extensions, relation records, file helpers."""
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_medllm import io as medllm_io
from spacy_medllm import tokens
from spacy_medllm.corpus import base
from spacy_medllm.corpus.base import CorpusError
from spacy_medllm.io import FileFormatError, VocabularyError
from spacy_medllm.kg import read_triples
from spacy_medllm.tokens import (
    DOC_EXTENSIONS, SPAN_EXTENSIONS, get_relations, install_extensions, relation, set_offsets, text_crc,
)

TEXT = "Lithium-induced renal failure."


def tokenized(words, spaces):
    doc = Doc(spacy.blank("en").vocab, words=words, spaces=spaces)
    assert doc.text == TEXT
    return doc


def cut():
    """The reader's tokens: cut at every mention boundary."""
    return tokenized(["Lithium", "-", "induced", "renal", "failure", "."], [False, False, True, True, False, False])


def record_on_cut():
    doc = cut()
    install_extensions()
    doc._.medllm_rels = [relation("CIN", doc[0:1], doc[3:5], head_id="D008094", tail_id="D051437")]
    return doc


def texts(doc, records):
    return [(doc[r["head"][0]:r["head"][1]].text, doc[r["tail"][0]:r["tail"][1]].text) for r in records]


def test_relation_writes_token_and_character_offsets():
    doc = record_on_cut()
    assert doc._.medllm_rels == [{
        "head": [0, 1], "tail": [3, 5], "head_id": "D008094", "tail_id": "D051437", "label": "CIN", "score": 1.0,
        "head_char": [0, 7], "tail_char": [16, 29], "text_crc": text_crc(doc),
    }]
    # a concept-level record has no mentions, so no offsets of either kind
    assert relation("CID", head_id="D1", tail_id="D2") == {
        "head": None, "tail": None, "head_id": "D1", "tail_id": "D2", "label": "CID", "score": 1.0,
    }


@pytest.mark.parametrize("words,spaces,head,tail", [
    # the pipeline's tokenizer keeps "Lithium-induced" whole: the head widens to the token,
    # and the old tail offsets [3, 5] lie past the end of the Doc
    (["Lithium-induced", "renal", "failure", "."], [True, True, False, False], [0, 1], [1, 3]),
    # the old tail offsets [3, 5] are in range, but cover "failure ." here
    (["Lithium", "-induced", "renal", "failure", "."], [False, True, True, False, False], [0, 1], [2, 4]),
])
def test_records_survive_retokenization(tmp_path, words, spaces, head, tail):
    db = DocBin(store_user_data=True)
    db.add(record_on_cut())
    db.to_disk(tmp_path / "x.spacy")
    stored = list(DocBin().from_disk(tmp_path / "x.spacy").get_docs(spacy.blank("en").vocab))[0]
    other = tokenized(words, spaces)
    other._.medllm_rels = stored._.medllm_rels  # tuples, as a DocBin gives them back
    records = get_relations(other)
    assert [(r["head"], r["tail"], r["head_char"], r["tail_char"]) for r in records] == [(head, tail, [0, 7], [16, 29])]
    assert texts(other, records)[0][1] == "renal failure"
    assert (records[0]["head_id"], records[0]["tail_id"], records[0]["label"]) == ("D008094", "D051437", "CIN")
    # the stored records are not changed by reading them
    assert [list(r["head"]) + list(r["tail"]) for r in other._.medllm_rels] == [[0, 1, 3, 5]]


def test_matching_records_are_given_as_stored():
    doc = record_on_cut()
    assert get_relations(doc) == doc._.medllm_rels


def test_records_without_character_offsets_keep_their_token_offsets():
    doc = tokenized(["Lithium-induced", "renal", "failure", "."], [True, True, False, False])
    install_extensions()
    old = {"head": (0, 1), "tail": (3, 5), "head_id": None, "tail_id": None, "label": "CIN", "score": 1.0}
    doc._.medllm_rels = [old]
    assert get_relations(doc) == [{"head": [0, 1], "tail": [3, 5], "head_id": None, "tail_id": None, "label": "CIN", "score": 1.0}]


def test_character_offsets_of_another_text_give_way_to_moved_token_offsets():
    """A tool that changed the text and moved only the token offsets (leaving the character
    offsets of the old text) is trusted: the offsets are those of this text afterwards."""
    doc = Doc(spacy.blank("en").vocab, words=["Li", "-", "induced", "renal", "failure", "."], spaces=[False, False, True, True, False, False])
    moved = dict(record_on_cut()._.medllm_rels[0])  # head [0, 1], tail [3, 5]: right here too
    install_extensions()
    doc._.medllm_rels = [moved]
    records = get_relations(doc)
    assert texts(doc, records) == [("Li", "renal failure")]
    assert (records[0]["head_char"], records[0]["tail_char"], records[0]["text_crc"]) == ([0, 2], [11, 24], text_crc(doc))


def test_set_offsets():
    doc = cut()
    record = {"head": [3, 5], "tail": None, "head_char": [0, 1], "text_crc": 0}
    assert set_offsets(doc, record) == {"head": [3, 5], "tail": None, "head_char": [16, 29], "tail_char": None, "text_crc": text_crc(doc)}
    old = {"head": [3, 5], "tail": [0, 1]}
    assert set_offsets(doc, old) == {"head": [3, 5], "tail": [0, 1]}


def test_get_relations_installs_nothing(tmp_path):
    db = DocBin(store_user_data=True)
    db.add(record_on_cut())
    saved = {name: Doc.get_extension(name) for name in DOC_EXTENSIONS}
    try:
        Doc.remove_extension("medllm_rels")
        stored = list(db.get_docs(spacy.blank("en").vocab))[0]
        assert get_relations(stored)[0]["tail"] == [3, 5]  # read from the Doc's user data
        assert get_relations(cut()) == []
        assert not Doc.has_extension("medllm_rels")
    finally:
        install_extensions()
    assert {name: Doc.get_extension(name) for name in DOC_EXTENSIONS} == saved


def test_install_extensions_is_idempotent():
    install_extensions()
    first = {name: Doc.get_extension(name) for name in DOC_EXTENSIONS}, {name: Span.get_extension(name) for name in SPAN_EXTENSIONS}
    install_extensions()
    again = {name: Doc.get_extension(name) for name in DOC_EXTENSIONS}, {name: Span.get_extension(name) for name in SPAN_EXTENSIONS}
    assert again == first
    assert set(DOC_EXTENSIONS) == {"medllm_rels", "medllm_doc_id", "medllm_meta", "deid_text", "deid_offsets"}
    assert all(Doc.get_extension(name)[0] is None for name in DOC_EXTENSIONS)
    assert {name: Span.get_extension(name)[2:] for name in SPAN_EXTENSIONS} == SPAN_EXTENSIONS


def test_a_plain_span_extension_of_a_linker_name_is_replaced_and_stays_readable():
    doc = cut()
    Span.set_extension("kb_concept", default=None, force=True)
    try:
        doc[0:1]._.kb_concept = ("D008094", "Lithium")
        install_extensions()
        assert Span.get_extension("kb_concept")[2] is SPAN_EXTENSIONS["kb_concept"][0]
        assert doc[0:1]._.kb_concept == ["D008094", "Lithium"]
    finally:
        install_extensions()


def test_corpus_base_names_stay_importable():
    for name in ("NIL", "MENTIONS_KEY", "split_kb_id", "get_relations", "install_extensions", "relation"):
        assert getattr(base, name) is getattr(tokens, name), name
    from spacy_medllm.corpus.pubtator import NCBI_LABELS
    from spacy_medllm.relations.instances import concept_pairs, create_relation_corpus, make_type_pairs

    assert NCBI_LABELS is tokens.NCBI_LABELS
    assert (create_relation_corpus.__module__, make_type_pairs.__module__, concept_pairs.__module__) == (
        "spacy_medllm.relations.reader", "spacy_medllm.relations.pairs", "spacy_medllm.relations.records")


def test_file_errors_name_file_line_reason(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    reason = "not valid utf-8 at byte 6 (invalid continuation byte); re-encode the file as UTF-8"
    with pytest.raises(FileFormatError) as err:
        medllm_io.read_text(path)
    assert (type(err.value), str(err.value)) == (FileFormatError, f"[E001] {path}, line 2: {reason}")
    # the corpus helpers raise the corpus' own class, the same message
    with pytest.raises(CorpusError) as err:
        list(base.iter_lines(path))
    assert str(err.value) == f"[E001] {path}, line 2: {reason}"
    with pytest.raises(FileNotFoundError, match=r"\[E003\] .*missing.txt: file not found"):
        medllm_io.read_text(tmp_path / "missing.txt")
    assert list(medllm_io.iter_lines(_write(tmp_path / "a.txt", "a\r\n\n  \nb"))) == [(1, "a"), (4, "b")]


def test_knowledge_graph_errors_are_not_corpus_errors(tmp_path):
    with pytest.raises(VocabularyError) as err:
        read_triples(_write(tmp_path / "triples.tsv", "a\tr\tb\na\tr\n"))
    assert not isinstance(err.value, CorpusError)
    assert (err.value.line, err.value.reason) == (2, "expected 3 non-empty tab-separated columns (head, relation, tail), found 'a\\tr'")


def _write(path, text):
    path.write_text(text, encoding="utf8")
    return path
