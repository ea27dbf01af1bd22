"""ADE v2, brat/Chia and MIMIC-style CSV readers on inline samples, the real files, and bad input."""
import zipfile

import pytest

from spacy_medllm.corpus.ade import read_ade
from spacy_medllm.corpus.base import CorpusError, ReadStats
from spacy_medllm.corpus.brat import read_brat_dir, read_chia
from spacy_medllm.corpus.convert import blank_biomedical
from spacy_medllm.corpus.mimic import read_mimic_notes
from spacy_medllm.corpus.splits import split_of
from spacy_medllm.tokens import get_relations, text_crc

from corpus_paths import require_corpus

S1 = "Intravenous vancomycin-induced nephropathy."
S2 = "Ototoxicity after azithromycin, then more azithromycin caused ototoxicity again."


@pytest.fixture
def nlp():
    return blank_biomedical()


@pytest.fixture(scope="module")
def shared_corpus():
    """../shared/corpus: a skip naming the path locally, a failure under CI=true."""
    return require_corpus()


def ade_dir(tmp_path, ae=None, dose=None, neg=None):
    ae = ae if ae is not None else (
        f"10030778|{S1}|nephropathy|41|52|vancomycin|22|32\n"
        # S2 starts at document offset 100: the second "azithromycin" and "ototoxicity" are meant
        f"10030778|{S2}|ototoxicity|162|173|azithromycin|142|154\n"
    )
    dose = dose if dose is not None else "10327035|Methotrexate 1500 mg/m2 was given.|1500 mg/m2|213|223|Methotrexate|200|212\n"
    neg = neg if neg is not None else "10030778 NEG Nothing happened here.\n6460590 NEG Clioquinol was used.\n"
    (tmp_path / "DRUG-AE.rel").write_text(ae)
    (tmp_path / "DRUG-DOSE.rel").write_text(dose)
    (tmp_path / "ADE-NEG.txt").write_text(neg)
    return tmp_path


def test_ade_sample(tmp_path, nlp):
    stats = ReadStats()
    docs = list(read_ade(ade_dir(tmp_path), nlp, stats=stats))
    assert (stats.documents, stats.mentions, stats.relations) == (5, 6, 3)
    d1, d2, d3, n1, n2 = docs
    assert [(e.text, e.label_) for e in d1.ents] == [("vancomycin", "Drug"), ("nephropathy", "Effect")]
    # the occurrence whose offset agrees with the document-level offsets is chosen
    assert [(e.start_char, e.text) for e in d2.ents] == [(42, "azithromycin"), (62, "ototoxicity")]
    assert get_relations(d2) == [{"head": [d2.ents[0].start, d2.ents[0].end], "tail": [d2.ents[1].start, d2.ents[1].end],
                                  "head_id": None, "tail_id": None, "label": "ADE", "score": 1.0,
                                  "head_char": [42, 54], "tail_char": [62, 73], "text_crc": text_crc(d2)}]
    assert [(e.text, e.label_) for e in d3.ents] == [("Methotrexate", "Drug"), ("1500 mg/m2", "Dose")]
    assert get_relations(d3) == [{"head": [0, 1], "tail": [1, 5], "head_id": None, "tail_id": None, "label": "DOSE", "score": 1.0,
                                  "head_char": [0, 12], "tail_char": [13, 23], "text_crc": text_crc(d3)}]
    assert [d.cats for d in docs] == [{"ADE": 1.0}, {"ADE": 1.0}, {"ADE": 0.0}, {"ADE": 0.0}, {"ADE": 0.0}]
    assert n1.text == "Nothing happened here." and n1.ents == ()


def test_ade_split_is_fixed_and_by_document(tmp_path, nlp):
    assert split_of("10030778") == split_of("10030778")
    counts = {s: sum(split_of(str(i)) == s for i in range(20000)) for s in ("train", "dev", "test")}
    assert counts == {"train": 15987, "dev": 1992, "test": 2021}  # ~80/10/10, fixed by the id's hash
    path = ade_dir(tmp_path)
    split = split_of("10030778")
    ids = [d._.medllm_doc_id for d in read_ade(path, nlp, split=split)]
    assert ids.count("10030778") == 3


