"""The `medllm_rel` component: relations between entities, in a sentence or a document.

For every Doc, the instance generator (`spacy_medllm.type_pairs.v1` by default, a
registered `@misc` function) builds the candidate pairs from the entities: mention pairs,
or, at the `"concept"` level, pairs of concepts whose mentions are grouped by
`kb_id_` (the linker's ids, or gold ids), which is how document-level relations such
as BC5CDR's chemical-induced disease (CID) are annotated. `spacy_medllm.RelationModel.v1`
scores each pair for every relation label (independent sigmoids, trained with binary
cross-entropy); a pair gets every label whose probability reaches that label's
threshold (`cfg["thresholds"]`, tuned on dev with `tune_thresholds`, else
`cfg["threshold"]`), or, with a relative threshold, whose probability comes close enough
to the Doc's highest for that label (a Doc-level adaptive threshold for document sets
that state at least one relation each, tuned jointly on dev).

Writes `doc._.medllm_rels`: a list of plain records in the format of the corpus readers
(`spacy_medllm.tokens.RelationRecord`): `head` and `tail` token offsets, `head_char` and
`tail_char` character offsets (with `text_crc`), `head_id`, `tail_id`, `label` and `score`,
plus `component`, the name of the component that wrote it. A component replaces only its own records: those of another `medllm_rel` in the
pipeline, and gold records (without `component`), stay. A concept-pair prediction is one
record whose `head` and `tail` are its closest pair of mentions (the evidence) and whose
ids are the concepts'; `spacy_medllm.relations.concept_pairs(doc)` gives the concept-pair
view of any Doc.
"""
from collections import Counter, defaultdict
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy
import srsly
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate

from ..errors import Errors
from ..layers.optim import finish_update_scaled
from ..layers.threads import torch_fork_safe
from ..tokens import get_relations, install_extensions, relation, split_kb_id
from .gold import aligned_gold_entities
from .knowledge import RelationKnowledge
from .model import make_batch, set_input_width
from .pairs import Instances
from .records import concept_keys

