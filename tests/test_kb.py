"""Knowledge base: data model, builders (UMLS RRF, scispaCy JSON, MeSH, MEDIC), storage, candidates."""
import numpy as np
import pytest
import spacy
import srsly
from spacy.tokens import DocBin

from spacy_medllm.io import VocabularyError
from spacy_medllm.kb import CandidateGenerator, Concept, KnowledgeBase, read_scispacy_kb, read_umls_rrf
from spacy_medllm.kb.builders import mesh_category, read_medic, read_mentions, read_mesh
from spacy_medllm.kb.candidates import kb_fingerprint
from spacy_medllm.kb.knowledge_base import KB_FILE

from corpus_paths import require_corpus


@pytest.fixture(scope="module")
def shared_corpus():
    """../shared/corpus: a skip naming the path locally, a failure under CI=true."""
    return require_corpus()


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


def test_kb_load_runs_without_the_cyclic_gc_and_restores_its_state():
    """msgpack's unpacker switches the collector back on as it returns: loading must not let
    it run over the ~10^5 new objects of a large KB, and leaves it as it found it."""
    import gc

    big = KnowledgeBase(
        Concept(f"D{i:06d}", f"name {i}", [f"alias {i} a", f"alias {i} b"], ["Chemical"]) for i in range(3000)
    )
    data = big.to_bytes()
    # from a collected heap: whether the collector's own thresholds call a full collection at
    # its next run depends on what earlier tests left (long-lived objects pending)
    gc.collect()
    runs = []

    def record(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    was = gc.isenabled()
    gc.callbacks.append(record)
    try:
        gc.enable()
        loaded = KnowledgeBase.from_bytes(data)
        # at most the young collection the decoder's allocations trigger as it switches the
        # collector back on; with it on while the concepts are built: one every 700 objects
        assert len(runs) <= 2 and 2 not in runs and gc.isenabled()
        del runs[:]
        assert loaded.lookup("ALIAS 7 b") == ["D000007"]  # builds the alias index
        assert len(runs) <= 2 and 2 not in runs
        gc.disable()
        KnowledgeBase.from_bytes(data)
        assert not gc.isenabled()
    finally:
        gc.callbacks.remove(record)
        if was:
            gc.enable()


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
    with pytest.raises(FileNotFoundError, match=r"\[E003\] .*/missing: file not found"):
        KnowledgeBase.from_disk(tmp_path / "missing")


def test_truncated_kb_file(kb, tmp_path):
    kb.to_disk(tmp_path / "kb")
    data = (tmp_path / "kb" / KB_FILE).read_bytes()
    (tmp_path / "kb" / KB_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"\[E010\] .*kb/kb.msgpack: not a knowledge base file: not msgpack"):
        KnowledgeBase.from_disk(tmp_path / "kb")
    data = srsly.msgpack_loads(kb.to_bytes())
    data["aliases"] = data["aliases"][:2]
    (tmp_path / "kb" / KB_FILE).write_bytes(srsly.msgpack_dumps(data))
    with pytest.raises(ValueError, match=r"\[E010\] .*columns missing or of different lengths"):
        KnowledgeBase.from_disk(tmp_path / "kb")


def test_candidates_exact_lists(kb, tmp_path):
    gen = CandidateGenerator(kb)
    assert gen(["hypotensive"], k=1) == [[("D007022", 1.0)]]
    # "hypertension" shares most 3-grams; "clonidine hydrochloride" only " hy"; naloxone none
    assert gen(["hypotension"], k=3) == [[("D007022", 1.0), ("D006973", 0.6258), ("D003000", 0.031)]]
    # a misspelling finds its concept by n-grams, scored below an exact match
    assert gen(["nalozone"], k=2) == [[("D009270", 0.7759), ("D003000", 0.1013)]]
    # a near-exact name is capped just below an exact match
    assert gen(["clonidine hcl"], k=2) == [[("D003000", 0.9999), ("D009270", 0.0786)]]
    # no n-gram overlap at all: no candidates
    assert gen(["xyzzy"], k=5) == [[]]
    assert gen([]) == []
    gen.to_disk(tmp_path / "idx")
    back = CandidateGenerator.from_disk(tmp_path / "idx", kb)
    assert back(["hypotension", "nalozone", "clonidine hcl"], k=4) == gen(["hypotension", "nalozone", "clonidine hcl"], k=4)


def test_british_spellings_find_the_american_names():
    """A name found as written wins; otherwise its American spelling is an exact match too."""
    kb = KnowledgeBase([
        Concept("D000740", "Anemia", [], ["Disease"]),
        Concept("D004487", "Edema", [], ["Disease"]),
        Concept("D004967", "Estrogens", [], ["Chemical"]),
        Concept("D009369", "Neoplasms", ["Tumor"], ["Disease"]),
        Concept("D007930", "Leucine", [], ["Chemical"]),
        Concept("D007970", "Leukopenia", [], ["Disease"]),
    ])
    assert kb.lookup("anaemia") == [] and kb.lookup_spellings("Anaemia") == ["D000740"]
    assert kb.lookup_spellings("oedema") == ["D004487"] and kb.lookup_spellings("OESTROGENS") == ["D004967"]
    assert kb.lookup_spellings("tumour") == ["D009369"] and kb.lookup_spellings("leucopenia") == ["D007970"]
    assert kb.lookup_spellings("leucine") == ["D007930"] and kb.lookup_spellings("aerosol") == []
    gen = CandidateGenerator(kb)
    assert gen(["anaemia"], k=2)[0][0] == ("D000740", 1.0)
    assert gen(["leucine"], k=2)[0][0] == ("D007930", 1.0)


def test_candidates_cache(kb):
    """Each distinct mention text is searched once; repeated, cached and uncached results are
    the same, whatever the case or spacing, and the cache stays within its size."""
    gen = CandidateGenerator(kb)
    mentions = ["hypotension", "nalozone", "HYPOTENSION ", "clonidine hcl", "hypotension"]
    fresh = [gen.detailed([m], 3)[0] for m in mentions]
    gen._cache.clear()
    calls = []
    search = gen._search
    gen._search = lambda ms, k, exact, qvec: calls.append(list(ms)) or search(ms, k, exact, qvec)
    assert gen.detailed(mentions, k=3) == fresh
    assert calls == [["hypotension", "nalozone", "clonidine hcl"]]
    assert gen.detailed(["nalozone", "xyzzy"], k=3) == [fresh[1], []]
    assert calls[1:] == [["xyzzy"]]
    # another k is another search; the cache is bounded
    assert gen.detailed(["hypotension"], k=1) == [fresh[0][:1]]
    gen.cache_size = 2
    gen.detailed(["hypertension", "naloxone", "clonidine"], k=1)
    assert len(gen._cache) == 2
    # a caller that changes its list does not change the cache
    got = gen.detailed(["naloxone"], k=1)[0]
    got.clear()
    assert gen.detailed(["naloxone"], k=1) == [[("D009270", 1.0, 1.0, 0.0)]]


def test_scispacy_and_umls_fixtures(shared_corpus):
    fixtures = require_corpus("scispacy_fixtures")
    concepts = list(read_scispacy_kb(fixtures / "umls_test_fixture.json"))
    assert len(concepts) == 11
    c = {c.concept_id: c for c in concepts}["C0000005"]
    assert (c.canonical_name, c.aliases, c.types) == ("(131)I-Macroaggregated Albumin", ["(131)I-MAA"], ["T116", "T121", "T130"])
    umls = {c.concept_id: c for c in read_umls_rrf(fixtures / "umls_META")}
    assert umls["C0000005"].canonical_name == "(131)I-Macroaggregated Albumin"
    assert umls["C0000005"].aliases == ["(131)I-MAA"]
    assert umls["C0000039"].types == ["T109", "T121"]
    assert umls["C0000039"].definition == "Synthetic phospholipid used in liposomes and lipid bilayers to study biological membranes."


def test_malformed_vocabularies(tmp_path):
    (tmp_path / "kb.json").write_text('[{"aliases": []}]')
    with pytest.raises(VocabularyError, match="each concept needs 'concept_id'"):
        list(read_scispacy_kb(tmp_path / "kb.json"))
    (tmp_path / "kb.jsonl").write_text('{"concept_id": "C1", "canonical_name": "x"}\n{broken\n')
    with pytest.raises(VocabularyError, match=r"kb.jsonl, line 2: not valid JSON"):
        list(read_scispacy_kb(tmp_path / "kb.jsonl"))
    (tmp_path / "META").mkdir()
    (tmp_path / "META" / "MRCONSO.RRF").write_text("C0000005|ENG|P\n")
    with pytest.raises(VocabularyError, match=r"MRCONSO.RRF, line 1: expected at least 15"):
        list(read_umls_rrf(tmp_path / "META"))


def test_mesh_and_medic(shared_corpus):
    assert mesh_category(["C14.907.514"]) == ["Disease"] and mesh_category(["D02.092"]) == ["Chemical"]
    mesh = {c.concept_id: c for c in read_mesh(require_corpus("mesh", "terms.tsv"), require_corpus("mesh", "tree-numbers.tsv"))}
    assert len(mesh) == 27455
    assert mesh["D007022"].canonical_name == "Hypotension" and mesh["D007022"].types[0] == "Disease"
    medic = list(read_medic(require_corpus("ctd_medic", "CTD_diseases.tsv.gz")))
    assert len(medic) == 11865
    assert sum(c.concept_id.startswith("OMIM:") for c in medic) == 532
    assert sum(len(c.names) for c in medic) == 77994  # names incl. synonyms
    assert sum(len(c.alt_ids) for c in medic) == 3430  # OMIM ids merged into MeSH concepts


def write_index(kb, path):
    CandidateGenerator(kb).to_disk(path)
    return path


def test_index_of_another_kb_is_refused(kb, tmp_path):
    index = write_index(kb, tmp_path / "idx")
    meta = srsly.read_json(index / "index.json")
    assert meta["kb_fingerprint"] == kb_fingerprint(kb) and len(meta["kb_fingerprint"]) == 64
    other = KnowledgeBase(list(kb)[:3])  # a concept less
    with pytest.raises(ValueError, match=r"\[E052\] .*idx/index.json: this candidate index was built from another knowledge base than corpus/kb \(its concepts differ: 4 concepts in the index, 3 in the knowledge base\)"):
        CandidateGenerator.from_disk(index, other, kb_source="corpus/kb")
    renamed = KnowledgeBase([Concept(c.concept_id, c.canonical_name, c.aliases + (["Narcan"] if c.concept_id == "D009270" else []), c.types) for c in kb])
    with pytest.raises(ValueError, match=r"\[E052\] .*the same concept ids with other names: 4 concepts in the index, 4 in the knowledge base"):
        CandidateGenerator.from_disk(index, renamed)
    # an index saved before the fingerprint existed: the concept ids are compared
    del meta["kb_fingerprint"]
    srsly.write_json(index / "index.json", meta)
    assert CandidateGenerator.from_disk(index, kb)(["hypotension"], k=1) == [[("D007022", 1.0)]]
    with pytest.raises(ValueError, match=r"\[E052\] .*its concepts differ: 4 in the index, 3 in the knowledge base"):
        CandidateGenerator.from_disk(index, other)


@pytest.mark.parametrize("name,data,reason", [
    ("index.json", b"{not json", r"\[E051\] .*idx/index.json: not a candidate index file: not valid JSON"),
    ("index.json", b'{"format": "something else"}', r"\[E051\] .*idx/index.json: not a candidate index file: not a spacy_medllm.candidate_index file"),
    ("idf.npy", b"\x93NUMPY garbage", r"\[E051\] .*idx/idf.npy: not a candidate index file: not a plain .npy array"),
    ("owners.npy", "truncate", r"\[E051\] .*idx/owners.npy: not a candidate index file: not a plain .npy array"),
    ("names.npz", b"PK\x03\x04 garbage", r"\[E051\] .*idx/names.npz: not a candidate index file: not a scipy sparse .npz matrix"),
    ("names.npz", "truncate", r"\[E051\] .*idx/names.npz: not a candidate index file: not a scipy sparse .npz matrix"),
])
def test_corrupted_index_files(kb, tmp_path, name, data, reason):
    index = write_index(kb, tmp_path / "idx")
    path = index / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if data == "truncate" else data)
    with pytest.raises(ValueError, match=reason + r".*rebuild the index with `medllm build-kb`"):
        CandidateGenerator.from_disk(index, kb)


