"""The corpus readers, registered for spaCy configs (`[corpora.train] @readers = ...`).

Each registered function returns a callable that takes the `nlp` object and yields
`Example`s: the reference Doc comes from the raw corpus file, the predicted Doc is
`nlp.make_doc(text)`, so the pipeline's own tokenizer is used and gold spans are
aligned to it. Training straight from raw files skips the `convert` step; the
`.spacy` files written by `medllm convert` are faster to reread.
"""
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence

from spacy.language import Language
from spacy.training import Example
from spacy.util import registry

from ..tokens import NCBI_LABELS, RELATIONS, install_extensions
from .ade import read_ade
from .brat import CHIA_LABELS, read_chia
from .mimic import read_mimic_notes
from .pubtator import read_pubtator


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


# Chia's entity types (Kury et al., 2020): the domain entities and the field entities a
# criterion is built from; its annotation-error and scope categories are not entity types.
CHIA_NER_LABELS = [
    "Condition", "Device", "Drug", "Measurement", "Mood", "Multiplier", "Negation", "Observation",
    "Person", "Procedure", "Qualifier", "Reference_point", "Temporal", "Value", "Visit",
]


@registry.readers("spacy_medllm.LabelledCorpus.v1")
def create_labelled_corpus(
    path: Path, labels: Sequence[str], span_key: str = "mentions", limit: int = 0,
) -> Callable[[Language], Iterable[Example]]:
    """Examples from a `.spacy` file whose entities are rebuilt from a span group, keeping `labels`.

    A corpus converted with nested or overlapping mentions (Chia) keeps all of them in
    `doc.spans[span_key]`; `doc.ents` holds the longest of each overlap over every label. To
    train a NER on a subset of labels, the entities are chosen again among the mentions of
    those labels only (longest first, as spaCy's `filter_spans`), so a mention hidden by an
    overlapping span of a dropped label (e.g. Chia's `Scope`) comes back.

    path (Path): the `.spacy` file (saved with user data).
    labels (Sequence[str]): the entity labels to keep.
    span_key (str): the span group holding every mention; Docs without it use `doc.ents`.
    limit (int): at most this many documents (0: all).
    """
    from spacy.tokens import DocBin, Span
    from spacy.util import filter_spans

    from ..errors import Errors

    keep = set(labels)
    if not keep:
        raise ValueError(Errors.E007.format(fmt="labels=[]", known="at least one entity label"))

    def reader(nlp: Language) -> Iterator[Example]:
        if not Path(path).exists():
            raise FileNotFoundError(Errors.E003.format(path=path))
        docs = DocBin().from_disk(path).get_docs(nlp.vocab)

        def relabelled():
            for doc in docs:
                spans = doc.spans[span_key] if span_key in doc.spans else doc.ents
                chosen = filter_spans([s for s in spans if s.label_ in keep and len(s)])
                doc.ents = [Span(doc, s.start, s.end, label=s.label_, kb_id=s.kb_id_) for s in chosen]
                yield doc

        yield from _examples(nlp, relabelled(), limit)

    return reader


# what a multi-task corpus source may keep: entities (with their concept ids), relation
# records, document categories
ANNOTATIONS = ("ents", "relations", "cats")


@registry.readers("spacy_medllm.MultiTaskCorpus.v1")
def create_multitask_corpus(sources: Dict[str, Dict[str, Any]], seed: int = 0) -> Callable[[Language], Iterable[Example]]:
    """Examples from several `.spacy` files, each keeping only some of its annotations.

    One shared encoder learns several tasks from corpora that annotate different things:
    BC5CDR abstracts hold entities, concept ids and relations, the ADE corpus's sentences
    hold the adverse-event category. What a source does not keep is *missing*, not
    negative: its entities become unannotated tokens (no NER loss, no linker mentions, no
    relation pairs), its categories are removed (no textcat loss), its relation records
    dropped. Documents are read source by source in file order; spaCy's training loop
    shuffles them.

    sources (Dict[str, Dict[str, Any]]): by name, a dict with `path` (a `.spacy` file saved
        with user data), `annotations` (what it keeps, among "ents", "relations", "cats";
        "relations" needs "ents") and optionally `limit` (at most this many documents, a
        seeded random sample fixed for the whole run; 0: all).
    seed (int): the seed of those samples.
    """
    import random

    from spacy.tokens import DocBin

    from ..errors import Errors

    plan = []
    for i, (name, source) in enumerate(sources.items()):
        unknown = sorted(set(source) - {"path", "annotations", "limit"})
        if "path" not in source or unknown:
            raise ValueError(Errors.E137.format(name=name, value=sorted(source)))
        keep = tuple(source.get("annotations", ANNOTATIONS))
        bad = [a for a in keep if a not in ANNOTATIONS]
        if bad or ("relations" in keep and "ents" not in keep):
            raise ValueError(Errors.E138.format(name=name, value=list(keep), known=list(ANNOTATIONS)))
        plan.append((Path(source["path"]), keep, int(source.get("limit", 0)), seed + i))

    def reader(nlp: Language) -> Iterator[Example]:
        install_extensions()
        for path, keep, limit, sample_seed in plan:
            if not path.exists():
                raise FileNotFoundError(Errors.E003.format(path=path))
            docs = list(DocBin(store_user_data=True).from_disk(path).get_docs(nlp.vocab))
            if limit and limit < len(docs):
                chosen = sorted(random.Random(sample_seed).sample(range(len(docs)), limit))
                docs = [docs[j] for j in chosen]
            for doc in docs:
                if "ents" not in keep:
                    doc.set_ents([], default="missing")
                if "relations" not in keep:
                    setattr(doc._, RELATIONS, [])
                if "cats" not in keep:
                    doc.cats = {}
                yield Example(nlp.make_doc(doc.text), doc)

    return reader
