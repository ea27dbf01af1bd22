"""EDA for annotated biomedical text: insertion, deletion, swap and synonym replacement.

Easy Data Augmentation (Wei & Zou, 2019) edits the words around the annotations, never an
annotation itself: a token inside an entity, a span of any span group or a relation argument
is never deleted, moved or replaced, and no word is inserted inside one. Everything the
reference Doc carries (entities with their ids, span groups, categories, the relation records
of `doc._.medllm_rels` with their token offsets) is re-mapped onto the edited copy, so an
augmented Doc with relations stays a positive relation example.

Synonyms come from, in this order: the knowledge base (a context word that is itself an
alias of exactly one concept gets another alias of that concept), then the word list
shipped with the package (`synonyms.json`: general and clinical-report vocabulary, e.g.
"patients" -> "subjects", "elevated" -> "increased"), or a JSON file of the same shape
(`{"word": ["synonym", ...]}`) given as `synonyms_path`.
"""
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import srsly
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import registry

from ..errors import Errors
from ..tokens import get_relations, install_extensions, set_offsets

SYNONYMS_FILE = Path(__file__).parent / "synonyms.json"
OPERATIONS = ("synonym", "insert", "swap", "delete")


class SynonymSource:
    """Synonyms of a context word: knowledge-base aliases first, then a word list."""

    def __init__(self, words: Dict[str, List[str]], kb=None, max_alias_words: int = 3):
        self.words = {k.lower(): [s for s in v if s.lower() != k.lower()] for k, v in words.items()}
        self.kb = kb
        self.max_alias_words = max_alias_words
        self._cache: Dict[str, List[str]] = {}

    @classmethod
    def load(cls, synonyms_path: Optional[Union[str, Path]] = None, kb_path: Optional[Union[str, Path]] = None) -> "SynonymSource":
        path = Path(synonyms_path) if synonyms_path else SYNONYMS_FILE
        if not path.exists():
            raise FileNotFoundError(Errors.E003.format(path=path))
        data = srsly.read_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()):
            raise ValueError(Errors.E088.format(path=path))
        kb = None
        if kb_path:
            from ..kb import KnowledgeBase

            kb = KnowledgeBase.from_disk(kb_path)
        return cls(data, kb)

    def __call__(self, word: str) -> List[str]:
        key = word.lower()
        if key in self._cache:
            return self._cache[key]
        out: List[str] = []
        if self.kb is not None:
            ids = self.kb.lookup(key)
            if len(ids) == 1:
                concept = self.kb[ids[0]]
                out = [n for n in concept.names if n.lower() != key and len(n.split()) <= self.max_alias_words]
        if not out:
            out = list(self.words.get(key, ()))
        self._cache[key] = out
        return out


def _protected(doc: Doc, records: Sequence[Dict[str, object]]) -> Tuple[Set[int], Set[int]]:
    """Tokens inside an annotation, and the gaps (before token i) that fall inside one."""
    spans: List[Tuple[int, int]] = [(e.start, e.end) for e in doc.ents]
    for group in doc.spans.values():
        spans.extend((s.start, s.end) for s in group)
    for r in records:
        for key in ("head", "tail"):
            if r.get(key) is not None:
                spans.append((int(r[key][0]), int(r[key][1])))
    tokens: Set[int] = set()
    gaps: Set[int] = set()
    for start, end in spans:
        tokens.update(range(start, end))
        gaps.update(range(start + 1, end))
    return tokens, gaps


