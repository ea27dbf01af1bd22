"""Knowledge base: data model, builders (UMLS RRF, scispaCy JSON, MeSH, MEDIC), storage, candidates."""
import pytest

from spacy_medllm.corpus.base import CorpusError
from spacy_medllm.kb import CandidateGenerator, Concept, KnowledgeBase, read_scispacy_kb, read_umls_rrf
from spacy_medllm.kb.builders import mesh_category, read_medic, read_mesh
from spacy_medllm.kb.knowledge_base import KB_FILE


@pytest.fixture
def kb():
    return KnowledgeBase([
        Concept("D007022", "Hypotension", ["Low Blood Pressure", "hypotensive"], ["Disease", "C14.907.514"], "Abnormally low blood pressure."),
        Concept("D006973", "Hypertension", ["High Blood Pressure", "hypertensive"], ["Disease"]),
        Concept("D003000", "Clonidine", ["clonidine hydrochloride"], ["Chemical"]),
        Concept("D009270", "Naloxone", [], ["Chemical"]),
    ])


def test_merge_layers_sources(kb):
    kb.add(Concept("D009270", "naloxone", ["Narcan"], ["D03.132"], "An opioid antagonist."))
    c = kb["D009270"]
    assert (c.canonical_name, c.aliases, c.types, c.definition) == ("Naloxone", ["naloxone", "Narcan"], ["Chemical", "D03.132"], "An opioid antagonist.")
    assert kb.lookup("  NARCAN ") == ["D009270"]


def test_round_trip(kb, tmp_path):
    kb.to_disk(tmp_path / "kb")
    back = KnowledgeBase.from_disk(tmp_path / "kb")
    assert [vars(c) for c in back] == [vars(c) for c in kb]


def test_malformed_and_newer_kb_files(kb, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / KB_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"E010.*bad/kb.msgpack"):
        KnowledgeBase.from_disk(tmp_path / "bad")
    import srsly

    data = srsly.msgpack_loads(kb.to_bytes())
    data["version"] = 99
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / KB_FILE).write_bytes(srsly.msgpack_dumps(data))
    with pytest.raises(ValueError, match=r"E011.*version 99 is newer"):
        KnowledgeBase.from_disk(tmp_path / "new")
    with pytest.raises(FileNotFoundError):
        KnowledgeBase.from_disk(tmp_path / "missing")


def test_candidates_exact_lists(kb, tmp_path):
    gen = CandidateGenerator(kb)
    assert gen(["hypotensive"], k=1) == [[("D007022", 1.0)]]
    ranked = gen(["hypotension"], k=3)[0]
    assert ranked[0] == ("D007022", 1.0)
    # "hypertension" shares most 3-grams; "clonidine hydrochloride" only " hy"; naloxone none
    assert [cid for cid, _ in ranked] == ["D007022", "D006973", "D003000"]
    assert 1.0 > ranked[1][1] > ranked[2][1] > 0
    # a misspelling finds its concept by n-grams, scored below an exact match
    (best, score), *_ = gen(["nalozone"], k=2)[0]
    assert best == "D009270" and 0 < score < 1
    # no n-gram overlap at all: no candidates
    assert gen(["xyzzy"], k=5) == [[]]
    assert gen([]) == []
    gen.to_disk(tmp_path / "idx")
    back = CandidateGenerator.from_disk(tmp_path / "idx", kb)
    assert back(["hypotension", "nalozone", "clonidine hcl"], k=4) == gen(["hypotension", "nalozone", "clonidine hcl"], k=4)


def test_scispacy_and_umls_fixtures(shared_corpus):
    fixtures = shared_corpus / "scispacy_fixtures"
    concepts = list(read_scispacy_kb(fixtures / "umls_test_fixture.json"))
    assert len(concepts) == 11
    c = {c.concept_id: c for c in concepts}["C0000005"]
    assert (c.canonical_name, c.aliases, c.types) == ("(131)I-Macroaggregated Albumin", ["(131)I-MAA"], ["T116", "T121", "T130"])
    umls = {c.concept_id: c for c in read_umls_rrf(fixtures / "umls_META")}
    assert umls["C0000005"].canonical_name == "(131)I-Macroaggregated Albumin"
    assert umls["C0000005"].aliases == ["(131)I-MAA"]
    assert umls["C0000039"].types == ["T109", "T121"]
    assert umls["C0000039"].definition.startswith("Synthetic phospholipid")


def test_malformed_vocabularies(tmp_path):
    (tmp_path / "kb.json").write_text('[{"aliases": []}]')
    with pytest.raises(CorpusError, match="each concept needs 'concept_id'"):
        list(read_scispacy_kb(tmp_path / "kb.json"))
    (tmp_path / "kb.jsonl").write_text('{"concept_id": "C1", "canonical_name": "x"}\n{broken\n')
    with pytest.raises(CorpusError, match=r"kb.jsonl, line 2: not valid JSON"):
        list(read_scispacy_kb(tmp_path / "kb.jsonl"))
    (tmp_path / "META").mkdir()
    (tmp_path / "META" / "MRCONSO.RRF").write_text("C0000005|ENG|P\n")
    with pytest.raises(CorpusError, match=r"MRCONSO.RRF, line 1: expected at least 15"):
        list(read_umls_rrf(tmp_path / "META"))


def test_mesh_and_medic(shared_corpus):
    assert mesh_category(["C14.907.514"]) == ["Disease"] and mesh_category(["D02.092"]) == ["Chemical"]
    mesh = {c.concept_id: c for c in read_mesh(shared_corpus / "mesh" / "terms.tsv", shared_corpus / "mesh" / "tree-numbers.tsv")}
    assert len(mesh) == 27455
    assert mesh["D007022"].canonical_name == "Hypotension" and mesh["D007022"].types[0] == "Disease"
    medic = list(read_medic(shared_corpus / "ctd_medic" / "CTD_diseases.tsv.gz"))
    assert len(medic) == 11865
    assert sum(c.concept_id.startswith("OMIM:") for c in medic) == 532
    assert sum(len(c.names) for c in medic) >= 77994 - 100  # 77,994 names incl. synonyms (a few repeat the name)
