"""PubTator reader: ids, composite and overlapping mentions, relations, quirks, malformed input."""
import warnings

import pytest
from spacy.tokens import DocBin

from spacy_medllm.corpus.base import CorpusError, ReadStats
from spacy_medllm.corpus.convert import blank_biomedical
from spacy_medllm.corpus.pubtator import read_pubtator
from spacy_medllm.tokens import NCBI_LABELS, NIL, get_relations, split_kb_id

from corpus_paths import require_corpus

GOOD = (
    "9000001|t|Propofol blunted the pressor responses seen with lidocaine.\n"
    "9000001|a|In rats clonidine caused hypotension; nalozone did not.\n"
    "9000001\t0\t8\tPropofol\tChemical\tD009270\n"
    "9000001\t49\t58\tlidocaine\tChemical\tD003000\n"
    "9000001\t68\t77\tclonidine\tChemical\tD003000\n"
    "9000001\t85\t96\thypotension\tDisease\tD007022\n"
    "9000001\t98\t106\tnalozone\tChemical\t-1\n"
    "9000001\tCID\tD003000\tD007022\n"
    "\n"
    "9000002|t|Cardiac and hepatic toxicity after [3H]-naloxone.\n"
    "9000002|a|Breast or ovarian cancer.\n"
    "9000002\t0\t28\tCardiac and hepatic toxicity\tDisease\tD014786|D006311\tCardiac toxicity|hepatic toxicity\n"
    "9000002\t12\t28\thepatic toxicity\tDisease\tD006311\n"
    "9000002\t40\t48\tnaloxone\tChemical\tD009270\n"
    "9000002\t50\t74\tBreast or ovarian cancer\tSpecificDisease\tD001943+OMIM:167000\n"
    "\n"
)


@pytest.fixture
def nlp():
    return blank_biomedical()


@pytest.fixture(scope="module")
def shared_corpus():
    """../shared/corpus: a skip naming the path locally, a failure under CI=true."""
    return require_corpus()


