"""The `medllm_deid` component: finds PHI and writes the de-identified text.

Detection is the union of two sources:

* the pattern layer (`patterns.py`: regular expressions, name and place lists, context cues
  such as titles, credentials and kinship words; MIMIC `[** ... **]` placeholders), and
* optionally the entities of a NER that runs before it (`doc.ents`, e.g. the CNN NER of
  `configs/deid_ner.cfg`), restricted to `ent_labels`.

Overlapping candidates merge into their union, so nothing any source found is left out.
A token that a PHI boundary cuts ("DR.GATEMAN", "8/23,AWAITING") is split there first, so
that the spans hold the PHI and nothing else. Writes `doc.spans[spans_key]`, and, unless `replace`
is "none", `doc._.deid_text` (the replaced text) and `doc._.deid_offsets` (one
`[start, end, new_start, new_end, label]` row per span; offsets only). Both extensions are
plain data, so `DocBin(store_user_data=True)` and `nlp.pipe(n_process=2)` carry them.
"""
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from ..errors import Errors
from .patterns import LABELS, find_phi, resolve, widen_names
from .surrogates import Surrogates, replace_spans

REPLACE_MODES = ("surrogate", "tag", "none")


def install_deid_extensions() -> None:
    """Register `Doc._.deid_text` and `Doc._.deid_offsets` (idempotent)."""
    if not Doc.has_extension("deid_text"):
        Doc.set_extension("deid_text", default=None)
    if not Doc.has_extension("deid_offsets"):
        Doc.set_extension("deid_offsets", default=None)


@Language.factory(
    "medllm_deid",
    assigns=["doc.spans", "doc._.deid_text", "doc._.deid_offsets"],
    default_config={
        "replace": "surrogate",
        "seed": None,
        "keep_weekday": False,
        "shift_days": [-1095, 1095],
        "use_patterns": True,
        "use_ents": True,
        "ent_labels": None,
        "spans_key": "medllm_deid",
        "scorer": {"@scorers": "spacy_medllm.deid_scorer.v1"},
    },
    default_score_weights={"deid_r": 1.0, "deid_p": 0.0, "deid_f": 0.0},
)
def make_deid(
    nlp: Language,
    name: str,
    replace: str,
    seed: Optional[int],
    keep_weekday: bool,
    shift_days: Sequence[int],
    use_patterns: bool,
    use_ents: bool,
    ent_labels: Optional[List[str]],
    spans_key: str,
    scorer: Optional[Callable],
) -> "Deidentifier":
    """Create a `medllm_deid` component.

    replace (str): "surrogate" (realistic, consistent within a document), "tag" (`[NAME]`,
        `[DATE]` ...) or "none" (find only).
    seed (Optional[int]): makes the surrogates reproducible (a function of seed and text);
        None draws them from the operating system.
    keep_weekday (bool): shift dates by whole weeks.
    shift_days (Sequence[int]): the range of the per-document date offset, in days.
    use_patterns (bool): run the pattern layer.
    use_ents (bool): add the entities already in `doc.ents` (a PHI NER before this component).
    ent_labels (Optional[List[str]]): the `doc.ents` labels taken as PHI; None: those that are
        PHI labels of this component (NAME, DATE, LOCATION, ...).
    spans_key (str): the `doc.spans` key written.
    """
    return Deidentifier(
        nlp.vocab, name=name, replace=replace, seed=seed, keep_weekday=keep_weekday, shift_days=shift_days,
        use_patterns=use_patterns, use_ents=use_ents, ent_labels=ent_labels, spans_key=spans_key, scorer=scorer,
    )


