"""int8 dynamic quantization of the transformer encoder, for CPU inference.

`medllm quantize MODEL OUTPUT` turns every `torch.nn.Linear` of a trained pipeline's
encoder into an int8 layer (int8 weights, one scale per output row; activations quantized
on the fly) and sets `quantize = true` in the encoder's config
(`spacy_medllm.TransformerModel.v1`). The pipeline is saved in the usual
spacy-transformers format: the int8 weights are written dequantized (fp32 values that are
exactly representable in int8 at each layer's scale), and loading re-quantizes them, which
gives back the same int8 weights. So a quantized pipeline loads with the stock loader, holds
int8 weights in memory, and predicts what it predicted before it was saved.

`quantize_activations = "per_token"` (what `medllm quantize` writes by default) makes the
int8 layers `Int8Linear` (spacy_medllm.layers.int8): one activation scale per token, so a
token's int8 products do not depend on the other texts of its batch, and a load that builds
them straight from the saved values and scales (no PyTorch quantized tensors). With the
encoder's per-window attention (spacy_medllm.layers.chunked), a text's analysis is then the
same bits alone or in any batch: over 200 BC5CDR test abstracts, batched (32) against one
text at a time, none of the shipped pipeline's 515 windows differs per token (nor in fp32);
per call all 515 do, and 90 entities (span, label, id) change, in 57 documents
(scripts/batch_dependence.py, README).

`quantize_activations = "per_call"` (`--activations per_call`; what a config without the
key reads, as the int8 pipelines saved before it) uses PyTorch's dynamic int8 Linear
(`torch.ao.quantization.quantize_dynamic`): one activation scale per call. PyTorch's default
keeps activations to 128 levels (`reduce_range`) so that CPUs without VNNI, whose int8
products accumulate in int16, do not saturate; on a CPU with VNNI (avx512_vnni, avx_vnni)
all 256 levels are used, which halves the rounding step (`quantize_full_range` in the
encoder's config: null = by the CPU).

A quantized encoder is for inference only: updating it raises E140.
"""
from typing import Dict, Iterator, Optional, Sequence, Tuple

import srsly

from thinc.api import Model

from ..errors import Errors
from .chunked import ChunkedHFShim, hf_shim, load_hf_message
from .heap import release_freed_memory


def cpu_has_vnni() -> bool:
    """Whether this CPU has the VNNI int8 dot-product instructions (Linux: /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split()))


def _full_range_forward(self, x):
    """DynamicQuantizedLinear.forward with the activations quantized to all 256 levels."""
    import torch

    return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)


def set_activation_range(module, full_range: Optional[bool] = None) -> bool:
    """Make every int8 Linear of a freshly quantized `module` quantize its activations to 256
    levels (full range) or leave PyTorch's 128 (`reduce_range`); None: full range where the CPU has VNNI,
    whose int8 products accumulate in int32 and cannot saturate. RETURNS the range used."""
    import functools

    full = cpu_has_vnni() if full_range is None else bool(full_range)
    if full:
        for _, linear in _quantized_linears(module):
            if getattr(linear, INT8_MARK, False):  # per-token activations: their own range
                continue
            linear.forward = functools.partial(_full_range_forward, linear)  # (pickles, unlike a bound method)
    return full


def set_per_token_activations(module) -> int:
    """Replace every dynamically quantized Linear of `module` by an `Int8Linear`
    (`spacy_medllm.layers.int8`), which quantizes its activations per row (token) instead of
    per call: a text's vector no longer depends on what else is in its batch (with batches
    of equal-length texts, bit for bit), and each token keeps its own range (measured:
    closer to the fp32 vectors than one scale for the whole batch). RETURNS the number of
    layers that quantize per token."""
    import torch

    from .int8 import Int8Linear, replace_module

    count = 0
    for name, sub in list(module.named_modules()):
        if getattr(sub, INT8_MARK, False):
            count += 1
        elif isinstance(sub, torch.ao.nn.quantized.dynamic.Linear):
            replace_module(module, name, Int8Linear.from_dynamic(sub))
            count += 1
    return count


# how an int8 encoder quantizes its activations: PyTorch's dynamic Linear (one scale per
# call) or `Int8Linear` (one scale per token)
ACTIVATIONS = ("per_call", "per_token")


def check_activations(activations: str) -> str:
    """`activations` if it is one of ACTIVATIONS, else ValueError naming it."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"int8 activations {activations!r}: use {' or '.join(ACTIVATIONS)}")
    return activations


