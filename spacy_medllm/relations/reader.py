"""`spacy_medllm.RelationCorpus.v1`: relation examples from a `.spacy` file."""
from pathlib import Path
from typing import Callable, Iterator, Optional

from spacy.language import Language
from spacy.training import Corpus, Example
from spacy.util import registry

from .gold import with_gold_entities

@registry.readers("spacy_medllm.RelationCorpus.v1")
def create_relation_corpus(
    path: Optional[Path],
    gold_entities: bool = True,
    min_entities: int = 2,
    limit: int = 0,
    shuffle: bool = False,
) -> Callable[[Language], Iterator[Example]]:
    """Examples for relation training and evaluation from a `.spacy` file.

    path (Path): the DocBin (saved with user data, so `doc._.medllm_rels` is there).
    gold_entities (bool): copy the reference entities (with their ids) onto the predicted
        Docs, so that evaluation during training scores relations on gold entities when
        no component of the pipeline predicts entities (ADE, Chia).
    min_entities (int): skip Docs with fewer reference entities: they hold no candidate
        pair, and leaving them out saves the encoder's time (ADE's negative sentences).
    limit (int): at most this many Docs (0: all), counted before filtering.
    shuffle (bool): shuffle the Docs each time the corpus is read.
    """
    corpus = Corpus(path, limit=limit, shuffle=shuffle)

    def read(nlp: Language) -> Iterator[Example]:
        for eg in corpus(nlp):
            if len(eg.reference.ents) < min_entities:
                continue
            yield with_gold_entities(eg) if gold_entities else eg

    return read
