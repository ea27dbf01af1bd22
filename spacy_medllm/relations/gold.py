"""Gold entities on predicted Docs: the reference entities (with their ids) aligned to the
predicted tokens, for training, threshold tuning and evaluation on gold entities.
"""
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import filter_spans

def aligned_gold_entities(eg: Example) -> Tuple[List[Span], Dict[Tuple[int, int], Tuple[int, int]]]:
    """The reference entities of `eg` as spans of the predicted Doc, with their label and
    id, and a map from reference to predicted token offsets. A mention that the predicted
    tokens cannot represent is left out."""
    spans: List[Span] = []
    mapping: Dict[Tuple[int, int], Tuple[int, int]] = {}
    for ent in eg.reference.ents:
        aligned = eg.get_aligned_spans_y2x([ent])
        if aligned:
            span = Span(eg.predicted, aligned[0].start, aligned[0].end, label=ent.label_, kb_id=ent.kb_id_)
            spans.append(span)
            mapping[(ent.start, ent.end)] = (span.start, span.end)
    return spans, mapping


def with_gold_entities(eg: Example) -> Example:
    """`eg` with the reference entities (labels and ids) set on the predicted Doc."""
    spans, _ = aligned_gold_entities(eg)
    eg.predicted.ents = filter_spans(spans)
    return eg


def assigns_entities(nlp: Language, name: str) -> bool:
    """Whether the component `name` writes entities or their ids (NER, entity linker...)."""
    assigns = set(nlp.get_pipe_meta(name).assigns)
    return bool(assigns & {"doc.ents", "token.ent_iob", "token.ent_type", "token.ent_kb_id"})


def gold_entity_docs(nlp: Language, gold_docs: Iterable[Doc], *, upto: Optional[str] = None, batch_size: int = 32) -> Iterator[Example]:
    """Examples whose predicted Docs carry the gold entities and ids of `gold_docs`.

    The predicted Doc is the pipeline's tokenization of the gold text; gold mentions are
    aligned to it (expanded to token boundaries when a mention ends inside a token, the
    longest kept where they then overlap) and the pipeline's components up to `upto`
    (exclusive; default: all) run on it, except those that write entities or ids, so a
    relation component reads the shared encoder's output but the gold entities.
    """
    names = []
    for name in nlp.pipe_names:
        if name == upto:
            break
        if not assigns_entities(nlp, name):
            names.append(name)
    batch: List[Example] = []

    def flush() -> Iterator[Example]:
        docs = [eg.predicted for eg in batch]
        for name in names:
            docs = list(nlp.get_pipe(name).pipe(docs, batch_size=batch_size))
        for eg, doc in zip(batch, docs):
            eg.predicted = doc
            yield eg
        batch.clear()

    for gold in gold_docs:
        doc = nlp.make_doc(gold.text)
        spans = []
        for ent in gold.ents:
            span = doc.char_span(ent.start_char, ent.end_char, label=ent.label_, kb_id=ent.kb_id_, alignment_mode="expand")
            if span is not None:
                spans.append(span)
        doc.ents = filter_spans(spans)
        batch.append(Example(doc, gold))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()