def write(tmp_path, text, name="sample.txt", encoding="utf8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_good_sample(tmp_path, nlp):
    stats = ReadStats()
    docs = list(read_pubtator(write(tmp_path, GOOD), nlp, stats=stats))
    assert (stats.documents, stats.mentions, stats.relations) == (2, 9, 1)
    d1, d2 = docs
    assert d1._.medllm_doc_id == "9000001"
    assert d1.text == "Propofol blunted the pressor responses seen with lidocaine. In rats clonidine caused hypotension; nalozone did not."
    assert [(e.text, e.label_, e.kb_id_) for e in d1.ents] == [
        ("Propofol", "Chemical", "D009270"), ("lidocaine", "Chemical", "D003000"),
        ("clonidine", "Chemical", "D003000"), ("hypotension", "Disease", "D007022"),
        ("nalozone", "Chemical", NIL),
    ]
    assert d1._.medllm_rels == [
        {"head": None, "tail": None, "head_id": "D003000", "tail_id": "D007022", "label": "CID", "score": 1.0}
    ]
    # overlapping mentions: all kept in spans["mentions"], the longest in doc.ents
    assert [s.text for s in d2.spans["mentions"]] == [
        "Cardiac and hepatic toxicity", "hepatic toxicity", "naloxone", "Breast or ovarian cancer"
    ]
    assert [e.text for e in d2.ents] == ["Cardiac and hepatic toxicity", "naloxone", "Breast or ovarian cancer"]
    # "[3H]-naloxone": the mention inside a token is still a token span
    assert d2.ents[1].kb_id_ == "D009270"
    assert split_kb_id(d2.ents[0].kb_id_) == ["D014786", "D006311"]
    assert split_kb_id(d2.ents[2].kb_id_) == ["D001943", "OMIM:167000"]
    assert split_kb_id(NIL) == [] and split_kb_id("") == []


def test_label_map_keeps_source_type_in_mentions(tmp_path, nlp):
    doc = list(read_pubtator(write(tmp_path, GOOD), nlp, ent_label_map=NCBI_LABELS))[1]
    assert doc.ents[2].label_ == "Disease"
    assert doc.spans["mentions"][3].label_ == "SpecificDisease"


def test_docbin_round_trip_keeps_ids_and_relations(tmp_path, nlp):
    docs = list(read_pubtator(write(tmp_path, GOOD), nlp))
    db = DocBin(store_user_data=True, docs=docs)
    back = list(DocBin().from_bytes(db.to_bytes()).get_docs(nlp.vocab))
    for a, b in zip(docs, back):
        assert [(e.start, e.end, e.label_, e.kb_id_) for e in a.ents] == [(e.start, e.end, e.label_, e.kb_id_) for e in b.ents]
        assert [(s.start, s.end, s.label_) for s in a.spans["mentions"]] == [(s.start, s.end, s.label_) for s in b.spans["mentions"]]
        assert get_relations(b) == get_relations(a) == a._.medllm_rels
        assert b._.medllm_doc_id == a._.medllm_doc_id


def test_duplicate_document_and_text_mismatch(tmp_path, nlp):
    dup = (
        "1|t|Machado-Joseph disease.\n1|a|MJD  .\n1\t0\t22\tMachado-Joseph disease  \tSpecificDisease\tD017827\n\n"
        "1|t|Machado-Joseph disease.\n1|a|MJD  .\n1\t0\t22\tMachado-Joseph disease\tSpecificDisease\tD017827\n\n"
    )
    stats = ReadStats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = list(read_pubtator(write(tmp_path, dup), nlp, stats=stats))
    assert len(docs) == 1
    assert docs[0].ents[0].text == "Machado-Joseph disease"  # the offsets win
    assert stats.notes == {"mention_text_mismatch": 1, "duplicate_documents_dropped": 1}
    assert [str(w.message) for w in caught] == [
        f"[W002] {tmp_path / 'sample.txt'}, line 3: mention text 'Machado-Joseph disease  ' differs from the text at its offsets 'Machado-Joseph disease'; the offsets are kept",
        f"[W003] {tmp_path / 'sample.txt'}: document 1 occurs more than once; the later copy (line 5) is dropped",
    ]


@pytest.mark.parametrize(
    "line,reason",
    [
        ("9\t0\t4\tAcne", "expected at least 5 tab-separated columns, found 4 (truncated line?)"),
        ("9\tx\t4\tAcne\tDisease\tD1", "offsets 'x', '4' are not integers"),
        ("9\t0\t400\tAcne\tDisease\tD1", "offsets 0-400 lie outside the document text (length 22) or are empty"),
        ("9\t5\t5\tAcne\tDisease\tD1", "offsets 5-5 lie outside the document text (length 22) or are empty"),
        ("8\t0\t4\tAcne\tDisease\tD1", "line belongs to document '8' inside the block of '9' (missing blank line?)"),
    ],
)
def test_malformed_mention_line(tmp_path, nlp, line, reason):
    text = f"9|t|Acne vulgaris.\n9|a|Severe.\n9\t0\t4\tAcne\tDisease\tD000152\n{line}\n\n"
    path = write(tmp_path, text)
    with pytest.raises(CorpusError) as err:
        list(read_pubtator(path, nlp))
    assert (err.value.path, err.value.line, err.value.reason) == (str(path), 4, reason)
    assert str(err.value) == f"[E001] {path}, line 4: {reason}"
    # skipping: the bad line is counted, the rest of the document is kept
    stats = ReadStats()
    with pytest.warns(UserWarning, match="W001"):
        docs = list(read_pubtator(path, nlp, on_error="skip", stats=stats))
    assert [e.text for e in docs[0].ents] == ["Acne"]
    assert stats.skipped == {"line": 1}


def test_truncated_document(tmp_path, nlp):
    path = write(tmp_path, "9|t|Acne vulgaris.\n\n10|t|Fine.\n10|a|Text.\n")
    with pytest.raises(CorpusError, match=r"line 1: .*truncated document"):
        list(read_pubtator(path, nlp))
    stats = ReadStats()
    with pytest.warns(UserWarning):
        docs = list(read_pubtator(path, nlp, on_error="skip", stats=stats))
    assert [d._.medllm_doc_id for d in docs] == ["10"] and stats.skipped == {"document": 1}


def test_wrong_encoding(tmp_path, nlp):
    path = write(tmp_path, "9|t|Caf\u00e9 disease.\n9|a|x\n", encoding="latin-1")
    with pytest.raises(CorpusError, match=r"line 1: not valid utf-8 at byte 7"):
        list(read_pubtator(path, nlp))


def test_missing_file(tmp_path, nlp):
    with pytest.raises(FileNotFoundError, match="E003"):
        list(read_pubtator(tmp_path / "nope.txt", nlp))


def test_bc5cdr_counts(shared_corpus, nlp):
    expected = {
        "CDR_TrainingSet.PubTator.txt": (500, 5203, 4182, 1038, 76),
        "CDR_DevelopmentSet.PubTator.txt": (500, 5347, 4244, 1012, 59),
        "CDR_TestSet.PubTator.txt": (500, 5385, 4424, 1066, 91),
    }
    for name, (n_docs, n_chem, n_dis, n_rel, n_nil) in expected.items():
        stats = ReadStats()
        docs = list(read_pubtator(require_corpus("bc5cdr", name), nlp, stats=stats))
        assert (stats.documents, stats.labels["Chemical"], stats.labels["Disease"], stats.relations) == (n_docs, n_chem, n_dis, n_rel)
        assert sum(e.kb_id_ == NIL for d in docs for e in d.spans["mentions"]) == n_nil
        assert stats.skipped == {} and stats.notes == {}


def test_ncbi_disease_quirks(shared_corpus, nlp):
    stats = ReadStats()
    with pytest.warns(UserWarning) as caught:
        docs = list(read_pubtator(require_corpus("ncbi_disease", "NCBItrainset_corpus.txt"), nlp, ent_label_map=NCBI_LABELS, stats=stats))
    assert stats.documents == 592  # 593 abstracts, PMID 8528200 twice
    assert stats.notes == {"mention_text_mismatch": 1, "duplicate_documents_dropped": 1}
    path = require_corpus("ncbi_disease", "NCBItrainset_corpus.txt")
    assert [str(w.message) for w in caught] == [
        f"[W002] {path}, line 3249: mention text 'generalized epilepsy and febrile seizures \" plus \"  ' differs from the text at its offsets 'generalized epilepsy and febrile seizures \" plus \"'; the offsets are kept",
        f"[W003] {path}: document 8528200 occurs more than once; the later copy (line 4557) is dropped",
    ]
    assert {e.label_ for d in docs for e in d.ents} == {"Disease"}


def test_missing_corpus_is_named(monkeypatch):
    """Locally a missing corpus skips, naming the path; under CI=true it fails, naming it."""
    import corpus_paths

    missing = corpus_paths.SHARED_CORPUS / "no_such_corpus" / "x.txt"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"corpus file {missing} not found"):
        require_corpus("no_such_corpus", "x.txt")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"corpus file {missing} not found .*CI=true: a missing corpus is a failure"):
        require_corpus("no_such_corpus", "x.txt")
