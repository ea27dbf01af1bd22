"""Long documents (a discharge summary of 100k tokens) in bounded memory: the relation
extractor enumerates candidate pairs a block of head mentions at a time and pools each
pair's localized context a slice of pairs at a time, with the same results as at once."""
import random

import pytest
import spacy
import torch
from spacy.tokens import Span

from spacy_medllm.relations import pairs as pairs_module
from spacy_medllm.relations import torch_model
from spacy_medllm.relations.pairs import TypePairs
from spacy_medllm.relations.torch_model import PairEncoder


def long_doc(n_mentions=300, seed=0):
    rng = random.Random(seed)
    nlp = spacy.blank("en")
    words = [rng.choice(["the", "drug", "caused", "no", "and", "of"]) for _ in range(6 * n_mentions)]
    doc = spacy.tokens.Doc(nlp.vocab, words=words)
    ents = []
    for i in range(n_mentions):
        start = 6 * i + rng.randint(0, 3)
        label = rng.choice(["Chemical", "Disease"])
        span = Span(doc, start, start + rng.randint(1, 2), label=label)
        span.kb_id_ = f"{label[0]}{rng.randint(0, 40)}"
        ents.append(span)
    doc.ents = ents
    return doc


@pytest.mark.parametrize("level", ["concept", "mention"])
def test_pairs_in_blocks_equal_pairs_at_once(monkeypatch, level):
    doc = long_doc()
    generator = TypePairs([["Chemical", "Disease"]], level=level, max_pairs=700, max_distance=400)
    monkeypatch.setattr(pairs_module, "PAIR_BLOCK", 10**6)
    whole = generator(doc)
    monkeypatch.setattr(pairs_module, "PAIR_BLOCK", 7)
    blocks = generator(doc)
    assert whole.n_candidates > 700 and blocks.n_candidates == whole.n_candidates
    for key in ("pairs", "gaps", "tail_after", "evidence", "sentence_gaps"):
        assert getattr(blocks, key) == getattr(whole, key), key


def test_localized_context_in_slices_equals_at_once(monkeypatch):
    torch.manual_seed(0)
    encoder = PairEncoder(width=16, hidden=8, n_labels=4, n_counts=4, n_positions=4, n_distances=8, n_sentences=4,
                          max_between=5, distance_width=4, depth=0, dropout=0.0).eval()
    H, entities = torch.randn(500, 8), torch.randn(30, 8)
    h, t = torch.randint(0, 30, (200,)), torch.randint(0, 30, (200,))
    with torch.no_grad():
        whole = encoder.localized_context(entities, H, h, t)
        monkeypatch.setattr(torch_model, "CONTEXT_BUDGET", 3 * 500 * 9)  # slices of 9 pairs
        sliced = encoder.localized_context(entities, H, h, t)
    assert sliced.shape == whole.shape == (200, 8)
    assert torch.allclose(sliced, whole, atol=1e-6)