DEFAULT_REL_MODEL = """
[model]
@architectures = "spacy_medllm.RelationModel.v1"

[model.tok2vec]
@architectures = "spacy.HashEmbedCNN.v2"
pretrained_vectors = null
width = 96
depth = 2
embed_size = 2000
window_size = 1
maxout_pieces = 3
subword_features = true

[model.pair_representation]
@architectures = "spacy_medllm.PairRepresentation.v1"
hidden_width = 128
distance_width = 16
depth = 1
dropout = 0.1
n_entity_labels = 64

[model.classifier]
@architectures = "spacy_medllm.RelationClassifier.v1"
hidden_width = 128
dropout = 0.1
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_REL_MODEL)["model"]

DEFAULT_CANDIDATES = {
    "@misc": "spacy_medllm.type_pairs.v1",
    "pairs": [["Chemical", "Disease"]],
    "level": "concept",
    "max_pairs": 1000,
    "max_distance": None,
}


@Language.factory(
    "medllm_rel",
    requires=["doc.ents"],
    assigns=["doc._.medllm_rels"],
    default_config={
        "model": DEFAULT_MODEL,
        "candidates": DEFAULT_CANDIDATES,
        "threshold": 0.5,
        "relative_threshold": None,
        "learn_rate_scale": 1.0,
        "scorer": {"@scorers": "spacy_medllm.relation_scorer.v1"},
    },
    default_score_weights={"medllm_rel_f": 1.0, "medllm_rel_p": 0.0, "medllm_rel_r": 0.0},
)
def make_relation_extractor(
    nlp: Language,
    name: str,
    model: Model,
    candidates: Callable[[Doc, Optional[Sequence]], Instances],
    threshold: float,
    relative_threshold: Optional[float],
    learn_rate_scale: float,
    scorer: Optional[Callable],
) -> "RelationExtractor":
    """Create a `medllm_rel`.

    model (Model): scores candidate pairs, `spacy_medllm.RelationModel.v1`.
    candidates (Callable): builds the candidate pairs of a Doc from its entities,
        `spacy_medllm.type_pairs.v1` (allowed label pairs, level, bounds).
    threshold (float): the probability a label needs, unless `cfg["thresholds"]` holds a
        tuned threshold for it.
    relative_threshold (Optional[float]): also accept, within a Doc, a label's pairs whose
        probability is at least this fraction of the Doc's highest one for that label
        (1.0: the Doc's most likely pair always counts), unless `cfg["relative_thresholds"]`
        holds a tuned value; None: off. For documents that state at least one relation of
        the label by construction (BC5CDR abstracts all hold a CID pair); left off, or
        tuned on dev with `tune_thresholds(..., relative=True)`, which keeps it off when it
        does not help.
    learn_rate_scale (float): the component's own weights move with the training
        learning rate times this: fine-tuning a shared transformer wants a small rate
        (e.g. 3e-5) and a new relation head a large one (e.g. 1e-3).
    """
    if learn_rate_scale <= 0:
        raise ValueError(Errors.E037.format(name=name, value=learn_rate_scale))
    if relative_threshold is not None and not 0.0 < relative_threshold <= 1.0:
        raise ValueError(Errors.E038.format(name=name, value=relative_threshold))
    return RelationExtractor(
        nlp.vocab, model, name, candidates=candidates, threshold=threshold, scorer=scorer,
        learn_rate_scale=learn_rate_scale, relative_threshold=relative_threshold,
    )


class RelationExtractor(TrainablePipe):
    """Classify candidate entity pairs into relation labels; see the module docstring."""

    def __init__(
        self, vocab: Vocab, model: Model, name: str = "medllm_rel", *,
        candidates: Callable[[Doc, Optional[Sequence]], Instances], threshold: float = 0.5,
        scorer: Optional[Callable] = None, learn_rate_scale: float = 1.0,
        relative_threshold: Optional[float] = None,
    ):
        install_extensions()
        torch_fork_safe()
        self.vocab = vocab
        self.model = model
        self.name = name
        self.candidates = candidates
        self.scorer = scorer
        self.cfg: Dict[str, object] = {
            "labels": [], "entity_labels": [], "threshold": threshold, "thresholds": {},
            "relative_threshold": relative_threshold, "relative_thresholds": {},
            "level": getattr(candidates, "level", "mention"), "width": None,
        }
        self.knowledge = RelationKnowledge()
        self.learn_rate_scale = float(learn_rate_scale)

    def finish_update(self, sgd: Optimizer) -> None:
        """Update the component's weights, with the learning rate times `learn_rate_scale`
        (a listener has no weights: the shared encoder keeps the optimizer's own rate)."""
        finish_update_scaled(self.model, sgd, self.learn_rate_scale)

    # ---- labels --------------------------------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    def add_label(self, label: str) -> int:
        """Add a relation label before the component is initialized; 1 if it is new."""
        if label in self.cfg["labels"]:
            return 0
        self._allow_extra_label()
        self.cfg["labels"] = list(self.cfg["labels"]) + [label]
        return 1

    @property
    def level(self) -> str:
        """The candidate level, "concept" or "mention": the instance generator's own (a
        loaded cfg may hold another one when the generator was overridden at load time)."""
        return str(getattr(self.candidates, "level", None) or self.cfg["level"])

    def threshold_of(self, label: str) -> float:
        return float(self.cfg["thresholds"].get(label, self.cfg["threshold"]))

    def relative_threshold_of(self, label: str) -> Optional[float]:
        """The label's relative threshold (a fraction of the Doc's highest probability for
        it), or None when it has none. A tuned value of 0 means "tuned: off"."""
        tuned = (self.cfg.get("relative_thresholds") or {}).get(label)
        value = tuned if tuned is not None else self.cfg.get("relative_threshold")
        return float(value) if value else None

    def _require_initialized(self) -> None:
        if not self.cfg["labels"] or self.cfg.get("width") is None:
            raise ValueError(Errors.E030.format(name=self.name))

    # ---- prediction ----------------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> Tuple[List[Instances], numpy.ndarray]:
        """The candidate pairs of each Doc and their label probabilities (pairs, labels)."""
        self._require_initialized()
        docs = list(docs)
        instances = [self.candidates(doc) for doc in docs]
        for doc, inst in zip(docs, instances):
            self._add_knowledge(doc, inst)
        return instances, self._probabilities(docs, instances)

    def _add_knowledge(self, doc: Doc, inst: Instances, targets: Optional[numpy.ndarray] = None) -> None:
        """The knowledge feature ids of the candidates, when the pair representation reads
        them (PairRepresentation.v2; v1 gets none and make_batch fills zeros)."""
        if self.model.get_ref("pair_representation").attrs.get("knowledge_width"):
            inst.knowledge = self.knowledge.features(doc, inst, targets)

    def _probabilities(self, docs: List[Doc], instances: List[Instances]) -> numpy.ndarray:
        batch = make_batch(instances, self.cfg["entity_labels"], self._n_label_rows())
        if not batch.n_pairs:
            return numpy.zeros((0, len(self.labels)), dtype="float32")
        logits = self.model.ops.to_numpy(self.model.predict((docs, batch)))
        return _sigmoid(logits)

    def _n_label_rows(self) -> int:
        return int(self.model.get_ref("pair_representation").attrs["n_entity_labels"])

    def set_annotations(self, docs: Iterable[Doc], predictions: Tuple[List[Instances], numpy.ndarray]) -> None:
        instances, probs = predictions
        labels = self.labels
        thresholds = numpy.asarray([self.threshold_of(label) for label in labels], dtype="float32")
        relative = numpy.asarray([self.relative_threshold_of(label) or numpy.inf for label in labels], dtype="float32")
        j = 0
        for doc, inst in zip(docs, instances):
            # what another component (or the gold data) put there stays; this one's own
            # earlier records are replaced
            kept = [r for r in get_relations(doc) if r.get("component") != self.name]
            records = []
            doc_probs = probs[j : j + len(inst.pairs)]
            # a label's pairs count when above its threshold, or (relative threshold) close
            # enough to the Doc's most likely pair for it
            limits = thresholds
            if len(doc_probs) and numpy.isfinite(relative).any():
                limits = numpy.where(numpy.isfinite(relative), numpy.minimum(thresholds, relative * doc_probs.max(axis=0)), thresholds)
            for p, (eh, et) in enumerate(inst.pairs):
                row = doc_probs[p]
                for k in numpy.nonzero(row >= limits)[0]:
                    records.append(self._record(doc, inst, eh, et, p, labels[k], float(row[k])))
            j += len(inst.pairs)
            records.sort(key=lambda r: (r["head"], r["tail"], r["label"]))
            doc._.medllm_rels = kept + records

    def _record(self, doc: Doc, inst: Instances, eh: int, et: int, p: int, label: str, score: float) -> Dict[str, object]:
        hm, tm = inst.evidence[p]
        head = doc[inst.mentions[hm][0] : inst.mentions[hm][1]]
        tail = doc[inst.mentions[tm][0] : inst.mentions[tm][1]]
        if inst.level == "concept":
            # a group of unlinked mentions has no concept id: the mention's own (NIL or none)
            record = relation(label, head, tail, head_id=inst.entities[eh].concept_id, tail_id=inst.entities[et].concept_id, score=round(score, 4))
        else:
            record = relation(label, head, tail, score=round(score, 4))
        record["component"] = self.name
        return record

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, object]:
        """Score the predicted relations of this component's labels at its own candidate
        level (`spacy_medllm.relation_scorer.v1`, unless the config names another).

        RETURNS (Dict[str, object]): medllm_rel_p / _r / _f and medllm_rel_per_type.
        """
        if self.scorer is None:
            return {}
        return self.scorer(examples, **{**kwargs, "level": kwargs.get("level", self.level), "labels": kwargs.get("labels", self.labels)})

    # ---- training ------------------------------------------------------------------------
    def _gold(self, eg: Example, leave_out: bool = False, features: bool = True) -> Tuple[Instances, numpy.ndarray, Counter]:
        """Candidates from the gold entities (aligned to the predicted tokens), their
        targets (pairs, labels), and the number of gold relations per label as the scorer
        counts them (concept pairs, or mention pairs). The candidates carry their
        knowledge features (unless `features` is false); `leave_out`: without the Doc's
        own share of the prior."""
        spans, mapping = aligned_gold_entities(eg)
        inst = self.candidates(eg.predicted, spans)
        index = {label: k for k, label in enumerate(self.labels)}
        by_offsets: Set[Tuple[str, Tuple[int, int], Tuple[int, int]]] = set()
        by_ids: Set[Tuple[str, str, str]] = set()
        n_gold: Counter = Counter()
        records = [r for r in get_relations(eg.reference) if r["label"] in index]
        for r in records:
            if r["head"] is not None and r["tail"] is not None:
                h, t = mapping.get(tuple(r["head"])), mapping.get(tuple(r["tail"]))
                if h is not None and t is not None:
                    by_offsets.add((r["label"], h, t))
            else:
                by_ids.update(concept_keys([r]))
        if self.level == "concept":
            n_gold.update(key[0] for key in concept_keys(records))
        else:
            n_gold.update(key[0] for key in {(r["label"], tuple(r["head"]), tuple(r["tail"])) for r in records if r["head"] is not None and r["tail"] is not None})
        targets = numpy.zeros((len(inst.pairs), len(index)), dtype="float32")
        for p, (eh, et) in enumerate(inst.pairs):
            head, tail = inst.entities[eh], inst.entities[et]
            for label, k in index.items():
                if by_ids and any((label, a, b) in by_ids for a in _ids(inst, head) for b in _ids(inst, tail)):
                    targets[p, k] = 1.0
                elif by_offsets and any((label, inst.mentions[a], inst.mentions[b]) in by_offsets for a in head.mentions for b in tail.mentions):
                    targets[p, k] = 1.0
        if features:
            self._add_knowledge(eg.predicted, inst, targets if leave_out else None)
        return inst, targets, n_gold

    def update(
        self, examples: Iterable[Example], *, drop: float = 0.0, sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from the gold entities (aligned to the predicted tokens) and the gold
        relation records of the reference Docs; binary cross-entropy per label."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "RelationExtractor.update")
        self._require_initialized()
        docs = [eg.predicted for eg in examples]
        gold = [self._gold(eg, leave_out=True) for eg in examples]
        batch = make_batch([g[0] for g in gold], self.cfg["entity_labels"], self._n_label_rows())
        set_dropout_rate(self.model, drop)
        logits, backprop = self.model.begin_update((docs, batch))
        if batch.n_pairs:
            targets = numpy.concatenate([g[1] for g in gold if len(g[0].pairs)])
            loss, d_logits = _bce(self.model.ops.to_numpy(logits), targets)
            losses[self.name] += loss
        else:
            d_logits = numpy.zeros((0, len(self.labels)), dtype="float32")
        backprop(self.model.ops.asarray(d_logits))
        if sgd is not None:
            self.finish_update(sgd)
        return losses

    def get_loss(self, examples, scores):
        raise NotImplementedError("RelationExtractor computes its loss in update()")

    def initialize(
        self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None, prior: bool = True, hierarchy: Optional[str] = None,
        text_keys: bool = False,
    ) -> None:
        """Collect the relation labels (from the reference records, or `labels`) and the
        entity labels of the training examples, count the prior, read the hierarchy and
        initialize the model.

        labels (Sequence[str]): the relation labels; default: every label in the data.
        prior (bool): count the candidate pairs and relations of the training examples
            (see `spacy_medllm.relations.knowledge`); read by PairRepresentation.v2.
        hierarchy (Optional[str]): a `head<TAB>relation<TAB>tail` file whose `isa` and
            `medic_parent` edges give the concept hierarchy (`medllm build-kg`'s
            triples.tsv); read by PairRepresentation.v2.
        text_keys (bool): also key the prior of entities without concept ids by their
            lowercased mention texts, which are then saved with the model (for corpora
            without ids, e.g. Chia); default: concept ids only, no training text is saved.
        """
        found: Set[str] = set(labels or ()) | set(self.cfg["labels"])
        entity_labels: Set[str] = set()
        sample: List[Doc] = []
        for eg in get_examples():
            if labels is None:
                found.update(str(r["label"]) for r in get_relations(eg.reference))
            entity_labels.update(ent.label_ for ent in eg.reference.ents)
            if len(sample) < 10:
                sample.append(eg.predicted)
        if not found:
            raise ValueError(Errors.E035.format(name=self.name))
        self.cfg["labels"] = sorted(found)
        self.cfg["entity_labels"] = sorted(entity_labels)
        self.knowledge = RelationKnowledge(text_keys=text_keys)
        if hierarchy:
            self.knowledge.load_hierarchy(hierarchy)
        if prior:
            for eg in get_examples():
                inst, targets, _ = self._gold(eg, features=False)
                self.knowledge.count(eg.predicted, inst, targets)
        self.model.initialize(X=(sample, None), Y=self.model.ops.alloc2f(1, len(found)))
        self.cfg["width"] = int(self.model.get_ref("tok2vec").get_dim("nO"))

    # ---- thresholds ----------------------------------------------------------------------
    def tune_thresholds(
        self, examples: Iterable[Example], *, batch_size: int = 32, min_f: float = 0.05,
        relative: bool = False,
    ) -> Dict[str, Dict[str, float]]:
        """Choose each label's threshold to maximize its F1 on `examples`; store them in
        `cfg["thresholds"]`.

        A label whose best F1 stays below `min_f` has not been learned: the threshold
        that maximizes its F1 is then a near-zero one that labels almost every pair, so
        it keeps its current threshold instead.

        The predicted Docs must already hold what the model reads (run the shared encoder
        on them first; `spacy_medllm.relations.gold_entity_docs` does); the candidates
        come from the reference entities, as in training. Units are those of the scorer:
        concept pairs with ids at the concept level, mention pairs otherwise; gold
        relations no candidate covers count as misses.
        min_f (float): the least F1 a label needs to get a tuned threshold.
        relative (bool): also choose each label's relative threshold (see the factory's
            `relative_threshold`) among off, 1.0, 0.95, ..., 0.25, jointly with the absolute
            one, into `cfg["relative_thresholds"]` (0: off); without it the relative
            thresholds stay as they are and the absolute ones are tuned around them.
        RETURNS (Dict[str, Dict[str, float]]): per label: threshold, relative threshold
            (None: off), dev F1, gold count.
        """
        self._require_initialized()
        scored, n_gold = self._scored_pairs(examples, batch_size)
        report: Dict[str, Dict[str, float]] = {}
        thresholds = dict(self.cfg["thresholds"])
        relatives = dict(self.cfg.get("relative_thresholds") or {})
        for label in self.labels:
            best_t, best_f, best_r = self._tune_label(label, scored[label], n_gold[label], relative=relative, min_f=min_f)
            if best_t is not None:
                thresholds[label] = round(best_t, 4)
                if relative:
                    relatives[label] = best_r or 0.0
            report[label] = {
                "threshold": self.threshold_of(label) if best_t is None else round(best_t, 4),
                "relative_threshold": best_r if best_t is not None else self.relative_threshold_of(label),
                "f": round(best_f, 4), "gold": n_gold[label],
            }
        self.cfg["thresholds"] = thresholds
        self.cfg["relative_thresholds"] = relatives
        return report

    def _scored_pairs(self, examples: Iterable[Example], batch_size: int) -> Tuple[Dict[str, List[Tuple[float, bool, float]]], Counter]:
        """Per label, (probability, is gold, probability / the Doc's highest for the label)
        of every scored candidate of `examples` (at the concept level, pairs with ids
        only), and the number of gold relations per label."""
        scored: Dict[str, List[Tuple[float, bool, float]]] = defaultdict(list)
        n_gold: Counter = Counter()
        batch: List[Example] = []

        def run() -> None:
            gold = [self._gold(eg) for eg in batch]
            probs = self._probabilities([eg.predicted for eg in batch], [g[0] for g in gold])
            j = 0
            for inst, targets, counts in gold:
                n_gold.update(counts)
                top = probs[j : j + len(inst.pairs)].max(axis=0) if inst.pairs else None
                for p, (eh, et) in enumerate(inst.pairs):
                    if inst.level == "concept" and (inst.entities[eh].concept_id is None or inst.entities[et].concept_id is None):
                        continue  # pairs without ids are not scored
                    for k, label in enumerate(self.labels):
                        prob = float(probs[j + p, k])
                        scored[label].append((prob, bool(targets[p, k]), prob / max(float(top[k]), 1e-12)))
                j += len(inst.pairs)
            batch.clear()

        for eg in examples:
            batch.append(eg)
            if len(batch) >= batch_size:
                run()
        if batch:
            run()
        return scored, n_gold

    def _tune_label(
        self, label: str, scored: List[Tuple[float, bool, float]], n_gold: int, *, relative: bool, min_f: float,
    ) -> Tuple[Optional[float], float, Optional[float]]:
        """The best (threshold, F1, relative threshold) of one label; the threshold is None
        when the best F1 stays below `min_f`. Without `relative`, the label's current
        relative threshold stays and only the absolute one is chosen."""
        if relative:
            options = [None] + [round(1.0 - 0.05 * i, 2) for i in range(16)]
        else:
            options = [self.relative_threshold_of(label)]
        best_t, best_f, best_r = None, 0.0, None
        for r in options:
            t, f = _best_threshold(scored, n_gold, r)
            if t is not None and f > best_f + 1e-9:
                best_t, best_f, best_r = t, f, r
        if best_f < min_f:
            best_t = None
        return best_t, best_f, best_r

    # ---- serialization -------------------------------------------------------------------
    def to_disk(self, path, *, exclude=tuple()) -> None:
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "model": lambda p: self.model.to_disk(p),
            "knowledge": lambda p: srsly.write_msgpack(p, self.knowledge.to_dict()),
        }
        util.to_disk(path, serialize, exclude)

    def from_disk(self, path, *, exclude=tuple()) -> "RelationExtractor":
        deserialize = {
            "cfg": lambda p: self.cfg.update(srsly.read_json(p)),
            "model": lambda p: self._load_model(p.read_bytes(), p),
            # pipelines saved before the knowledge existed have no file: no knowledge
            "knowledge": lambda p: self.knowledge.from_disk(p),
        }
        util.from_disk(path, deserialize, exclude)
        self.cfg["level"] = self.level
        return self

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "model": lambda: self.model.to_bytes(),
            "knowledge": lambda: srsly.msgpack_dumps(self.knowledge.to_dict()),
        }
        return util.to_bytes(serialize, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "RelationExtractor":
        deserialize = {
            "cfg": lambda b: self.cfg.update(srsly.json_loads(b)),
            "model": lambda b: self._load_model(b, "bytes"),
            "knowledge": lambda b: self.knowledge.from_bytes(b, "bytes"),
        }
        util.from_bytes(bytes_data, deserialize, exclude)
        self.cfg["level"] = self.level
        return self

    def _load_model(self, data: bytes, where) -> None:
        # the pair encoder must have the saved input width before its weights load
        if self.cfg.get("width"):
            set_input_width(self.model.get_ref("pair_representation"), int(self.cfg["width"]))
        try:
            self.model.from_bytes(data)
        except (AttributeError, ValueError, KeyError, RuntimeError) as err:
            raise ValueError(Errors.E032.format(name=self.name, path=where, reason=err)) from None


def _ids(inst: Instances, ent) -> List[str]:
    """The concept ids of an entity: its concept, or its mentions' ids."""
    if ent.concept_id is not None:
        return [ent.concept_id]
    out: List[str] = []
    for m in ent.mentions:
        out.extend(split_kb_id(inst.mention_ids[m]))
    return out


def _sigmoid(x: numpy.ndarray) -> numpy.ndarray:
    return (1.0 / (1.0 + numpy.exp(-numpy.clip(x, -30, 30)))).astype("float32")


def _bce(logits: numpy.ndarray, targets: numpy.ndarray) -> Tuple[float, numpy.ndarray]:
    """Mean binary cross-entropy over pairs and labels, and its gradient on the logits."""
    probs = _sigmoid(logits)
    eps = 1e-7
    loss = -(targets * numpy.log(probs + eps) + (1 - targets) * numpy.log(1 - probs + eps)).mean()
    return float(loss), ((probs - targets) / targets.size).astype("float32")


def _best_threshold(
    scored: List[Tuple[float, bool, float]], n_gold: int, relative: Optional[float] = None,
) -> Tuple[Optional[float], float]:
    """The threshold with the best F1 = 2 TP / (predicted + gold), halfway between the
    lowest accepted score and the next one; None when nothing positive was scored.

    scored: (probability, is gold, probability / the Doc's highest) per scored pair.
    relative: with a relative threshold, the pairs it accepts count whatever the threshold.
    """
    if not scored or not n_gold:
        return None, 0.0
    always: List[Tuple[float, bool, float]] = []
    rest: List[Tuple[float, bool, float]] = []
    for x in scored:
        (always if relative is not None and x[2] >= relative - 1e-9 else rest).append(x)
    tp = tp_always = sum(x[1] for x in always)
    n_always = len(always)
    best_f, best_i = 2 * tp / (n_always + n_gold), -1
    rest = sorted(rest, key=lambda x: -x[0])
    for i, x in enumerate(rest):
        tp += x[1]
        f = 2 * tp / (n_always + i + 1 + n_gold)
        if f > best_f:
            best_f, best_i = f, i
    if best_i < 0:
        if not tp_always:
            return None, 0.0
        # the relative threshold alone is best: an absolute one above every other pair
        top = rest[0][0] if rest else 0.0
        return min(1.0, (top + 1.0) / 2), best_f
    low = rest[best_i][0]
    below = rest[best_i + 1][0] if best_i + 1 < len(rest) else 0.0
    return (low + below) / 2 if below < low else low, best_f