def quantize_module(
    module, scales: Optional[Dict[str, object]] = None, keep_fp32: Sequence[str] = (), full_range: Optional[bool] = None,
    inplace: bool = False, smooth: Optional[Dict[str, object]] = None, activations: str = "per_call",
):
    """`module` with its Linear layers dynamically quantized to int8 (CPU), one scale per
    output channel.

    scales: layer name -> the weight scales saved by `weight_scales`: exactly
        those layers are quantized, at exactly that scale (their fp32 weights are the
        dequantized int8 values, so this gives back the saved int8 weights bit for bit).
    keep_fp32: without `scales`, the Linear layers whose name contains one of these strings
        stay fp32 (e.g. "attention", "encoder.layer.5."); the others are quantized at the
        scale the observer picks.
    full_range: the activations' range (`set_activation_range`).
    inplace: replace the Linear layers of `module` itself instead of a copy (no second copy
        of the weights in memory; `module` is then the int8 model).
    smooth: layer name -> activation smoothing factors (`spacy_medllm.layers.smooth`): those
        layers' weight columns are multiplied by the factors before they are quantized (with
        `scales`, the saved fp32 weights are the smoothed int8 values divided by them), and
        their inputs divided by them at inference.
    activations: "per_call" (PyTorch's dynamic int8 Linear) or "per_token" (`Int8Linear`;
        with `scales`, built straight from the saved values: no PyTorch quantized tensor).
    """
    import copy

    import torch

    check_activations(activations)
    module = module.cpu()
    factors = {}
    if smooth:
        from .smooth import fold_into_weights

        if not inplace:
            module, inplace = copy.deepcopy(module), True
        factors = fold_into_weights(module, smooth)
    linears = [name for name, sub in module.named_modules() if isinstance(sub, torch.nn.Linear)]
    if scales:
        chosen = [name for name in linears if name in scales]
    else:
        chosen = [name for name in linears if not any(pattern in name for pattern in keep_fp32)]
    if activations == "per_token":
        # Int8Linear straight from the fp32 layers: at the saved scales, or at those PyTorch's
        # per-channel observer would pick (the same int8 weights); no PyTorch quantized tensor
        from .int8 import Int8Linear, int8_from_saved, replace_module

        if not inplace:
            module = copy.deepcopy(module)
        if scales:
            quantized = int8_from_saved(module, {name: scales[name] for name in chosen})
        else:
            for name in chosen:
                replace_module(module, name, Int8Linear.from_float(module.get_submodule(name)))
            quantized = module
    else:
        # the fp32 weights to re-quantize at their saved scales: references, not copies (the
        # Linear modules they belong to are replaced below, so each tensor is freed once used)
        saved = {name: module.get_submodule(name).weight.detach() for name in chosen} if scales else {}
        # one scale per output row: the int8 error of a row no longer depends on the largest
        # weight of the whole matrix (measured: a third of the per-tensor F1 cost on BC5CDR dev)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        quantized = torch.ao.quantization.quantize_dynamic(
            module, {name: qconfig for name in chosen}, dtype=torch.qint8, inplace=inplace
        )
        for name, linear in _quantized_linears(quantized):
            if name in saved:
                linear.set_weight_bias(_requantize(saved.pop(name), scales[name]), linear.bias())
    if factors:
        from .smooth import wrap

        quantized_names = {name for name, _ in _quantized_linears(quantized)}
        unquantized = sorted(set(factors) - quantized_names)
        if unquantized:
            raise ValueError(f"smoothing factors for layers that stay fp32: {', '.join(unquantized)}")
        wrap(quantized, factors)
    set_activation_range(quantized, full_range)
    return quantized


def _requantize(weight, scale):
    import torch

    if isinstance(scale, dict):  # per channel
        return torch.quantize_per_channel(
            weight, torch.tensor(scale["scales"], dtype=torch.double), torch.tensor(scale["zero_points"], dtype=torch.long),
            int(scale["axis"]), torch.qint8,
        )
    return torch.quantize_per_tensor(weight, float(scale[0]), int(scale[1]), torch.qint8)


def weight_scales(module) -> Dict[str, object]:
    """Layer name -> the scales of each int8 Linear's weights: {"axis", "scales",
    "zero_points"} per channel, or [scale, zero point] per tensor."""
    import torch

    out: Dict[str, object] = {}
    for name, lin in _quantized_linears(module):
        if getattr(lin, INT8_MARK, False):
            out[name] = {"axis": 0, "scales": lin.scales.tolist(), "zero_points": [0] * lin.out_features}
            continue
        w = lin.weight()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            out[name] = {"axis": int(w.q_per_channel_axis()), "scales": w.q_per_channel_scales().tolist(),
                         "zero_points": w.q_per_channel_zero_points().tolist()}
        else:
            out[name] = [float(w.q_scale()), int(w.q_zero_point())]
    return out


