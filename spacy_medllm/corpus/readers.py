"""The corpus readers, registered for spaCy configs (`[corpora.train] @readers = ...`).

Each registered function returns a callable that takes the `nlp` object and yields
`Example`s: the reference Doc comes from the raw corpus file, the predicted Doc is
`nlp.make_doc(text)`, so the pipeline's own tokenizer is used and gold spans are
aligned to it. Training straight from raw files skips the `convert` step; the
`.spacy` files written by `medllm convert` are faster to reread.
"""
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from spacy.language import Language
from spacy.training import Example
from spacy.util import registry

from .ade import read_ade
from .brat import CHIA_LABELS, read_chia
from .mimic import read_mimic_notes
from .pubtator import NCBI_LABELS, read_pubtator


def _examples(nlp: Language, docs: Iterable, limit: int) -> Iterator[Example]:
    for i, doc in enumerate(docs):
        if limit and i >= limit:
            break
        yield Example(nlp.make_doc(doc.text), doc)


@registry.readers("spacy_medllm.PubTatorCorpus.v1")
def create_pubtator_reader(
    path: Path, ncbi_labels: bool = False, on_error: str = "raise", limit: int = 0
) -> Callable[[Language], Iterable[Example]]:
    """Examples from a PubTator file (BC5CDR, NCBI-disease).

    ncbi_labels (bool): map NCBI-disease's four mention types to "Disease".
    on_error (str): "raise" or "skip" malformed records.
    limit (int): at most this many documents (0: all).
    """
    label_map = NCBI_LABELS if ncbi_labels else None

    def reader(nlp: Language) -> Iterator[Example]:
        yield from _examples(nlp, read_pubtator(path, nlp, on_error=on_error, ent_label_map=label_map), limit)

    return reader


@registry.readers("spacy_medllm.ADECorpus.v1")
def create_ade_reader(
    path: Path, split: Optional[str] = None, include_negative: bool = True, on_error: str = "raise", limit: int = 0
) -> Callable[[Language], Iterable[Example]]:
    """Examples from the ADE corpus v2 folder, one per sentence; `split` is "train", "dev" or "test"."""

    def reader(nlp: Language) -> Iterator[Example]:
        docs = read_ade(path, nlp, split=split, include_negative=include_negative, on_error=on_error)
        yield from _examples(nlp, docs, limit)

    return reader


@registry.readers("spacy_medllm.ChiaCorpus.v1")
def create_chia_reader(
    path: Path, split: Optional[str] = None, labels: Optional[Sequence[str]] = CHIA_LABELS,
    on_error: str = "raise", limit: int = 0,
) -> Callable[[Language], Iterable[Example]]:
    """Examples from Chia (zip or folder), one per criteria file; `split` by trial id."""

    def reader(nlp: Language) -> Iterator[Example]:
        docs = read_chia(path, nlp, split=split, labels=labels, on_error=on_error)
        yield from _examples(nlp, docs, limit)

    return reader


@registry.readers("spacy_medllm.MimicNotes.v1")
def create_mimic_reader(
    path: Path, categories: Optional[Sequence[str]] = None, on_error: str = "raise", limit: int = 0
) -> Callable[[Language], Iterable[Example]]:
    """Unannotated Examples from a NOTEEVENTS-style CSV (e.g. for pretraining)."""

    def reader(nlp: Language) -> Iterator[Example]:
        docs = read_mimic_notes(path, nlp, categories=categories, on_error=on_error, limit=limit)
        yield from _examples(nlp, docs, 0)

    return reader
