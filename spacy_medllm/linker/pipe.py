"""The `medllm_linker` component: link entities to knowledge base concepts.

For every entity the component generates candidates (exact alias lookup plus
character n-gram TF-IDF over all KB names, `spacy_medllm.kb.CandidateGenerator`),
describes each with string, type and training-prior features, and reranks them with
`spacy_medllm.LinkerModel.v1`, which adds the mention in context from the shared
encoder when the model has one. A NIL slot and an optional probability threshold
leave unlinkable mentions without an id. A short form is linked through its long
form: the abbreviations come from scispaCy's `abbreviation_detector` when it runs
earlier in the pipeline, and are otherwise found inside the component by the same
algorithm (Schwartz & Hearst's) run on the text's characters rather than on tokens
(`spacy_medllm.linker.abbreviations`; without writing `doc._.abbreviations`). A short
form that is itself a KB name of the entity's type, whose long form is not, is linked as
written ("1-(2-chloroethyl)-3-cyclohexyl-1-nitrosourea (CCNU)": the KB names lomustine
"CCNU", not by that systematic name).

Writes `ent.kb_id_` (the concept id, or `NIL`), `Span._.kb_candidates` (list of
`[concept_id, probability]` lists, best first: plain lists, so a Doc from a DocBin or
from `nlp.pipe(n_process=...)` holds the same value) and `Span._.kb_concept` (the chosen concept's
id, name, types and definition). The knowledge base, the index, the priors and the
model are saved with `nlp.to_disk`; an uninitialized component saves and loads too, and
says what is missing when it is used.
"""
import math
import zlib
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate

from ..errors import Errors
from ..kb import CandidateGenerator, KnowledgeBase
from ..kb.knowledge_base import normalize_alias
from ..layers.heap import trim_heap
from ..layers.optim import finish_update_scaled
from ..layers.threads import torch_fork_safe
from ..tokens import NIL, install_extensions, set_link, split_kb_id
from .abbreviations import abbreviation_definitions, mention_long_forms, number_variants
from .features import DOC_SUPPORT_FEATURE, BlockContext, CandidateContext, LinkerFeatures, make_linker_features
from .model import LinkerBatch, input_width, set_feature_width