@pytest.mark.parametrize(
    "row,reason",
    [
        ("1|A sentence.|x|0|1", "expected 8 '|'-separated columns, found 5 (truncated line?)"),
        ("1|Aspirin rash.|rash|8|zz|Aspirin|0|7", "offsets '8', 'zz', '0', '7' are not integers"),
        ("1|Aspirin rash.|rash|8|20|Aspirin|0|7", "offset range does not match the length of 'rash' (8-20) or 'Aspirin' (0-7)"),
        ("1|Aspirin rash.|hives|8|13|Aspirin|0|7", "'hives' does not occur in its sentence"),
    ],
)
def test_ade_malformed(tmp_path, nlp, row, reason):
    path = ade_dir(tmp_path, ae=f"10030778|{S1}|nephropathy|41|52|vancomycin|22|32\n{row}\n")
    with pytest.raises(CorpusError) as err:
        list(read_ade(path, nlp))
    assert str(err.value) == f"[E001] {path / 'DRUG-AE.rel'}, line 2: {reason}"
    stats = ReadStats()
    with pytest.warns(UserWarning, match="W001"):
        docs = list(read_ade(path, nlp, on_error="skip", stats=stats))
    assert stats.skipped == {"line": 1}
    assert [d.text for d in docs] == [S1, "Methotrexate 1500 mg/m2 was given.", "Nothing happened here.", "Clioquinol was used."]


def test_ade_real_counts(shared_corpus, nlp):
    rels = {"ADE": 0, "DOSE": 0}
    positives = 0
    ids = {}
    for split in ("train", "dev", "test"):
        stats = ReadStats()
        for doc in read_ade(require_corpus("ade_corpus_v2"), nlp, split=split, stats=stats):
            positives += doc.cats["ADE"] == 1.0
            ids.setdefault(doc._.medllm_doc_id, set()).add(split)
        for k in rels:
            rels[k] += stats.relation_labels[k]
    assert rels == {"ADE": 6821, "DOSE": 279}
    assert positives == 4272  # distinct sentences with a drug-AE relation
    assert len(ids) == 2972 and all(len(s) == 1 for s in ids.values())  # no document straddles splits


ANN = (
    "T1\tCondition 0 6\tAsthma\n"
    "T2\tTemporal 7 27\tfor at least 2 years\n"
    "R1\tHas_temporal Arg1:T1 Arg2:T2\t\n"
    "T3\tCondition 28 34;47 54\tsevere lesions\n"
    "T4\tDrug 58 65\tinsulin\n"
    "T5\tScope 28 65\tsevere skin or eye lesions on insulin\n"
    "*\tOR T3 T4\n"
    "A1\tOptional T4\n"
)
TXT = "Asthma for at least 2 years\nsevere skin or eye lesions on insulin\n"


def test_brat_folder(tmp_path, nlp):
    (tmp_path / "NCT1_inc.txt").write_text(TXT)
    (tmp_path / "NCT1_inc.ann").write_text(ANN)
    stats = ReadStats()
    (doc,) = list(read_brat_dir(tmp_path, nlp, labels=["Condition", "Temporal", "Drug"], stats=stats))
    # discontinuous "severe ... lesions": one span per fragment, same label
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Asthma", "Condition"), ("for at least 2 years", "Temporal"), ("severe", "Condition"),
        ("lesions", "Condition"), ("insulin", "Drug"),
    ]
    assert "Scope" in {s.label_ for s in doc.spans["mentions"]}
    rels = get_relations(doc)
    assert [(r["label"], r["head"], r["tail"]) for r in rels] == [("Has_temporal", [0, 1], [1, 6]), ("OR", [7, 8], [13, 14])]
    assert stats.notes == {"discontinuous_entities": 1, "unused_lines_A": 1}


