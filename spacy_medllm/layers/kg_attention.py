"""`spacy_medllm.KGAttention.v1`: knowledge-enhanced token vectors, as ERNIE and KnowBERT do.

The layer wraps a tok2vec (usually the transformer listener). For each doc, an
alias matcher finds the spans (up to `max_span_tokens` tokens) whose text is a
knowledge base name of a concept that has a graph embedding; each token covered by
such spans attends, with several heads, over the embeddings of those concepts
(longest spans first, at most `max_candidates`), and the result, projected back to
the token width, is added through a learned gate (`KGAttentionModule`). Tokens with
no candidate come out exactly as they went in.

NER, `medllm_linker` and a relation model can use it wherever they take a tok2vec:

    [components.ner.model.tok2vec]
    @architectures = "spacy_medllm.KGAttention.v1"
    embeddings_path = "corpus/kg/embeddings"
    kb_path = "corpus/kb"

    [components.ner.model.tok2vec.tok2vec]
    @architectures = "spacy-transformers.TransformerListener.v1"
    ...

The embedding table (`medllm train-kg`) and the knowledge base are read once, in
`nlp.initialize`; after that the table lives in the layer's weights and the alias
dictionary in its attributes, so both are saved by `nlp.to_disk` and come back with
`spacy.load`, which needs neither file.
"""
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy
import srsly
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.model import deserialize_attr, serialize_attr
from thinc.types import Floats2d

from ..errors import Errors
from ..kb.knowledge_base import KnowledgeBase, normalize_alias
from .kg_attention_torch import KGAttentionModule, config_from_state
from .threads import torch_fork_safe
from .torch_io import replace_module, wrap_module

if TYPE_CHECKING:
    from ..kg.embeddings import EmbeddingTable

MATCHER_FORMAT = "spacy_medllm.kg_alias_matcher"
MATCHER_VERSION = 1


