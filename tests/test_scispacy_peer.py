"""The scispaCy peer (spacy_medllm.evaluation.peer and its script) on a tiny KB: the index,
its cache, and the linker's ranking."""
import importlib.util
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import spacy
import srsly
from spacy.tokens import DocBin, Span

from spacy_medllm.kb import Concept, KnowledgeBase

pytest.importorskip("nmslib")
pytest.importorskip("scispacy")

ROOT = Path(__file__).parent.parent
SMALL_INDEX = {"M": 8, "efConstruction": 100, "post": 0}


@pytest.fixture(scope="module")
def peer():
    from spacy_medllm.evaluation import peer as module

    return module


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("benchmark_scispacy_peer", ROOT / "scripts" / "benchmark_scispacy_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_kb() -> KnowledgeBase:
    # enough shared 3-grams for min_df=10; the all-caps abbreviations are rare and end up empty
    concepts = []
    for i, (adj, organ, noun) in enumerate(
        itertools.product(["acute", "chronic", "severe", "mild"], ["renal", "hepatic", "cardiac", "pulmonary", "neural"], ["failure", "injury", "toxicity"])
    ):
        cid = f"D{i:06d}"
        aliases = [f"{organ} {noun}, {adj}", (adj[0] + organ[0] + noun[0]).upper()]
        concepts.append(Concept(cid, f"{adj} {organ} {noun}".capitalize(), aliases, ["Disease"], "a definition" if i % 2 else None))
    return KnowledgeBase(concepts)


@pytest.fixture(scope="module")
def built(peer, tmp_path_factory):
    kb_dir = tmp_path_factory.mktemp("kb")
    tiny_kb().to_disk(kb_dir)
    cache = kb_dir / "cache"
    meta = peer.build_index(str(kb_dir), cache, None, 1, SMALL_INDEX)
    return kb_dir, cache, meta


def test_alias_list_is_scispacys(peer, built):
    from scispacy.linking_utils import KnowledgeBase as ScispacyKB

    kb_dir, _, _ = built
    entities = peer.load_entities(str(kb_dir))
    aliases = peer.alias_list(entities)
    assert len(aliases) == len(set(aliases)) == len(ScispacyKB(entities).alias_to_cuis)
    assert set(aliases) == set(ScispacyKB(entities).alias_to_cuis)


def test_cache_round_trip(peer, built):
    kb_dir, cache, meta = built
    aliases = srsly.read_json(cache / peer.ALIASES_FILE)
    assert meta["aliases"] == len(aliases) < 3 * len(tiny_kb())
    dropped = set(peer.alias_list(peer.load_entities(str(kb_dir)))) - set(aliases)
    assert dropped and all(a.isupper() for a in dropped)  # abbreviations with no 3-gram of min_df 10
    import scipy.sparse as sp

    stored = sp.load_npz(cache / peer.VECTORS_FILE)
    again = peer.load_vectorizer(cache).transform(aliases)
    assert np.allclose(stored.toarray(), again.toarray(), atol=1e-6)
    assert peer.cache_is_fresh(cache, str(kb_dir), None, SMALL_INDEX)
    assert not peer.cache_is_fresh(cache, str(kb_dir), 10, SMALL_INDEX)
    assert not peer.cache_is_fresh(cache, str(kb_dir), None, peer.INDEX_PARAMS)


def test_stale_cache(peer, tmp_path):
    tiny_kb().to_disk(tmp_path)
    cache = tmp_path / "cache"
    peer.build_index(str(tmp_path), cache, None, 1, SMALL_INDEX)
    assert peer.cache_is_fresh(cache, str(tmp_path), None, SMALL_INDEX)
    kb_file = tmp_path / "kb.msgpack"
    later = (cache / peer.META_FILE).stat().st_mtime + 10
    os.utime(kb_file, (later, later))
    assert not peer.cache_is_fresh(cache, str(tmp_path), None, SMALL_INDEX)


def test_neighbours_match_exact_search(peer, built):
    kb_dir, cache, _ = built
    gen = peer.load_generator(cache, peer.load_entities(str(kb_dir)))
    mentions = ["acute renal failure", "chronic hepatic injuries", "pulmonary toxicity, severe", "xyz"]
    cands = gen(mentions, 5)
    assert cands[-1] == []  # no known 3-gram: scispaCy returns no candidate
    aliases = srsly.read_json(cache / peer.ALIASES_FILE)
    vectors = peer.load_vectorizer(cache).transform(aliases)
    sims = (gen.vectorizer.transform(mentions[:3]) @ vectors.T).toarray()
    for row, mention_cands in zip(sims, cands):
        best_alias = aliases[int(np.argmax(row))]
        best = peer.rank(mention_cands, gen.kb)[0]
        assert best[0] in gen.kb.alias_to_cuis[best_alias]
        assert best[1] == pytest.approx(row.max(), abs=1e-4)
    assert peer.rank(cands[0], gen.kb)[0] == ("D000000", pytest.approx(1.0, abs=1e-5))


@pytest.mark.parametrize("threshold,filter_defs", [(-1.0, False), (0.7, False), (0.7, True)])
def test_rank_is_the_entity_linkers(peer, built, threshold, filter_defs):
    from scispacy.linking import EntityLinker

    kb_dir, cache, _ = built
    gen = peer.load_generator(cache, peer.load_entities(str(kb_dir)))
    linker = EntityLinker(
        candidate_generator=gen, resolve_abbreviations=False, k=30, threshold=threshold,
        filter_for_definitions=filter_defs, max_entities_per_mention=30,
    )
    nlp = spacy.blank("en")
    doc = nlp("acute renal failure and renal injury and mild cardiac toxicity and liver")
    doc.ents = [Span(doc, 0, 3, "Disease"), Span(doc, 4, 6, "Disease"), Span(doc, 7, 10, "Disease"), Span(doc, 11, 12, "Disease")]
    linker(doc)
    cands = gen([e.text for e in doc.ents], 30)
    for ent, c in zip(doc.ents, cands):
        mine = peer.rank(c, gen.kb, None if threshold < 0 else threshold, filter_for_definitions=filter_defs)
        assert ent._.kb_ents == mine[:30]


def test_alternative_id_counts_for_the_peer(peer, built):
    """A gold id that is another id of the concept the peer ranks first counts as right."""
    from spacy_medllm.evaluation.candidates import Mention

    kb_dir, cache, _ = built
    concepts = peer.load_concepts(str(kb_dir))
    concepts[0].alt_ids = ["C999999"]
    ranker = peer.PeerRanker(cache, concepts)
    mentions = [Mention("acute renal failure", "Disease", {"C999999"}), Mention("acute renal failure", "Disease", {"C888888"})]
    scores = peer.score_peer(mentions, ranker.candidates([m.text for m in mentions]), ranker)
    assert scores["Disease"] == {
        "mentions": 2, "id_in_kb": 50.0, "accuracy@1": 50.0, "recall@1": 50.0, "recall@5": 50.0, "recall@10": 50.0, "recall@30": 50.0,
        "accuracy@1_threshold_0.7": 50.0, "accuracy@1_linker_defaults": 50.0, "no_candidate": 0.0,
    }


def test_peer_refuses_an_index_of_other_names(peer, built):
    """The index's rows are names: over a KB with other names (a linker's KB with more
    aliases) it would answer with the wrong concepts, so it is refused, naming the file."""
    kb_dir, cache, _ = built
    concepts = peer.load_concepts(str(kb_dir))
    peer.PeerRanker(cache, concepts)  # its own KB: accepted
    concepts[1].aliases = list(concepts[1].aliases) + ["acute renal failures"]
    with pytest.raises(ValueError, match=r"E052.*aliases.json.*names are not this KB's"):
        peer.PeerRanker(cache, concepts)


def test_main_end_to_end(peer, script, tmp_path):
    tiny_kb().to_disk(tmp_path / "kb")
    nlp = spacy.blank("en")
    doc = nlp("acute renal failure , chronic cardiac injury , mild neural toxicity , aspirin")
    doc.ents = [
        Span(doc, 0, 3, "Disease", kb_id="D000000"),
        Span(doc, 4, 7, "Disease", kb_id="D999999|D000022"),  # any alternative counts
        Span(doc, 8, 11, "Disease", kb_id="NIL"),  # not counted
        Span(doc, 12, 13, "Chemical", kb_id="C000001"),  # not in the KB
    ]
    DocBin(docs=[doc], store_user_data=True).to_disk(tmp_path / "gold.spacy")
    args = script.parse_args([str(tmp_path / "kb"), str(tmp_path / "out"), f"gold={tmp_path / 'gold.spacy'}", "--cache", str(tmp_path / "cache")])
    script.main(args)
    results = srsly.read_json(tmp_path / "out" / "candidates_scispacy.json")
    overall = results["datasets"]["gold"]["per_label"]["overall"]
    assert overall["mentions"] == 3
    assert overall["id_in_kb"] == pytest.approx(66.67)
    assert overall["accuracy@1"] == overall["recall@1"] == pytest.approx(66.67)
    assert results["datasets"]["gold"]["per_label"]["Chemical"]["recall@30"] == 0.0
    assert results["index"]["settings"]["index"]["M"] == 100
    assert "| gold | Disease | 2 | 100.0 | 100.0 |" in (tmp_path / "out" / "candidates_scispacy.md").read_text()
    # a second run uses the cache instead of rebuilding
    built_at = (tmp_path / "cache" / peer.META_FILE).stat().st_mtime
    script.main(args)
    assert (tmp_path / "cache" / peer.META_FILE).stat().st_mtime == built_at