def eda_copy(
    nlp: Language, doc: Doc, rng: random.Random, synonyms: SynonymSource, *,
    alpha: float = 0.1, operations: Sequence[str] = OPERATIONS,
) -> Optional[Doc]:
    """An edited copy of `doc`, or None when no edit was possible.

    One of `operations` is drawn and applied to about `alpha` of the context words (at least
    one): `synonym` replaces words with a synonym, `insert` adds a synonym of a context word
    at a random place outside the annotations, `swap` exchanges two context words, `delete`
    drops each context word with probability `alpha`.
    """
    install_extensions()
    records = get_relations(doc)
    locked, inner_gaps = _protected(doc, records)
    context = [t.i for t in doc if t.i not in locked and t.is_alpha and len(t.text) > 1]
    if not context:
        return None
    n = max(1, int(round(alpha * len(context))))
    op = operations[rng.randrange(len(operations))]
    # the edited sequence: ("old", i, text) keeps or rewrites token i, ("new", -1, text) is inserted
    seq: List[Tuple[str, int, str]] = [("old", t.i, t.text) for t in doc]
    spaces = [bool(t.whitespace_) for t in doc]
    changed = False
    if op == "synonym":
        options = [i for i in context if not doc[i].is_stop and synonyms(doc[i].text)]
        rng.shuffle(options)
        for i in options[:n]:
            seq[i] = ("old", i, _match_case(rng.choice(synonyms(doc[i].text)), doc[i].text))
            changed = True
    elif op == "swap":
        if len(context) >= 2:
            for _ in range(n):
                a, b = rng.sample(context, 2)
                if seq[a][2] != seq[b][2]:
                    seq[a], seq[b] = ("old", a, seq[b][2]), ("old", b, seq[a][2])
                    changed = True
    elif op == "delete":
        drop = {i for i in context if rng.random() < alpha}
        if len(drop) == len(doc):
            drop.discard(context[0])
        if drop:
            for i in sorted(drop, reverse=True):
                if spaces[i] and i > 0:
                    spaces[i - 1] = True
            seq = [s for s in seq if s[1] not in drop]
            changed = True
    elif op == "insert":
        options = [i for i in context if not doc[i].is_stop and synonyms(doc[i].text)]
        gaps = [g for g in range(len(doc) + 1) if g not in inner_gaps]
        for _ in range(n if options else 0):
            word = rng.choice(synonyms(doc[rng.choice(options)].text)).lower()
            gap = rng.choice(gaps)
            pos = next((k for k, s in enumerate(seq) if s[0] == "old" and s[1] >= gap), len(seq))
            seq.insert(pos, ("new", -1, word))
            changed = True
    else:
        raise ValueError(Errors.E089.format(op=op, known=", ".join(OPERATIONS)))
    if not changed:
        return None
    words: List[str] = []
    word_spaces: List[bool] = []
    index: Dict[int, int] = {}
    for kind, i, text in seq:
        if kind == "new" and words:
            word_spaces[-1] = True  # an inserted word never sticks to the one before it
        for k, piece in enumerate(text.split() or [text]):
            if kind == "old" and k == 0:
                index[i] = len(words)
            words.append(piece)
            word_spaces.append(True)
        if kind == "old":
            word_spaces[-1] = spaces[i]
    if words == [t.text for t in doc]:
        return None
    new = Doc(doc.vocab, words=words, spaces=word_spaces)

    def move(start: int, end: int) -> Tuple[int, int]:
        return index[start], index[end - 1] + 1

    new.ents = [Span(new, *move(e.start, e.end), label=e.label, kb_id=e.kb_id) for e in doc.ents]
    for key, group in doc.spans.items():
        new.spans[key] = [Span(new, *move(s.start, s.end), label=s.label, kb_id=s.kb_id) for s in group]
    if records:
        moved = []
        for r in records:
            r = dict(r)
            for key in ("head", "tail"):
                if r.get(key) is not None:
                    r[key] = list(move(int(r[key][0]), int(r[key][1])))
            moved.append(set_offsets(new, r))
        new._.medllm_rels = moved
    for name in ("medllm_doc_id", "medllm_meta"):
        setattr(new._, name, getattr(doc._, name))
    new.cats = dict(doc.cats)
    return new


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@registry.augmenters("spacy_medllm.eda_augmenter.v1")
def create_eda_augmenter(
    level: float = 0.2,
    alpha: float = 0.1,
    operations: List[str] = list(OPERATIONS),
    synonyms_path: Optional[Path] = None,
    kb_path: Optional[Path] = None,
    seed: int = 0,
) -> Callable[[Language, Example], Iterator[Example]]:
    """Yield each example, and with probability `level` also an EDA-edited copy.

    level (float): share of examples that get an edited copy.
    alpha (float): share of the context words an operation edits.
    operations (List[str]): the operations drawn from: synonym, insert, swap, delete.
    synonyms_path (Optional[Path]): a JSON word list `{"word": ["synonym", ...]}`; the one
        shipped with the package if None.
    kb_path (Optional[Path]): a knowledge base folder (`medllm build-kb`): context words that
        are aliases of one concept get that concept's other names as synonyms.
    seed (int): the random seed, for reproducible training.
    """
    unknown = [op for op in operations if op not in OPERATIONS]
    if unknown or not operations:
        raise ValueError(Errors.E089.format(op=unknown or operations, known=", ".join(OPERATIONS)))
    rng = random.Random(seed)
    state: Dict[str, SynonymSource] = {}

    def augment(nlp: Language, example: Example) -> Iterator[Example]:
        yield example
        if rng.random() >= level:
            return
        if "source" not in state:
            state["source"] = SynonymSource.load(synonyms_path, kb_path)
        ref = eda_copy(nlp, example.reference, rng, state["source"], alpha=alpha, operations=operations)
        if ref is not None:
            yield Example(nlp.make_doc(ref.text), ref)

    return augment