def _quantized_linears(module) -> Iterator[Tuple[str, object]]:
    """(name, int8 Linear) for each quantized layer (PyTorch's dynamic Linear or an
    `Int8Linear`); a smoothed layer's Linear is named as the layer it replaced (the
    `SmoothedLinear`'s name)."""
    import torch

    smoothed = set()
    for name, sub in module.named_modules():
        if getattr(sub, SMOOTHED_MARK, False):
            smoothed.add(name)
        elif getattr(sub, INT8_MARK, False) or isinstance(sub, torch.ao.nn.quantized.dynamic.Linear):
            parent = name.rpartition(".")[0]
            yield (parent if parent in smoothed and name.endswith(".linear") else name), sub


def smoothing_of(module) -> Dict[str, list]:
    """Layer name -> the activation smoothing factors of each smoothed int8 layer."""
    return {name: sub.scale.tolist() for name, sub in module.named_modules() if getattr(sub, SMOOTHED_MARK, False)}


def is_quantized(module) -> bool:
    return next(_quantized_linears(module), None) is not None


def dequantized_copy(module):
    """An fp32 module of the same architecture holding the int8 weights' values."""
    import torch

    fp32 = type(module)(module.config)
    state = {}
    quantized = dict(_quantized_linears(module))
    skip = tuple(f"{name}." for name in quantized)
    for key, value in module.state_dict().items():
        if not key.startswith(skip) and isinstance(value, torch.Tensor):
            state[key] = value
    smoothed = {name: sub for name, sub in module.named_modules() if getattr(sub, SMOOTHED_MARK, False)}
    for name, linear in quantized.items():
        int8 = getattr(linear, INT8_MARK, False)
        state[f"{name}.weight"] = linear.dequantized_weight() if int8 else linear.weight().dequantize()
        if name in smoothed:  # the layer's own function: the smoothed weights' columns divided back
            state[f"{name}.weight"] = state[f"{name}.weight"] * smoothed[name].inv_scale[None, :]
        bias = linear.bias if int8 else linear.bias()
        if bias is not None:
            state[f"{name}.bias"] = bias.detach().clone()
    fp32.load_state_dict(state, strict=True)
    return fp32


# the weights' scales and zero points, saved beside spacy-transformers' own fields
SCALES_KEY = "medllm_int8_scales"
# the activation smoothing factors of the smoothed layers (spacy_medllm.layers.smooth)
SMOOTH_KEY = "medllm_int8_smoothing"
SMOOTHED_MARK = "medllm_smoothed"
# marks an `Int8Linear` (spacy_medllm.layers.int8)
INT8_MARK = "medllm_int8_linear"


class QuantizedHFShim(ChunkedHFShim):
    """spacy-transformers' shim with an int8 encoder: saved dequantized, re-quantized on load."""

    def __call__(self, inputs, is_train: bool):
        if is_train:
            raise ValueError(Errors.E140)
        return super().__call__(inputs, is_train)

    full_range: Optional[bool] = None
    activations: str = "per_call"

    def quantize(
        self, scales: Optional[Dict[str, object]] = None, keep_fp32: Sequence[str] = (), inplace: bool = False,
        smooth: Optional[Dict[str, object]] = None,
    ) -> None:
        """Quantize the encoder (no-op when it already is, or not yet loaded); `inplace`: in
        the fp32 module itself, which is then gone (no second copy of the weights); `smooth`:
        activation smoothing factors per layer (`quantize_module`)."""
        if self._model is not None and not is_quantized(self._model):
            self._model = quantize_module(
                self._model, scales, keep_fp32, full_range=self.full_range, inplace=inplace, smooth=smooth,
                activations=self.activations,
            )
            if self._hfmodel is not None and self._hfmodel.transformer is not None:
                self._hfmodel.transformer = self._model

    def to_bytes(self):
        model = self._model
        if model is None or not is_quantized(model):
            return super().to_bytes()
        fp32 = dequantized_copy(model)
        self._model = self._hfmodel.transformer = fp32
        try:
            msg = srsly.msgpack_loads(super().to_bytes())
        finally:
            self._model = self._hfmodel.transformer = model
        msg[SCALES_KEY] = weight_scales(model)
        smoothing = smoothing_of(model)
        if smoothing:
            msg[SMOOTH_KEY] = smoothing
        return srsly.msgpack_dumps(msg)

    def from_bytes(self, bytes_data):
        msg = srsly.msgpack_loads(bytes_data)
        scales = msg.pop(SCALES_KEY, None)
        smooth = msg.pop(SMOOTH_KEY, None)
        load_hf_message(self, msg)
        del msg
        # scales None: saved before it was quantized (a config with quantize = true): every Linear
        self.quantize(scales, inplace=True, smooth=smooth)
        release_freed_memory()
        return self