def test_index_arrays_of_the_wrong_shape(kb, tmp_path):
    index = write_index(kb, tmp_path / "idx")
    np.save(index / "idf.npy", np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[E051\] .*idx/idf.npy: .*expected \d+ idf values, found shape \(3,\)"):
        CandidateGenerator.from_disk(index, kb)
    index = write_index(kb, tmp_path / "idx2")
    np.save(index / "owners.npy", np.array([0, 1, 99], dtype=np.int32))
    with pytest.raises(ValueError, match=r"\[E051\] .*idx2/owners.npy: .*expected 9 concept rows below 4, found shape \(3,\)"):
        CandidateGenerator.from_disk(index, kb)
    (index / "names.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"\[E003\] .*idx2/names.npz: file not found"):
        CandidateGenerator.from_disk(index, kb)


def test_linker_pipeline_refuses_an_index_of_another_kb(kb, tmp_path):
    """The linker saves its KB and index side by side; an index copied in from another KB
    is refused when the pipeline loads, naming the file."""
    import spacy
    from spacy.training import Example

    from spacy_medllm.tokens import install_extensions

    install_extensions()
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_linker").set_kb(kb)
    doc = nlp.make_doc("Naloxone caused hypotension .")
    doc.ents = [doc.char_span(0, 8, "Chemical", kb_id="D009270"), doc.char_span(16, 27, "Disease", kb_id="D007022")]
    nlp.initialize(lambda: [Example(nlp.make_doc(doc.text), doc)])
    nlp.to_disk(tmp_path / "nlp")
    assert spacy.load(tmp_path / "nlp").get_pipe("medllm_linker").generator(["hypotensive"], k=1) == [[("D007022", 1.0)]]
    write_index(KnowledgeBase(list(kb)[1:]), tmp_path / "nlp" / "medllm_linker" / "index")
    with pytest.raises(ValueError, match=r"\[E052\] .*nlp/medllm_linker/index/index.json: this candidate index was built from another knowledge base"):
        spacy.load(tmp_path / "nlp")


def test_mention_aliases_need_min_docs(tmp_path):
    """read_mentions(min_docs=2): an (id, text) alias only when two documents have it (case
    and whitespace ignored); composite and NIL mentions never."""
    nlp = spacy.blank("en")

    def doc(text, ents):
        d = nlp.make_doc(text)
        d.ents = [d.char_span(s, e, label=l, kb_id=k) for s, e, l, k in ents]
        return d

    docs = [
        doc("Cocaine and psychosis .", [(0, 7, "Chemical", "D003042"), (12, 21, "Disease", "D011605")]),
        doc("COCAINE again , psychosis .", [(0, 7, "Chemical", "D003042"), (16, 25, "Disease", "D011618")]),
        doc("Hemorrhagic cystitis and foo .", [(0, 20, "Disease", "D006470|D003556"), (25, 28, "Chemical", "NIL")]),
    ]
    DocBin(docs=docs).to_disk(tmp_path / "train.spacy")
    every = [(c.concept_id, c.canonical_name) for c in read_mentions([tmp_path / "train.spacy"])]
    assert every == [("D003042", "Cocaine"), ("D011605", "psychosis"), ("D003042", "COCAINE"), ("D011618", "psychosis")]
    two = [(c.concept_id, c.canonical_name) for c in read_mentions([tmp_path / "train.spacy"], min_docs=2)]
    assert two == [("D003042", "Cocaine"), ("D003042", "COCAINE")]
    with pytest.raises(ValueError, match="min_docs"):
        list(read_mentions([tmp_path / "train.spacy"], min_docs=0))


def test_fingerprint_kept_until_the_kb_changes(tmp_path):
    """A pipeline's indexes each check the KB's fingerprint at load: computed once, the same
    value as a fresh computation, and recomputed after add / merge / remove."""
    kb = KnowledgeBase([Concept("D1", "Hypotension", ["low blood pressure"], ["Disease"]),
                        Concept("D2", "Clonidine", [], ["Chemical"])])
    kb.to_disk(tmp_path / "kb")
    loaded = KnowledgeBase.from_disk(tmp_path / "kb")
    # taken as saved (no hashing of every name at load): the value a fresh hash gives
    assert loaded._fingerprint is not None and loaded._fingerprint == loaded._hash_names()
    first = kb_fingerprint(loaded)
    assert loaded._fingerprint == first == kb_fingerprint(kb)
    assert kb_fingerprint(loaded) is first
    for change in (lambda k: k.add(Concept("D3", "Naloxone", [], ["Chemical"])),
                   lambda k: k.merge("D1", "D3"),
                   lambda k: k.remove("D2")):
        before = kb_fingerprint(loaded)
        change(loaded)
        assert loaded._fingerprint is None
        after = kb_fingerprint(loaded)
        fresh = KnowledgeBase(list(loaded))
        assert after != before and after == kb_fingerprint(fresh)


def test_saved_fingerprint_is_of_the_names_at_save_time(tmp_path):
    """A name edited in place after the fingerprint was computed is in the saved one; a KB file
    written without the field is hashed at load."""
    import srsly

    kb = KnowledgeBase([Concept("D1", "Hypotension", ["low blood pressure"], ["Disease"])])
    stale = kb.fingerprint()
    kb.get("D1").aliases.append("hypotensive")
    kb.to_disk(tmp_path / "kb")
    loaded = KnowledgeBase.from_disk(tmp_path / "kb")
    assert loaded.fingerprint() != stale and loaded.fingerprint() == KnowledgeBase(list(loaded)).fingerprint()
    msg = srsly.msgpack_loads((tmp_path / "kb" / "kb.msgpack").read_bytes())
    del msg["fingerprint"]
    (tmp_path / "kb" / "kb.msgpack").write_bytes(srsly.msgpack_dumps(msg))
    older = KnowledgeBase.from_disk(tmp_path / "kb")
    assert older._fingerprint is None and older.fingerprint() == loaded.fingerprint()
