"""Activation smoothing for the int8 encoder (SmoothQuant, Xiao et al. 2023).

A dynamically quantized Linear rounds its input to int8 with one scale for the whole input
tensor, set by its largest value. Transformer activations have a few channels far larger
than the rest (the "outlier" dimensions every BERT-like encoder grows), so the other
channels get only a handful of int8 levels. Smoothing divides each input channel j by a
factor s_j and multiplies the weights' column j by the same s_j: the layer computes the same
function in exact arithmetic, but part of the activations' range has moved into the weights,
which are rounded per output row and have range to spare:

    s_j = max|x_j| ** alpha / max|W[:, j]| ** (1 - alpha)

with max|x_j| measured on calibration text (`activation_maxima`). In a pre-LayerNorm model
the division is folded into the LayerNorm before the layer; in BERT (post-LayerNorm, whose
outputs also feed the residual stream) it cannot be, so `SmoothedLinear` multiplies the
input by 1/s before the int8 Linear: one elementwise product per layer.
"""
from typing import Callable, Dict, Iterable, Sequence

import torch

# the name of the attribute that marks a smoothed layer (quantize.py tests it without
# importing this module)
MARK = "medllm_smoothed"


class SmoothedLinear(torch.nn.Module):
    """x -> linear(x * inv_scale): an int8 Linear whose weights' columns were multiplied by
    `1 / inv_scale` before they were quantized."""

    medllm_smoothed = True

    def __init__(self, linear: torch.nn.Module, scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        # not in the state dict: saved as the factors, beside the weights' scales
        self.register_buffer("scale", scale.detach().float().clone(), persistent=False)
        self.register_buffer("inv_scale", 1.0 / self.scale, persistent=False)

    def forward(self, x):
        return self.linear(x * self.inv_scale.to(x.dtype))


def activation_maxima(module: torch.nn.Module, run: Callable[[], object], names: Iterable[str]) -> Dict[str, torch.Tensor]:
    """The largest |input| of each named Linear of `module`, per input channel, while `run()`
    runs (it should push calibration text through the model), over the real pieces only: the
    padding's rows (attention mask 0 in the call to `module`) are left out."""
    wanted = set(names)
    maxima: Dict[str, torch.Tensor] = {}
    hooks = []
    call = {"mask": None}

    def remember_mask(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        call["mask"] = mask.detach().bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def hook_for(name):
        def hook(_module, args):
            x = args[0].detach()
            mask = call["mask"]
            if mask is not None and x.dim() == 3 and tuple(mask.shape) == tuple(x.shape[:2]) and bool(mask.any()):
                x = x[mask]
            amax = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
            maxima[name] = amax if name not in maxima else torch.maximum(maxima[name], amax)

        return hook

    hooks.append(module.register_forward_pre_hook(remember_mask, with_kwargs=True))
    for name, sub in module.named_modules():
        if name in wanted and isinstance(sub, torch.nn.Linear):
            hooks.append(sub.register_forward_pre_hook(hook_for(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return maxima


def smoothing_factors(module: torch.nn.Module, maxima: Dict[str, torch.Tensor], alpha: float = 0.5) -> Dict[str, torch.Tensor]:
    """Layer name -> s (one factor per input channel) for each Linear in `maxima`."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    out = {}
    for name, sub in module.named_modules():
        if name in maxima and isinstance(sub, torch.nn.Linear):
            w = sub.weight.detach().abs().amax(dim=0).float().clamp(min=1e-5)
            x = maxima[name].clamp(min=1e-5)
            out[name] = (x.pow(alpha) / w.pow(1.0 - alpha)).clamp(min=1e-5)
    return out


def fold_into_weights(module: torch.nn.Module, factors: Dict[str, Sequence[float]]) -> Dict[str, torch.Tensor]:
    """Multiply column j of each named Linear's weight by s_j, in place. RETURNS the factors
    as tensors."""
    out = {}
    modules = dict(module.named_modules())
    for name, s in factors.items():
        linear = modules.get(name)
        if not isinstance(linear, torch.nn.Linear):
            raise ValueError(f"smoothing factors for {name!r}, which is not a Linear layer of the encoder")
        s = torch.as_tensor(s, dtype=torch.float32)
        if s.shape != (linear.in_features,):
            raise ValueError(f"smoothing factors for {name!r}: {tuple(s.shape)} values for {linear.in_features} input channels")
        with torch.no_grad():
            linear.weight.mul_(s.to(linear.weight.dtype)[None, :])
        out[name] = s
    return out


def wrap(module: torch.nn.Module, factors: Dict[str, torch.Tensor]) -> None:
    """Replace each named (quantized) layer of `module` by a `SmoothedLinear` around it."""
    from .int8 import replace_module

    for name, s in factors.items():
        replace_module(module, name, SmoothedLinear(module.get_submodule(name), s))