DEFAULT_LINKER_MODEL = """
[model]
@architectures = "spacy_medllm.LinkerModel.v2"
tok2vec = null
n_features = null
hidden_width = 64
n_concept_rows = 65536
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_LINKER_MODEL)["model"]


@Language.factory(
    "medllm_linker",
    requires=["doc.ents"],
    assigns=["token.ent_kb_id", "span._.kb_candidates", "span._.kb_concept"],
    default_config={
        "model": DEFAULT_MODEL,
        "top_k": 30,
        "threshold": None,
        "nil_bias": 0.0,
        "use_abbreviations": True,
        "abbreviation_mentions": False,
        "labels_discard": [],
        "features": {
            "@misc": "spacy_medllm.linker_features.v1",
            "type_labels": {"Chemical": ["Chemical"], "Disease": ["Disease"]},
            "features": None,
        },
        "scorer": {"@scorers": "spacy_medllm.linker_scorer.v1"},
        "learn_rate_scale": 1.0,
    },
    default_score_weights={"medllm_link_acc": 1.0},
)
def make_linker(
    nlp: Language,
    name: str,
    model: Model,
    top_k: int,
    threshold: Optional[float],
    use_abbreviations: bool,
    labels_discard: Sequence[str],
    scorer: Optional[Callable],
    features: Optional[LinkerFeatures] = None,
    learn_rate_scale: float = 1.0,
    nil_bias: Union[float, Dict[str, float]] = 0.0,
    abbreviation_mentions: bool = False,
) -> "MedLinker":
    """Create a `medllm_linker`.

    model (Model): scores candidates, `spacy_medllm.LinkerModel.v1`.
    top_k (int): candidates per mention.
    threshold (float): a best probability below it gives NIL (None: only the NIL slot decides).
    nil_bias (float): added to the NIL slot's score when the answer is chosen (the
        probabilities in `kb_candidates` stay those of the model): above 0 the component
        abstains more often (end-to-end precision), below 0 less (-100: it answers whenever
        there is a candidate, as gold-mention accuracy wants). README: the trade-off on dev.
        A dict sets it per entity label (`{"Chemical": 2.0, "Disease": 0.0}`; a label it
        does not name gets 0).
    use_abbreviations (bool): link short forms through their long form (scispaCy's detector).
    abbreviation_mentions (bool): with `use_abbreviations`, also link a short form through
        the other grammatical number of a definition ("VSD" where the text defines "VSDs")
        and, where the text does not define it, through another mention of the same label
        that its letters spell ("OAB" -> the document's "overactive bladder").
    labels_discard (Sequence[str]): entity labels not to link.
    features (LinkerFeatures): the candidate features, `spacy_medllm.linker_features.v1`
        (its `type_labels` map entity labels to KB types); the model's feature width.
    learn_rate_scale (float): the component's own weights move with the training
        optimizer's learning rate times this factor; trained together with a transformer
        (one optimizer, a transformer-sized rate) the candidate scorer needs a larger one.
    """
    if learn_rate_scale <= 0:
        raise ValueError(Errors.E037.format(name=name, value=learn_rate_scale))
    check_nil_bias(nil_bias, f"{name}.nil_bias")
    return MedLinker(
        nlp.vocab, model, name, top_k=top_k, threshold=threshold, use_abbreviations=use_abbreviations,
        labels_discard=labels_discard, scorer=scorer, features=features, learn_rate_scale=learn_rate_scale,
        nil_bias=nil_bias, abbreviation_mentions=abbreviation_mentions,
    )


def check_nil_bias(nil_bias, path: str) -> None:
    """A `nil_bias` setting: a finite number, or a dict of entity label -> finite number."""
    values = nil_bias.items() if isinstance(nil_bias, Mapping) else [(None, nil_bias)]
    for label, value in values:
        where = path if label is None else f"{path}.{label}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(Errors.E154.format(path=where, reason=f"{value!r}: a finite number (-100 answers whenever there is a candidate)"))


def nil_bias_for(nil_bias, label: str) -> float:
    """The NIL bias a mention of `label` gets under a `nil_bias` setting."""
    if isinstance(nil_bias, Mapping):
        return float(nil_bias.get(label, 0.0))
    return float(nil_bias)


# what training leaves out of the priors (`MedLinker.initialize`)
LEAVE_OUT = ("mention", "document")


def _load_kb(path: Path) -> Tuple[KnowledgeBase, Optional[CandidateGenerator]]:
    """A `medllm build-kb` folder: its KB, and its candidate index where it has one."""
    kb = KnowledgeBase.from_disk(path)
    index = Path(path) / "index"
    return kb, (CandidateGenerator.from_disk(index, kb) if index.exists() else None)


def load_kb_and_generator(path: Path) -> Tuple[KnowledgeBase, CandidateGenerator]:
    """A `medllm build-kb` folder's KB and candidate generator (its saved index, or one
    built from the KB where it has none)."""
    kb, generator = _load_kb(path)
    return kb, generator if generator is not None else CandidateGenerator(kb)


def choose_slot(scores: numpy.ndarray, n_candidates: int, nil_bias: float, threshold: Optional[float] = None,
                probs: Optional[numpy.ndarray] = None) -> int:
    """The slot a mention is answered with (0: NIL, else 1 + the candidate's index): the best
    of NIL and the real candidates, NIL's score shifted by `nil_bias` (padded slots score
    -1e4, which a large negative bias would otherwise put above NIL); a candidate whose
    probability (of the unshifted scores; `probs` where the caller has them) is below
    `threshold` gives NIL."""
    shifted = scores[: n_candidates + 1].astype("float64")
    shifted[0] += nil_bias
    best = int(shifted.argmax())
    if best > 0 and threshold is not None and (probs if probs is not None else _softmax(scores))[best] < threshold:
        return 0
    return best


def concept_row(concept_id: str, n_rows: int) -> int:
    """A stable row of the hashed concept table; row 0 is NIL."""
    return 1 + zlib.crc32(concept_id.encode("utf8")) % (n_rows - 1)


class MedLinker(TrainablePipe):
    """Rerank knowledge base candidates of each entity; see the module docstring."""

    def __init__(
        self, vocab: Vocab, model: Model, name: str = "medllm_linker", *, top_k: int = 30,
        threshold: Optional[float] = None, use_abbreviations: bool = True,
        labels_discard: Sequence[str] = (), scorer: Optional[Callable] = None,
        features: Optional[LinkerFeatures] = None, learn_rate_scale: float = 1.0,
        nil_bias: Union[float, Dict[str, float]] = 0.0, abbreviation_mentions: bool = False,
    ):
        install_extensions()
        torch_fork_safe()
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.features = features if features is not None else make_linker_features()
        width = model.attrs.get("n_features")
        if width is None:
            # derived from the featurizer (the default model config leaves it to the component)
            set_feature_width(model, len(self.features))
        elif width != len(self.features):
            raise ValueError(Errors.E136.format(name=name, width=width, featurizer="spacy_medllm.linker_features.v1", n=len(self.features)))
        self.cfg = {
            "top_k": top_k, "threshold": threshold, "use_abbreviations": use_abbreviations,
            "labels_discard": list(labels_discard),
            "nil_bias": {str(k): float(v) for k, v in nil_bias.items()} if isinstance(nil_bias, Mapping) else float(nil_bias),
            "abbreviation_mentions": bool(abbreviation_mentions),
        }
        self.kb: Optional[KnowledgeBase] = None
        self.generator: Optional[CandidateGenerator] = None
        # the KB and generator that training mentions are linked with (`initialize`'s
        # `train_kb_path`; None: the KB above); never saved
        self.train_kb: Optional[KnowledgeBase] = None
        self.train_generator: Optional[CandidateGenerator] = None
        self.priors: Dict[str, Dict[str, int]] = {}
        self.concept_counts: Dict[str, int] = {}
        self.learn_rate_scale = float(learn_rate_scale)
        # (text, label, expanded, short form) -> a mention's arrays, in prediction (see `_batch`)
        self.block_cache_size = 4096
        self._block_cache: "OrderedDict" = OrderedDict()
        self._block_setting: Optional[tuple] = None
        # concept id -> its normalized canonical name (the KB's; emptied with a new KB)
        self._canonical_keys: Dict[str, str] = {}

    def finish_update(self, sgd: Optimizer) -> None:
        """Update the component's weights, with the learning rate times `learn_rate_scale`
        (a listener has no weights: the shared encoder keeps the optimizer's own rate)."""
        finish_update_scaled(self.model, sgd, self.learn_rate_scale)

    # ---- knowledge base ----------------------------------------------------------------
    def set_kb(self, kb: KnowledgeBase, generator: Optional[CandidateGenerator] = None) -> None:
        self.kb = kb
        self.generator = generator if generator is not None else CandidateGenerator(kb)
        self._block_setting = None
        self._canonical_keys = {}

    def _canonical_name_key(self, kb: KnowledgeBase, cid: str, concept) -> str:
        """The normalized canonical name of a concept: cached for the component's KB,
        computed for the training KB (whose blocks are computed once each anyway)."""
        return self._canonical_key(cid, concept) if kb is self.kb else normalize_alias(concept.canonical_name)

    def _canonical_key(self, cid: str, concept) -> str:
        """The normalized canonical name of a concept, computed once per KB."""
        key = self._canonical_keys.get(cid)
        if key is None:
            key = self._canonical_keys[cid] = normalize_alias(concept.canonical_name)
        return key

    def _primary_ids(self, kb_id: str) -> List[str]:
        """The KB's primary ids of a gold id string (`D1|D2`), without duplicates: the
        candidates carry primary ids, so a gold alternative id is the same concept. An id
        the KB lacks stays as it is (no candidate has it)."""
        ids = split_kb_id(kb_id)
        if self.kb is None:
            return ids
        return list(dict.fromkeys(self.kb.resolve(i) or i for i in ids))

    def _require_kb(self) -> None:
        if self.kb is None or self.generator is None:
            raise ValueError(Errors.E013.format(name=self.name))

    def _require_initialized(self) -> None:
        """A KB and a model that `initialize` (or a trained pipeline) has set up."""
        self._require_kb()
        if "width" not in self.cfg:
            raise ValueError(Errors.E040.format(name=self.name))

    # ---- mentions and candidates ---------------------------------------------------------
    def _mentions(self, doc: Doc, spans: Optional[Sequence[Span]] = None) -> List[Tuple[Span, str, bool]]:
        """(entity, text to link, expanded from an abbreviation) for the entities to link.

        spans: the entities (default `doc.ents`); entities with a discarded label are skipped.
        """
        ents = list(doc.ents if spans is None else spans)
        long_forms: Dict[str, str] = {}
        if self.cfg["use_abbreviations"]:
            long_forms = self._long_forms(doc)
            if self.cfg.get("abbreviation_mentions", False):
                long_forms = number_variants(long_forms)
                long_forms.update(mention_long_forms([(e.text, e.label_) for e in ents], long_forms))
        discard = set(self.cfg["labels_discard"])
        out = []
        for ent in ents:
            if ent.label_ in discard:
                continue
            long = long_forms.get(ent.text)
            if long is not None and self._typed_name(ent.text, ent.label_) and not self._typed_name(long, ent.label_):
                # "(CCNU)" after a systematic name the KB lacks: the short form is the name
                long = None
            out.append((ent, long if long is not None else ent.text, long is not None))
        return out

    def _typed_name(self, text: str, label: str) -> bool:
        """Whether `text` is a name (case and whitespace ignored) of a concept of the label's types."""
        if self.kb is None:
            return False
        types = self.features.types_of(label)
        return any(types & set(self.kb[cid].types) for cid in self.kb.lookup(text))

    def _long_forms(self, doc: Doc) -> Dict[str, str]:
        """Short form text -> long form text of the abbreviations defined in the document.

        scispaCy's detector writes `doc._.abbreviations` as short-form Spans whose
        `._.long_form` is a Span, or, with `make_serializable=True` (what `n_process`
        needs), as dicts with `short_text` and `long_text` (the Spans' `._.long_form`
        then holds the text); both are read.
        """
        if Doc.has_extension("abbreviations") and doc._.abbreviations:
            out: Dict[str, str] = {}
            for abbreviation in doc._.abbreviations:
                if isinstance(abbreviation, dict):
                    short, long = abbreviation.get("short_text"), abbreviation.get("long_text")
                else:
                    short, long = abbreviation.text, getattr(abbreviation._, "long_form", None)
                    long = long.text if isinstance(long, Span) else long
                if short and long:
                    out[str(short)] = str(long)
            return out
        if len(doc):
            return self._abbreviation_definitions(doc)
        return {}

    def _abbreviation_definitions(self, doc: Doc) -> Dict[str, str]:
        """Short form text -> long form text of the definitions in the document's text
        (`spacy_medllm.linker.abbreviations`: Schwartz & Hearst's algorithm on characters,
        which the hyphen-splitting biomedical tokenizer does not cut short)."""
        text = doc.text
        return abbreviation_definitions(text) if "(" in text else {}

    def _batch(self, docs: Sequence[Doc], mentions: List[List[Tuple[Span, str, bool]]], gold: Optional[List[str]] = None,
               doc_counts: Optional[List[Tuple[Dict[str, Counter], Counter]]] = None):
        """Candidates of all mentions and the arrays the model reads.

        gold: the gold id string of each mention, in training. The training mentions
        themselves were counted into the priors; leaving each one's own count out
        (leave-one-out) keeps the model from trusting priors more than they deserve on
        unseen text. doc_counts: per Doc, its own (text -> concept counts, concept counts),
        left out instead of the mention's own count (`leave_out = "document"`: a text
        counts as seen only when another document has it, as at test time).
        """
        self._require_kb()
        training = gold is not None
        kb = self.train_kb if training and self.train_kb is not None else self.kb
        generator = self.train_generator if training and self.train_generator is not None else self.generator
        flat = [(i, m) for i, ms in enumerate(mentions) for m in ms]
        k = self.cfg["top_k"]
        featurizer = self.features
        feats = numpy.zeros((len(flat), k + 1, len(featurizer)), dtype="float32")
        rows = numpy.zeros((len(flat), k + 1), dtype="int64")
        mask = numpy.zeros((len(flat), k + 1), dtype="bool")
        spans = [(i, ent.start, ent.end) for i, (ent, _, _) in flat]
        # the short form rides along for an expanded abbreviation (feature short_exact)
        keys = [(normalize_alias(text), ent.label_, expanded, normalize_alias(ent.text) if expanded else "") for _, (ent, text, expanded) in flat]
        # in prediction a mention's arrays depend on (text, label, expanded, short form) alone: each
        # distinct one is computed once and the latest `block_cache_size` are kept across
        # calls (training leaves each mention's own counts out, so it computes every one)
        cache = self._blocks(k) if gold is None else None
        if cache is None:
            todo = list(range(len(flat)))
        else:
            first = {}
            for j, key in enumerate(keys):
                if key not in cache:
                    first.setdefault(key, j)
            todo = list(first.values())
        detailed = generator.detailed([flat[j][1][1] for j in todo], k=k) if todo else []
        fresh = {}
        for j, cs in zip(todo, detailed):
            leave_out = None
            if training:
                if doc_counts is not None:
                    own_priors, own_concepts = doc_counts[flat[j][0]]
                    leave_out = (own_priors.get(keys[j][0], {}), own_concepts)
                else:
                    own = self._primary_ids(gold[j])
                    leave_out = ({own[0]: 1}, {own[0]: 1}) if len(own) == 1 else ({}, {})
            fresh[j] = self._mention_block(keys[j], cs, leave_out, kb)
            if cache is not None:
                cache[keys[j]] = fresh[j]
        cands = []
        for j, key in enumerate(keys):
            if cache is None:
                block = fresh[j]
            else:
                block = cache[key]
                cache.move_to_end(key)
            feats[j], rows[j], mask[j] = block[0], block[1], block[2]
            cands.append(list(block[3]))
        if cache is not None:
            while len(cache) > self.block_cache_size:
                cache.popitem(last=False)
        if DOC_SUPPORT_FEATURE in featurizer.names:
            self._doc_support(feats, flat, keys, cands, featurizer.names.index(DOC_SUPPORT_FEATURE))
        return LinkerBatch(spans, feats, rows, mask), cands

    @staticmethod
    def _doc_support(feats: numpy.ndarray, flat, keys, cands, column: int) -> None:
        """Column `column` of each candidate: 1 where the concept is the generator's best
        candidate for another mention of the same document with another (normalized) text."""
        tops: Dict[int, Dict[str, set]] = defaultdict(lambda: defaultdict(set))
        for j, (doc_i, _) in enumerate(flat):
            if cands[j]:
                tops[doc_i][cands[j][0][0]].add(keys[j][0])
        for j, (doc_i, _) in enumerate(flat):
            doc_tops = tops[doc_i]
            for slot, (cid, _) in enumerate(cands[j], start=1):
                texts = doc_tops.get(cid)
                feats[j, slot, column] = float(bool(texts) and bool(texts - {keys[j][0]}))

    def _blocks(self, k: int) -> "OrderedDict":
        """The prediction-time cache of mention arrays, emptied when what they are computed
        from changes (the KB, the generator or its settings, the priors, the featurizer)."""
        gen = self.generator
        setting = (id(self.kb), id(gen), gen.alpha, id(gen.dense), getattr(gen.dense, "query_precision", None), k, id(self.priors),
                   id(self.concept_counts), id(self.features))
        if self._block_setting != setting:
            self._block_cache = OrderedDict()
            self._block_setting = setting
        return self._block_cache

    def _mention_block(self, mention: Tuple[str, str, bool], cs, leave_out: Optional[Tuple[Mapping[str, int], Mapping[str, int]]] = None,
                       kb: Optional[KnowledgeBase] = None):
        """(features, concept rows, mask, candidates) of one mention (key, label, expanded, short
        form key or ""): slot 0 NIL, then its candidates.

        leave_out: in training, (concept -> count to leave out of this text's priors,
        concept -> count to leave out of the concept counts). kb: the KB the candidates
        come from (default the component's).
        """
        key, label, expanded, short = mention
        kb = self.kb if kb is None else kb
        own_prior, own_concepts = leave_out if leave_out is not None else ({}, {})
        k = self.cfg["top_k"]
        featurizer = self.features
        feats = numpy.zeros((k + 1, len(featurizer)), dtype="float32")
        rows = numpy.zeros((k + 1,), dtype="int64")
        mask = numpy.zeros((k + 1,), dtype="bool")
        n_rows = self.model.attrs["n_concept_rows"]
        mask[0] = True
        featurizer.fill_nil(feats[0])
        prior = self.priors.get(key, {})
        if own_prior and any(prior.get(cid, 0) > 0 for cid in own_prior):
            prior = {cid: max(n - own_prior.get(cid, 0), 0) for cid, n in prior.items()}
        total = sum(prior.values())
        best = cs[0][1] if cs else 0.0
        best_dense = max((c[3] for c in cs), default=0.0)
        short_ids = set(kb.lookup(short)) if short else set()
        counts = self.concept_counts
        # each candidate's training mentions, the mention's own left out (in training)
        concept_counts = [max(counts.get(c[0], 0) - own_concepts.get(c[0], 0), 0) for c in cs]
        if featurizer.blocks is not None and cs:
            # every feature has its all-candidates form: no per-candidate Python calls
            n = len(cs)
            cids = [c[0] for c in cs]
            concepts = [kb[cid] for cid in cids]
            featurizer.fill_block(feats[1 : n + 1], BlockContext(
                label=label, key=key, expanded=expanded, best=best, k=k, total=total, best_dense=best_dense,
                score=numpy.array([c[1] for c in cs], dtype="float64"), slot=numpy.arange(1, n + 1),
                types=[frozenset(c.types) for c in concepts],
                canonical_match=numpy.array([self._canonical_name_key(kb, cid, c) == key for cid, c in zip(cids, concepts)]),
                prior=numpy.array([prior.get(cid, 0) for cid in cids], dtype="float64"),
                concept_count=numpy.array(concept_counts),
                tfidf=numpy.array([c[2] for c in cs], dtype="float64"), dense=numpy.array([c[3] for c in cs], dtype="float64"),
                short_exact=numpy.array([cid in short_ids for cid in cids]),
            ))
            rows[1 : n + 1] = [concept_row(cid, n_rows) for cid in cids]
            mask[1 : n + 1] = True
            return feats, rows, mask, tuple((c[0], c[1]) for c in cs)
        top_types = frozenset(kb[cs[0][0]].types) if cs else frozenset()
        best_prior = max((prior.get(c[0], 0) for c in cs), default=0)
        best_count = max(concept_counts, default=0)
        for slot, (cid, score, tfidf, dense) in enumerate(cs, start=1):
            concept = kb[cid]
            featurizer.fill(feats[slot], CandidateContext(
                label=label, key=key, expanded=expanded, score=score, best=best, slot=slot, k=k,
                types=frozenset(concept.types), canonical_name=concept.canonical_name,
                prior=prior.get(cid, 0), total=total,
                concept_count=concept_counts[slot - 1],
                tfidf=tfidf, dense=dense, best_dense=best_dense, short_exact=cid in short_ids, top_types=top_types,
                best_prior=best_prior, best_count=best_count,
            ))
            rows[slot] = concept_row(cid, n_rows)
            mask[slot] = True
        return feats, rows, mask, tuple((c[0], c[1]) for c in cs)

    # ---- prediction ----------------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]):
        docs = list(docs)
        # what the components before this one freed for this batch (an NER's parse states:
        # ~50 MB for 32 abstracts) goes back to the OS before the candidate search
        # allocates its own (see `trim_heap`)
        trim_heap()
        mentions = [self._mentions(doc) for doc in docs]
        if any(mentions):
            self._require_initialized()
        batch, cands = self._batch(docs, mentions)
        if not batch.spans:
            return mentions, cands, numpy.zeros((0, self.cfg["top_k"] + 1), dtype="float32")
        logits = self.model.predict((docs, batch))
        return mentions, cands, self.model.ops.to_numpy(logits)

    def set_annotations(self, docs: Iterable[Doc], predictions) -> None:
        mentions, cands, logits = predictions
        j = 0
        threshold = self.cfg["threshold"]
        nil_bias = self.cfg.get("nil_bias", 0.0)
        check_nil_bias(nil_bias, f"{self.name}.nil_bias")
        for doc_mentions in mentions:
            for ent, _, _ in doc_mentions:
                row = logits[j]
                probs = _softmax(row)
                cs = cands[j]
                # the candidates by probability, ties in candidate order (a stable sort); the
                # probabilities rounded to 4 places as Python's round() does (half to even:
                # float32 values times 10**4 in float64 land on the same side of every tie)
                ranked = probs[1 : len(cs) + 1]
                order = numpy.argsort(-ranked, kind="stable")
                values = numpy.round(ranked[order].astype(numpy.float64), 4).tolist()
                best_slot = choose_slot(row, len(cs), nil_bias_for(nil_bias, ent.label_), threshold, probs)
                kb_id = cs[best_slot - 1][0] if best_slot > 0 else NIL
                for token in ent:
                    token.ent_kb_id_ = kb_id
                concept = None
                if kb_id != NIL and self.kb is not None:
                    c = self.kb[kb_id]
                    concept = {"id": c.concept_id, "name": c.canonical_name, "types": list(c.types), "definition": c.definition}
                set_link(ent, [[cs[i][0], v] for i, v in zip(order.tolist(), values)], concept)
                j += 1

    # ---- training ------------------------------------------------------------------------
    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd: Optional[Optimizer] = None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """Learn from the gold entities (aligned to the predicted tokens) and their gold ids.

        The model runs on every batch with tokens, even one with no mention whose answer
        is among its candidates, and hands its (then zero) gradient back: a shared
        transformer applies the gradients of all its listeners when the last one
        backpropagates, so a listener that skipped a batch would drop the others' too.
        """
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "MedLinker.update")
        self._require_initialized()
        if not any(len(eg.predicted) for eg in examples):
            # no tokens: the transformer does not run either, no listener waits
            return losses
        docs = [eg.predicted for eg in examples]
        _, gold_ids, batch, cands = self.training_batch(examples)
        keep, targets = [], []
        for j, kb_id in enumerate(gold_ids):
            if kb_id == NIL:
                slot: Optional[int] = 0
            else:
                ids = set(self._primary_ids(kb_id))
                # a gold id the candidates miss teaches nothing about ranking them
                slot = next((s for s, (cid, _) in enumerate(cands[j], start=1) if cid in ids), None)
            if slot is not None:
                keep.append(j)
                targets.append(slot)
        set_dropout_rate(self.model, drop)
        logits, backprop = self.model.begin_update((docs, batch))
        logits = self.model.ops.to_numpy(logits)
        if keep:
            loss, d_logits = self._loss(logits, keep, targets)
        else:
            loss, d_logits = 0.0, numpy.zeros_like(logits)
        backprop(self.model.ops.asarray(d_logits))
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def training_batch(self, examples: Sequence[Example]):
        """(mentions, gold id strings, LinkerBatch, candidates) of the gold entities of
        `examples`, aligned to the predicted tokens and featurized as training featurizes
        them (the training KB, the leave-out setting); used by `update` and by
        `spacy_medllm.linker.calibrate`."""
        discard = set(self.cfg["labels_discard"])
        mentions, gold_ids = [], []
        for eg in examples:
            spans = []
            for ent in eg.reference.ents:
                aligned = eg.get_aligned_spans_y2x([ent]) if ent.label_ not in discard else []
                if aligned:
                    spans.append(Span(eg.predicted, aligned[0].start, aligned[0].end, label=ent.label_))
                    gold_ids.append(ent.kb_id_)
            mentions.append(self._mentions(eg.predicted, spans))
        doc_counts = [self._doc_counts(eg.reference) for eg in examples] if self.cfg.get("leave_out") == "document" else None
        batch, cands = self._batch([eg.predicted for eg in examples], mentions, gold_ids, doc_counts)
        return mentions, gold_ids, batch, cands

    def _doc_counts(self, doc: Doc) -> Tuple[Dict[str, Counter], Counter]:
        """What a Doc's own linked mentions added to the priors and concept counts (as
        `initialize` counts them)."""
        priors: Dict[str, Counter] = defaultdict(Counter)
        concepts: Counter = Counter()
        for ent in doc.ents:
            ids = self._primary_ids(ent.kb_id_)
            if len(ids) == 1:
                priors[normalize_alias(ent.text)][ids[0]] += 1
                concepts[ids[0]] += 1
        return priors, concepts

    def _loss(self, logits: numpy.ndarray, keep: List[int], targets: List[int]) -> Tuple[float, numpy.ndarray]:
        """Softmax cross-entropy over the slots of the mentions whose answer is among them.

        A model of several heads (`n_heads`) gives each head's slots in turn: each head
        gets the gradient of its own loss, as if trained alone; the loss reported is
        their mean."""
        slots = self.cfg["top_k"] + 1
        heads = logits.shape[1] // slots
        if heads * slots != logits.shape[1]:
            raise ValueError(f"medllm_linker: the model gave {logits.shape[1]} scores per mention, not a multiple of top_k + 1 = {slots}")
        d = numpy.zeros_like(logits)
        loss = 0.0
        for j, t in zip(keep, targets):
            for h in range(heads):
                block = slice(h * slots, (h + 1) * slots)
                p = _softmax(logits[j, block])
                loss -= math.log(max(float(p[t]), 1e-12))
                p[t] -= 1.0
                d[j, block] = p / len(keep)
        return loss / (len(keep) * heads), d

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, object]:
        """Score with the component's scorer, given the KB so that any id of the gold
        concept (`KnowledgeBase.ids_of`) counts."""
        kwargs.setdefault("kb", self.kb)
        return super().score(examples, **kwargs)

    def get_loss(self, examples, scores):
        raise NotImplementedError("MedLinker computes its loss in update()")

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None, kb_path: Optional[Path] = None,
                   train_kb_path: Optional[Path] = None, leave_out: str = "mention") -> None:
        """Load the KB from `kb_path` (output of `medllm build-kb`), count priors on the training examples, initialize the model.

        kb_path (Path): folder with kb.msgpack and index/; optional when `set_kb` was called.
        train_kb_path (Optional[Path]): a KB (with its index) to link the training mentions
            with instead. In a KB built with the training mentions as aliases, every training
            mention is an exact name of its own answer, which a mention of an unseen text is
            not; `medllm build-kb --mentions-min-docs 2` keeps a mention alias only where two
            documents have it, so a training mention finds its text as a name only when
            another document has it (README: measured on dev). Not saved: the trained
            component links with the KB of `kb_path`.
        leave_out (str): what training leaves out of the priors and concept counts a
            mention is featurized with: "mention" (its own count) or "document" (the counts
            of every mention of its document: a text counts as seen only when another
            document has it, as for a test document).
        """
        if leave_out not in LEAVE_OUT:
            raise ValueError(Errors.E154.format(path=f"{self.name}.initialize.leave_out", reason=f"{leave_out!r}: one of {', '.join(LEAVE_OUT)}"))
        if kb_path is not None:
            self.set_kb(*_load_kb(kb_path))
        self._require_kb()
        self.train_kb = self.train_generator = None
        if train_kb_path is not None:
            self.train_kb, self.train_generator = load_kb_and_generator(train_kb_path)
        self.cfg["leave_out"] = leave_out
        priors: Dict[str, Counter] = defaultdict(Counter)
        concepts: Counter = Counter()
        sample = []
        for eg in get_examples():
            doc_priors, doc_concepts = self._doc_counts(eg.reference)
            for key, counts in doc_priors.items():
                priors[key].update(counts)
            concepts.update(doc_concepts)
            if len(sample) < 10:
                sample.append(eg.predicted)
        self.priors = {k: dict(v) for k, v in priors.items()}
        self.concept_counts = dict(concepts)
        self._block_setting = None
        self.model.initialize(X=(sample, None) if sample else None)
        self.cfg["width"] = input_width(self.model)

    # ---- serialization -------------------------------------------------------------------
    def to_disk(self, path, *, exclude=tuple()) -> None:
        """Save cfg, model, priors and, once set, the KB and its index (an uninitialized
        component saves without them and loads back uninitialized)."""
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "model": lambda p: self.model.to_disk(p),
            "priors": lambda p: srsly.write_msgpack(p, {"priors": self.priors, "concepts": self.concept_counts}),
        }
        if self.kb is not None:
            serialize["kb"] = lambda p: self.kb.to_disk(p)
        if self.generator is not None:
            serialize["index"] = lambda p: self.generator.to_disk(p)
        util.to_disk(path, serialize, exclude)

    def from_disk(self, path, *, exclude=tuple()) -> "MedLinker":
        def load_model(p):
            # the scorer's weights carry its shapes: it is rebuilt as saved
            try:
                with open(p, "rb") as file:
                    self.model.from_bytes(file.read())
            except AttributeError:
                raise ValueError(Errors.E014.format(path=p)) from None
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(Errors.E134.format(name=self.name, path=p, reason=err)) from None

        # what a component saved before it had a KB is not there: it stays without
        def load_kb(p):
            if p.exists():
                self.kb = KnowledgeBase.from_disk(p)

        def load_index(p):
            if p.exists() and self.kb is not None:
                # built at load, not by the first documents linked
                self.generator = CandidateGenerator.from_disk(p, self.kb).prepare()

        def load_priors(p):
            data = srsly.read_msgpack(p)
            self.priors = {k: dict(v) for k, v in data["priors"].items()}
            self.concept_counts = dict(data["concepts"])

        deserialize = {
            "cfg": lambda p: self.cfg.update(srsly.read_json(p)),
            "kb": load_kb,
            "index": load_index,
            "priors": load_priors,
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        self._block_setting = None
        self._canonical_keys = {}
        return self

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        """All parts (KB, index, priors, model, cfg) as one msgpack message of their files."""
        with util.make_tempdir() as tmp:
            self.to_disk(tmp, exclude=exclude)
            files = {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "MedLinker":
        files = srsly.msgpack_loads(bytes_data)
        with util.make_tempdir() as tmp:
            for rel, data in files.items():
                target = (tmp / rel).resolve()
                if tmp.resolve() not in target.parents:
                    raise ValueError(Errors.E014.format(path=rel))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self.from_disk(tmp, exclude=exclude)
        return self


def _softmax(row: numpy.ndarray) -> numpy.ndarray:
    e = numpy.exp(row - row.max())
    return e / e.sum()