def use_quantized_shim(model: Model, full_range: Optional[bool] = None, activations: str = "per_call") -> QuantizedHFShim:
    """Switch a TransformerModel's shim to `QuantizedHFShim` (same state, new behaviour);
    `full_range`: the activations' range once quantized per call (`set_activation_range`);
    `activations`: "per_call" or "per_token" (`quantize_module`)."""
    check_activations(activations)
    shim = hf_shim(model)
    if not isinstance(shim, QuantizedHFShim):
        shim.__class__ = QuantizedHFShim
    shim.full_range = full_range
    shim.activations = activations
    return shim


ARCHITECTURES = ("spacy_medllm.TransformerModel.v1", "spacy-transformers.TransformerModel.v3")


def calibrate_smoothing(nlp, names: Sequence[str], texts: Sequence[str], keep_fp32: Sequence[str] = (), alpha: float = 0.5,
                        batch_size: int = 32) -> Dict[str, Dict[str, list]]:
    """Activation smoothing factors for the encoders of the components `names` of `nlp`:
    the largest input per channel of every Linear that will be quantized, measured on
    `texts`. RETURNS component -> layer -> factors."""
    import torch

    from .smooth import activation_maxima, smoothing_factors

    out = {}
    for name in names:
        model = hf_shim(nlp.get_pipe(name).model)._model
        layers = [n for n, sub in model.named_modules() if isinstance(sub, torch.nn.Linear) and not any(p in n for p in keep_fp32)]
        with nlp.select_pipes(enable=[name]):
            maxima = activation_maxima(model, lambda: list(nlp.pipe(texts, batch_size=batch_size)), layers)
        missing = sorted(set(layers) - set(maxima))
        if missing:
            raise ValueError(f"calibration text never reached {', '.join(missing[:3])} of {name}'s encoder (empty texts?)")
        out[name] = {k: v.tolist() for k, v in smoothing_factors(model, maxima, alpha).items()}
    return out


def quantize_pipeline(model_path, output, keep_fp32: Sequence[str] = (), calibration: Optional[Sequence[str]] = None,
                      alpha: float = 0.5, calibration_source: str = "", activations: str = "per_call") -> list:
    """Load the pipeline at `model_path`, quantize every transformer's encoder to int8, and
    save it to `output` with `quantize = true` in each encoder's config and a note in the
    meta. `calibration`: texts on which to measure activation smoothing factors (SmoothQuant,
    strength `alpha`; None: no smoothing). An empty `keep_fp32` pattern is ignored (as a
    substring it would match every layer: it is what a project variable left empty passes).
    RETURNS the names of the quantized components."""
    from pathlib import Path

    import spacy
    from spacy import util

    keep_fp32 = [pattern for pattern in keep_fp32 if pattern.strip()]
    nlp = spacy.load(model_path)
    names = [name for name, pipe in nlp.pipeline if getattr(pipe, "model", None) is not None and pipe.model.name == "transformer"]
    if not names:
        raise ValueError(Errors.E142.format(path=model_path, pipes=nlp.pipe_names))
    config = nlp.config
    for name in names:
        arch = config["components"][name]["model"]["@architectures"]
        if arch not in ARCHITECTURES:
            raise ValueError(Errors.E143.format(name=name, arch=arch))
    smooth = calibrate_smoothing(nlp, names, calibration, keep_fp32, alpha) if calibration else {}
    for name in names:
        use_quantized_shim(nlp.get_pipe(name).model, activations=activations).quantize(keep_fp32=keep_fp32, inplace=True, smooth=smooth.get(name))
    nlp.meta["quantized"] = {
        "components": names,
        "method": ("int8 torch.nn.Linear layers as Int8Linear (spacy_medllm.layers.int8), per-channel weight scales" if activations == "per_token"
                   else "dynamic int8 (torch.ao.quantization.quantize_dynamic), torch.nn.Linear layers, per-channel weight scales"),
        "kept_fp32": list(keep_fp32),
        "activations": ("quantized per token (Int8Linear: one scale per token, int32 accumulation)" if activations == "per_token"
                        else "quantized per call; all 256 levels where the CPU has VNNI, 128 elsewhere (quantize_full_range in the encoder's config)"),
        "from": str(model_path),
    }
    if calibration:
        nlp.meta["quantized"]["smoothing"] = {
            "method": "SmoothQuant per-channel activation smoothing, s = max|x|^alpha / max|w|^(1-alpha)",
            "alpha": alpha, "calibration_texts": len(calibration), "calibration_source": calibration_source,
        }
    output = Path(output)
    nlp.to_disk(output)
    saved = util.load_config(output / "config.cfg", interpolate=False)
    for name in names:
        model_cfg = saved["components"][name]["model"]
        model_cfg["@architectures"] = "spacy_medllm.TransformerModel.v1"
        model_cfg["quantize"] = True
        model_cfg["quantize_activations"] = activations
    saved.to_disk(output / "config.cfg")
    return names
