"""Surrogate augmentation for training a PHI NER (spaCy's `augmenters` registry).

A de-identification corpus is small and its PHI repeats: the same few clinicians, the same
hospital, dates of one year. A NER trained on it learns the names, not the contexts in which
names occur, and misses the next hospital's staff. This augmenter adds, for each training
note with PHI, copies in which every gold PHI span is replaced by a surrogate of its type
(`spacy_medllm.deid.surrogates.Surrogates`: names from the surrogate name lists, dates
shifted in their own format, new digits for numbers, other cities and hospitals), the
entities re-mapped onto the replacements (`spacy_medllm.deid.remap.remap_doc`). Notes
without PHI, most of a nursing-note corpus, can be down-sampled (`keep_empty`), which
moves the model away from predicting "no PHI" everywhere.

    [corpora.train.augmenter]
    @augmenters = "spacy_medllm.phi_surrogate_augmenter.v1"
    level = 1.0
    copies = 2
    keep_empty = 0.5
"""
import random
from typing import Callable, Iterator, List, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from .lexicon import HOSPITAL_WORDS
from .remap import remap_doc
from .surrogates import Surrogates, replace_spans

_HOSPITAL = {w.lower() for w in HOSPITAL_WORDS}


def surrogate_label(ent: Span) -> str:
    """The surrogate type for a gold PHI entity: the corpus' LOCATION covers hospitals, wards,
    cities and streets, which get a surrogate of their own kind."""
    label = ent.label_
    if label == "LOCATION":
        words = {t.lower_ for t in ent}
        if words & _HOSPITAL:
            return "HOSPITAL"
        if ent.text[:1].isdigit():
            return "STREET"
        return "CITY"
    return label


def surrogate_copy(nlp: Language, doc: Doc, seed: int) -> Doc:
    """A copy of the annotated `doc` with each entity replaced by a surrogate of its type."""
    spans: List[Tuple[int, int, str]] = [(e.start_char, e.end_char, surrogate_label(e)) for e in doc.ents]
    new_text, offsets = replace_spans(doc.text, spans, "surrogate", Surrogates(doc.text, seed=seed))
    # the entities keep the corpus' labels: the surrogate types only choose the values
    return remap_doc(doc, new_text, offsets, nlp)


@registry.augmenters("spacy_medllm.phi_surrogate_augmenter.v1")
def create_phi_surrogate_augmenter(
    level: float = 1.0, copies: int = 1, keep_empty: float = 1.0, seed: int = 0
) -> Callable[[Language, Example], Iterator[Example]]:
    """Yield each note with PHI, and with probability `level` each of `copies` surrogate copies
    of it; yield a note without PHI with probability `keep_empty`.

    level (float): probability of each surrogate copy, in [0, 1].
    copies (int): surrogate copies drawn per note with PHI.
    keep_empty (float): share of the notes without PHI that are kept, in [0, 1].
    seed (int): seed of the draws (the same seed gives the same copies, epoch after epoch
        differing because the generator advances).
    """
    for name, value in (("level", level), ("keep_empty", keep_empty)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"phi_surrogate_augmenter: {name} must be in [0, 1], got {value}")
    if copies < 0:
        raise ValueError(f"phi_surrogate_augmenter: copies must be >= 0, got {copies}")
    rng = random.Random(seed)

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        ref = example.reference
        if not ref.ents:
            if keep_empty >= 1.0 or rng.random() < keep_empty:
                yield example
            return
        yield example
        for _ in range(copies):
            if level < 1.0 and rng.random() >= level:
                continue
            new = surrogate_copy(nlp, ref, rng.randrange(2**31))
            words = [t.text for t in new]
            spaces = [bool(t.whitespace_) for t in new]
            yield Example(Doc(nlp.vocab, words=words, spaces=spaces), new)

    return augment