class Deidentifier:
    """Finds PHI with patterns (and a preceding NER) and replaces it. See the module docstring."""

    def __init__(
        self,
        vocab,
        name: str = "medllm_deid",
        *,
        replace: str = "surrogate",
        seed: Optional[int] = None,
        keep_weekday: bool = False,
        shift_days: Sequence[int] = (-1095, 1095),
        use_patterns: bool = True,
        use_ents: bool = True,
        ent_labels: Optional[List[str]] = None,
        spans_key: str = "medllm_deid",
        scorer: Optional[Callable] = None,
    ):
        if replace not in REPLACE_MODES:
            raise ValueError(Errors.E060.format(value=replace, modes=", ".join(REPLACE_MODES)))
        if len(shift_days) != 2 or int(shift_days[0]) > int(shift_days[1]) or (int(shift_days[0]) == 0 == int(shift_days[1])):
            raise ValueError(Errors.E061.format(value=list(shift_days)))
        install_deid_extensions()
        self.vocab = vocab
        self.name = name
        self.replace = replace
        self.seed = seed
        self.keep_weekday = keep_weekday
        self.shift_days = (int(shift_days[0]), int(shift_days[1]))
        self.use_patterns = use_patterns
        self.use_ents = use_ents
        self.ent_labels = set(ent_labels) if ent_labels is not None else set(LABELS)
        self.spans_key = spans_key
        self.scorer = scorer

    def find(self, doc: Doc) -> List[Tuple[int, int, str]]:
        """The PHI of a Doc as sorted, non-overlapping (start char, end char, label) spans."""
        candidates: List[Tuple[int, int, str]] = find_phi(doc.text) if self.use_patterns else []
        if self.use_ents:
            candidates.extend((e.start_char, e.end_char, e.label_) for e in doc.ents if e.label_ in self.ent_labels)
        return widen_names(doc.text, resolve(candidates))

    def surrogates(self, text: str) -> Surrogates:
        return Surrogates(text, seed=self.seed, shift_days=self.shift_days, keep_weekday=self.keep_weekday)

    def __call__(self, doc: Doc) -> Doc:
        found = self.find(doc)
        split_at_boundaries(doc, found)
        spans: List[Span] = []
        widened: List[Tuple[int, int, str]] = []
        for start, end, label in found:
            span = doc.char_span(start, end, label=label, alignment_mode="expand")
            if span is None or not len(span):
                continue
            if spans and span.start < spans[-1].end:
                # two findings in one token: one span over both
                prev = spans.pop()
                span = Span(doc, prev.start, max(prev.end, span.end), label=prev.label_)
                widened.pop()
            spans.append(span)
            widened.append((span.start_char, span.end_char, span.label_))
        doc.spans[self.spans_key] = spans
        if self.replace != "none":
            text, offsets = replace_spans(doc.text, widened, self.replace, self.surrogates(doc.text) if self.replace == "surrogate" else None)
            doc._.deid_text = text
            doc._.deid_offsets = offsets
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterable[Doc]:
        for doc in stream:
            yield self(doc)

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, float]:
        if self.scorer is None:
            return {}
        return self.scorer(examples, spans_key=self.spans_key)

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        return b""

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "Deidentifier":
        return self

    def to_disk(self, path, *, exclude=tuple()) -> None:
        # everything the component needs is in its config
        return None

    def from_disk(self, path, *, exclude=tuple()) -> "Deidentifier":
        return self


def split_at_boundaries(doc: Doc, found: Sequence[Tuple[int, int, str]]) -> None:
    """Split every token of `doc` that a start or end of `found` falls strictly inside."""
    cuts = sorted({c for s, e, _ in found for c in (s, e)})
    if not cuts:
        return
    plans = []
    for token in doc:
        start, end = token.idx, token.idx + len(token.text)
        inner = [c - start for c in cuts if start < c < end]
        if inner:
            bounds = [0] + inner + [len(token.text)]
            plans.append((token, [token.text[a:b] for a, b in zip(bounds, bounds[1:])]))
    if not plans:
        return
    with doc.retokenize() as retokenizer:
        for token, orths in plans:
            retokenizer.split(token, orths, heads=[(token, 0)] * len(orths))


def deid_score(examples: Iterable[Example], spans_key: str = "medllm_deid", **kwargs) -> Dict[str, float]:
    """Type-blind token-level recall / precision of `doc.spans[spans_key]` against `doc.ents`
    of the references (the PHI annotations): a leak is a PHI token outside every span."""
    tp = fp = fn = 0
    for eg in examples:
        pred = eg.predicted
        covered = set()
        for span in pred.spans.get(spans_key, []):
            covered.update(range(span.start_char, span.end_char))
        gold = set()
        for ent in eg.reference.ents:
            gold.update(range(ent.start_char, ent.end_char))
        for token in pred:
            chars = set(range(token.idx, token.idx + len(token.text)))
            in_gold, in_pred = bool(chars & gold), bool(chars & covered)
            tp += in_gold and in_pred
            fp += in_pred and not in_gold
            fn += in_gold and not in_pred
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"deid_p": p, "deid_r": r, "deid_f": 2 * p * r / (p + r) if p + r else 0.0}


@registry.scorers("spacy_medllm.deid_scorer.v1")
def make_deid_scorer() -> Callable:
    return deid_score


def deidentify_text(nlp: Language, text: str) -> Tuple[str, List[List[object]]]:
    """Run `nlp` (with a `medllm_deid` component) on `text`: (replaced text, offset map)."""
    doc = nlp(text)
    if doc._.deid_text is None:
        raise ValueError(Errors.E062.format(pipes=", ".join(nlp.pipe_names)))
    return doc._.deid_text, doc._.deid_offsets