def test_brat_zip_and_errors(tmp_path, nlp):
    zpath = tmp_path / "chia.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("chia/NCT1_inc.txt", TXT)
        zf.writestr("chia/NCT1_inc.ann", ANN + "T9\tDrug 50 900\tinsulin\n")
    with pytest.raises(CorpusError) as err:
        list(read_chia(zpath, nlp))
    assert str(err.value) == f"[E001] {zpath}:chia/NCT1_inc.ann, line 9: offsets '50 900' lie outside the text (length 66) or are empty"
    with pytest.warns(UserWarning):
        docs = list(read_chia(zpath, nlp, on_error="skip"))
    assert [(e.text, e.label_) for e in docs[0].ents] == [
        ("Asthma", "Condition"), ("for at least 2 years", "Temporal"), ("severe", "Condition"), ("lesions", "Condition"), ("insulin", "Drug"),
    ]
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing")
    with pytest.raises(ValueError, match="E005"):
        list(read_chia(empty, nlp))


def test_chia_real_counts(shared_corpus, nlp):
    stats = ReadStats()
    docs = list(read_chia(require_corpus("chia", "chia_with_scope.zip"), nlp, stats=stats))
    assert stats.documents == 2000
    assert stats.notes["discontinuous_entities"] == 1822
    assert stats.notes["mention_text_mismatch"] == 16
    assert (stats.mentions, stats.relations) == (50755, 27321)
    assert (stats.labels["Condition"], stats.labels["Drug"], stats.labels["Scope"]) == (12959, 3897, 4290)
    assert stats.relation_labels["Has_value"] == 3643
    assert all(e.label_ != "Scope" for d in docs for e in d.ents)


CSV = (
    'ROW_ID,SUBJECT_ID,HADM_ID,CATEGORY,ISERROR,TEXT\n'
    '1,10,100,Nursing,,"Pt seen on [**2101-10-20**] by Dr. [**Last Name (NamePattern1) 1234**].\nBP 120/80, on lisinopril."\n'
    '2,10,100,Nursing,1,"Wrong note."\n'
    '3,11,101,Discharge summary,,"Discharged home."\n'
)


def test_mimic_csv(tmp_path, nlp):
    path = tmp_path / "NOTEEVENTS.csv"
    path.write_text(CSV)
    stats = ReadStats()
    docs = list(read_mimic_notes(path, nlp, stats=stats))
    assert [d._.medllm_doc_id for d in docs] == ["1", "3"]
    # de-identification placeholders stay single tokens
    assert [t.text for t in docs[0]] == [
        "Pt", "seen", "on", "[**2101-10-20**]", "by", "Dr.", "[**Last Name (NamePattern1) 1234**]", ".", "\n",
        "BP", "120", "/", "80", ",", "on", "lisinopril", ".",
    ]
    assert docs[0]._.medllm_meta == {"ROW_ID": "1", "SUBJECT_ID": "10", "HADM_ID": "100", "CATEGORY": "Nursing", "ISERROR": ""}
    assert stats.notes == {"error_rows_skipped": 1}
    assert [d._.medllm_doc_id for d in read_mimic_notes(path, nlp, categories=["Discharge summary"])] == ["3"]


def test_mimic_csv_errors(tmp_path, nlp):
    path = tmp_path / "bad.csv"
    path.write_text("ROW_ID,NOTE\n1,hello\n")
    with pytest.raises(ValueError, match="column 'TEXT' is missing"):
        list(read_mimic_notes(path, nlp))
    path.write_text('ROW_ID,TEXT\n1,"fine"\n2,"x",extra\n')
    with pytest.raises(CorpusError, match=r"bad.csv, line 3: expected 2 columns, found 3"):
        list(read_mimic_notes(path, nlp))


def test_mimic_csv_wrong_encoding(tmp_path, nlp):
    path = tmp_path / "latin1.csv"
    path.write_bytes("ROW_ID,TEXT\n1,\"Patient caf\u00e9\"\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1.csv, line \d: not valid utf-8"):
        list(read_mimic_notes(path, nlp))