def _english_stop_words() -> Set[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return set(STOP_WORDS)


# prefix of the keys of names that match only with their case
CASED = "\x01"


def is_case_sensitive(name: str) -> bool:
    """Abbreviation-like names: three characters or fewer, or no lower-case letter."""
    name = name.strip()
    return len(name) <= 3 or not any(ch.islower() for ch in name)


class AliasMatcher:
    """Token-sequence dictionary of normalized KB names -> rows of the embedding table.

    A span matches when `normalize_alias` of its text is a key; keys are built token
    by token (lower-cased token texts joined by a space where the doc has
    whitespace), so a doc is scanned with `len(doc) * max_span_tokens` dictionary
    lookups. Names that can only produce noise are left out: one-character names,
    names without a letter, and single English stop words (`was`, `can`, `no`).
    Abbreviation-like names (three characters or fewer, or no lower-case letter:
    `Mg`, `MG`, `AIDS`) match only with their case, so the unit "mg" is not
    magnesium or myasthenia gravis.

    max_span_tokens (int): the longest span, in tokens, that is looked up.
    max_candidates (int): the most concepts a token attends over.
    """

    def __init__(self, max_span_tokens: int = 6, max_candidates: int = 8):
        self.max_span_tokens = max_span_tokens
        self.max_candidates = max_candidates
        self.concept_ids: List[str] = []
        self.aliases: Dict[str, List[int]] = {}

    @property
    def is_ready(self) -> bool:
        return bool(self.concept_ids)

    def set_from_kb(self, kb: KnowledgeBase, table_ids: Sequence[str]) -> None:
        """Index the names of the KB concepts that have a row in the table `table_ids`."""
        rows = {cid: i for i, cid in enumerate(table_ids)}
        stop = _english_stop_words()
        aliases: Dict[str, List[int]] = {}
        for concept in kb:
            row = rows.get(concept.concept_id)
            if row is None:
                continue
            for name in concept.names:
                key = normalize_alias(name)
                if len(key) < 2 or not any(ch.isalpha() for ch in key) or key in stop:
                    continue
                if is_case_sensitive(name):
                    key = CASED + " ".join(name.split())
                # every whitespace-separated word is at least one token
                if key.count(" ") >= self.max_span_tokens:
                    continue
                entry = aliases.setdefault(key, [])
                if row not in entry and len(entry) < self.max_candidates:
                    entry.append(row)
        self.concept_ids = list(table_ids)
        self.aliases = aliases

    def spans(self, doc: Doc) -> List[Tuple[int, int, List[int]]]:
        """(start, end, rows) of every span of `doc` that is a known name."""
        texts = [t.text for t in doc]
        lowers = [t.lower_ for t in doc]
        spaces = [bool(t.whitespace_) for t in doc]
        is_space = [t.is_space for t in doc]
        aliases = self.aliases
        n = len(lowers)
        out = []
        for i in range(n):
            if is_space[i]:
                continue
            key = lowers[i]
            cased = CASED + texts[i]
            for j in range(i, min(n, i + self.max_span_tokens)):
                if j > i:
                    if is_space[j]:
                        break  # a name does not run across a line break
                    sep = " " if spaces[j - 1] else ""
                    key = key + sep + lowers[j]
                    cased = cased + sep + texts[j]
                rows = aliases.get(key)
                cased_rows = aliases.get(cased)
                if cased_rows is not None:
                    rows = cased_rows if rows is None else rows + [r for r in cased_rows if r not in rows]
                if rows is not None:
                    out.append((i, j + 1, rows))
        return out

    def __call__(self, doc: Doc) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """The tokens of `doc` with candidates and their candidate rows.

        RETURNS (Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]): token indices (M,),
            rows (M, max_candidates) int64 and mask (M, max_candidates) bool; longer
            spans' concepts come first.
        """
        per_token: Dict[int, List[int]] = {}
        k = self.max_candidates
        for start, end, rows in sorted(self.spans(doc), key=lambda s: (s[0] - s[1], s[0])):
            for i in range(start, end):
                cands = per_token.setdefault(i, [])
                for r in rows:
                    if len(cands) >= k:
                        break
                    if r not in cands:
                        cands.append(r)
        tokens = numpy.array(sorted(per_token), dtype="int64")
        rows_arr = numpy.zeros((len(tokens), k), dtype="int64")
        mask = numpy.zeros((len(tokens), k), dtype="bool")
        for m, i in enumerate(tokens):
            cands = per_token[int(i)]
            rows_arr[m, : len(cands)] = cands
            mask[m, : len(cands)] = True
        return tokens, rows_arr, mask

    def to_bytes(self) -> bytes:
        keys = list(self.aliases)
        return srsly.msgpack_dumps(
            {
                "format": MATCHER_FORMAT,
                "version": MATCHER_VERSION,
                "concept_ids": self.concept_ids,
                "keys": keys,
                "rows": [self.aliases[k] for k in keys],
            }
        )

    def from_bytes(self, data: bytes) -> "AliasMatcher":
        msg = srsly.msgpack_loads(data)
        if not isinstance(msg, dict) or msg.get("format") != MATCHER_FORMAT:
            raise ValueError(Errors.E020.format(reason="the alias matcher data is missing or of another format"))
        if not isinstance(msg.get("version"), int) or msg["version"] > MATCHER_VERSION:
            raise ValueError(Errors.E020.format(reason=f"alias matcher format version {msg.get('version')!r} is newer than this spacy_medllm supports ({MATCHER_VERSION})"))
        self.concept_ids = list(msg["concept_ids"])
        self.aliases = {k: list(r) for k, r in zip(msg["keys"], msg["rows"])}
        return self


@serialize_attr.register(AliasMatcher)
def _serialize_matcher(_: AliasMatcher, value: AliasMatcher, name: str, model: Model) -> bytes:
    return value.to_bytes()


@deserialize_attr.register(AliasMatcher)
def _deserialize_matcher(current: AliasMatcher, value: bytes, name: str, model: Model) -> AliasMatcher:
    return AliasMatcher(current.max_span_tokens, current.max_candidates).from_bytes(value)


@registry.architectures("spacy_medllm.KGAttention.v1")
def build_kg_attention(
    tok2vec: Model[List[Doc], List[Floats2d]],
    embeddings_path: Optional[str] = None,
    kb_path: Optional[str] = None,
    n_heads: int = 4,
    attention_width: int = 128,
    max_span_tokens: int = 6,
    max_candidates: int = 8,
    freeze_embeddings: bool = True,
) -> Model[List[Doc], List[Floats2d]]:
    """Token vectors of `tok2vec`, enhanced with the graph embeddings of KB candidates.

    tok2vec (Model[List[Doc], List[Floats2d]]): the token vectors to enhance, usually
        a transformer listener; the output has the same width.
    embeddings_path (Optional[str]): folder written by `medllm train-kg`; read in
        `nlp.initialize` only.
    kb_path (Optional[str]): folder or file of the knowledge base (`medllm build-kb`)
        whose names feed the alias matcher; read in `nlp.initialize` only.
    n_heads (int): attention heads.
    attention_width (int): width of queries, keys and values (a multiple of n_heads).
    max_span_tokens (int): longest name, in tokens, the matcher looks up.
    max_candidates (int): most concepts a token attends over.
    freeze_embeddings (bool): keep the graph embeddings fixed (True) or fine-tune them.
    """
    if n_heads <= 0 or attention_width <= 0 or attention_width % n_heads:
        raise ValueError(Errors.E019.format(width=attention_width, n_heads=n_heads))
    torch_fork_safe()
    width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    # a placeholder module: the real shapes are known at initialize (or from saved weights)
    module = KGAttentionModule(width or 1, 1, 1, n_heads, attention_width, freeze_embeddings)
    attention = wrap_module(
        module, name="kg_attention", build=KGAttentionModule, convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs, legacy_config=config_from_state,
    )

    def init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
        _init(model, X, embeddings_path=embeddings_path, kb_path=kb_path)

    return Model(
        "kg_attention",
        forward,
        init=init,
        layers=[tok2vec, attention],
        refs={"tok2vec": tok2vec, "attention": attention},
        dims={"nO": width},
        attrs={
            "matcher": AliasMatcher(max_span_tokens, max_candidates),
            "n_heads": n_heads,
            "attention_width": attention_width,
            "freeze_embeddings": freeze_embeddings,
        },
    )


def _init(model: Model, X: Optional[List[Doc]], *, embeddings_path: Optional[str], kb_path: Optional[str]) -> None:
    from ..kg.embeddings import EmbeddingTable

    tok2vec = model.get_ref("tok2vec")
    if X is not None:
        tok2vec.initialize(X=X)
    else:
        tok2vec.initialize()
    width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    if not width and X:
        width = int(tok2vec.predict(X[:1])[0].shape[1])
    if embeddings_path is None or kb_path is None:
        raise ValueError(Errors.E017)
    table = EmbeddingTable.from_disk(embeddings_path)
    kb = KnowledgeBase.from_disk(kb_path)
    set_knowledge(model, table, kb, width, source=str(embeddings_path))


def set_knowledge(model: Model, table: "EmbeddingTable", kb: KnowledgeBase, width: int, source: str = "<table>") -> None:
    """Give an initialized-tok2vec layer its embedding table and alias matcher.

    model (Model): a `spacy_medllm.KGAttention.v1` layer.
    table (EmbeddingTable): the graph embeddings (`medllm train-kg`).
    kb (KnowledgeBase): the knowledge base whose names are matched.
    width (int): the width of the wrapped tok2vec's vectors.
    source (str): where the table came from, for error messages.
    """
    import torch

    matcher: AliasMatcher = model.attrs["matcher"]
    matcher.set_from_kb(kb, table.ids)
    if not matcher.aliases:
        raise ValueError(Errors.E018.format(n=len(table), path=source, kb=f"({len(kb)} concepts)"))
    module = KGAttentionModule(
        width, len(table), table.dimension, model.attrs["n_heads"], model.attrs["attention_width"], model.attrs["freeze_embeddings"]
    )
    module.set_embeddings(torch.from_numpy(table.vectors))
    # on the device of the placeholder it replaces (the one `--gpu-id` chose)
    replace_module(model, model.get_ref("attention"), module)
    model.set_dim("nO", width)


def forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    matcher: AliasMatcher = model.attrs["matcher"]
    if not matcher.is_ready:
        raise ValueError(Errors.E021)
    tokvecs, bp_tokvecs = model.get_ref("tok2vec")(docs, is_train)
    ops = model.ops
    positions: List[Tuple[int, numpy.ndarray]] = []
    rows, masks = [], []
    for d, doc in enumerate(docs):
        tokens, cand_rows, mask = matcher(doc)
        if len(tokens):
            positions.append((d, ops.asarray(tokens, dtype="int64") if ops.device_type != "cpu" else tokens))
            rows.append(cand_rows)
            masks.append(mask)
    if not positions:
        return tokvecs, bp_tokvecs
    xp = ops.xp
    selected = xp.concatenate([tokvecs[d][idx] for d, idx in positions])
    delta, bp_delta = model.get_ref("attention")((selected, numpy.concatenate(rows), numpy.concatenate(masks)), is_train)
    outputs = _add_at(tokvecs, positions, delta)

    def backprop(d_outputs: List[Floats2d]) -> List[Doc]:
        d_delta = xp.concatenate([d_outputs[d][idx] for d, idx in positions])
        return bp_tokvecs(_add_at(d_outputs, positions, bp_delta(d_delta)))

    return outputs, backprop


def _add_at(arrays: List[Floats2d], positions: List[Tuple[int, numpy.ndarray]], values: Floats2d) -> List[Floats2d]:
    """Copies of `arrays` with consecutive rows of `values` added at each (array index, rows);
    the arrays without positions are passed on as they are."""
    out = list(arrays)
    offset = 0
    for d, idx in positions:
        added = arrays[d].copy()
        added[idx] += values[offset : offset + len(idx)]
        out[d] = added
        offset += len(idx)
    return out


def _convert_inputs(model: Model, X, is_train: bool):
    selected, rows, mask = X
    device = model.shims[0].device
    args = (
        xp2torch(selected, requires_grad=is_train, device=device),
        xp2torch(model.ops.asarray(rows, dtype="int64"), device=device),
        xp2torch(model.ops.asarray(mask, dtype="bool"), device=device),
    )

    def reverse(d_inputs: ArgsKwargs):
        return torch2xp(d_inputs.args[0])

    return ArgsKwargs(args=args, kwargs={}), reverse


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, delta = inputs_outputs

    def reverse(d_delta):
        return ArgsKwargs(args=(delta,), kwargs={"grad_tensors": (xp2torch(d_delta, device=model.shims[0].device),)})

    return torch2xp(delta), reverse


def matcher_stats(model_or_matcher: Union[Model, AliasMatcher], docs: Iterable[Doc], gold: Optional[Iterable[Doc]] = None) -> Dict[str, float]:
    """How many tokens get candidates, how many, and how long matching takes per doc.

    docs (Iterable[Doc]): the docs, tokenized as the pipeline would.
    gold (Optional[Iterable[Doc]]): the same texts with gold entities; adds the share of
        entity tokens (aligned by characters) that have candidates.
    RETURNS (Dict[str, float]): docs, tokens, tokens_with_candidates, fraction_with_candidates,
        mean_candidates (over tokens with any), ms_per_doc, and with `gold`
        entity_tokens and entity_token_fraction_with_candidates.
    """
    matcher = model_or_matcher.attrs["matcher"] if isinstance(model_or_matcher, Model) else model_or_matcher
    n_docs = n_tokens = n_with = n_cands = n_ent = n_ent_with = 0
    seconds = 0.0
    golds = iter(gold) if gold is not None else None
    for doc in docs:
        t0 = time.perf_counter()
        tokens, _, mask = matcher(doc)
        seconds += time.perf_counter() - t0
        n_docs += 1
        n_tokens += len(doc)
        n_with += len(tokens)
        n_cands += int(mask.sum())
        if golds is not None:
            ref = next(golds)
            covered = set(tokens.tolist())
            for ent in ref.ents:
                span = doc.char_span(ent.start_char, ent.end_char, alignment_mode="expand")
                if span is not None:
                    n_ent += len(span)
                    n_ent_with += sum(1 for t in span if t.i in covered)
    out = {
        "docs": n_docs,
        "tokens": n_tokens,
        "tokens_with_candidates": n_with,
        "fraction_with_candidates": round(n_with / n_tokens, 4) if n_tokens else 0.0,
        "mean_candidates": round(n_cands / n_with, 2) if n_with else 0.0,
        "ms_per_doc": round(1000 * seconds / n_docs, 3) if n_docs else 0.0,
    }
    if golds is not None:
        out["entity_tokens"] = n_ent
        out["entity_token_fraction_with_candidates"] = round(n_ent_with / n_ent, 4) if n_ent else 0.0
    return out


def load_knowledge(embeddings_path: Union[str, Path], kb_path: Union[str, Path], max_span_tokens: int = 6, max_candidates: int = 8) -> AliasMatcher:
    """An alias matcher over `kb_path` for the concepts of the table at `embeddings_path` (for measurements)."""
    from ..kg.embeddings import EmbeddingTable

    table = EmbeddingTable.from_disk(embeddings_path)
    matcher = AliasMatcher(max_span_tokens, max_candidates)
    matcher.set_from_kb(KnowledgeBase.from_disk(kb_path), table.ids)
    return matcher
