"""An int8 Linear layer whose activations are quantized one row (token) at a time.

`Int8Linear` holds its weights as they are used: an int8 matrix, one symmetric scale per
output row and an fp32 bias. Each input row gets its own symmetric scale (its largest
magnitude over 127), the int8 product is accumulated exactly in int32 (`torch._int_mm`),
then scaled back: a row's output depends on that row alone, never on the other texts of its
batch, and each token keeps its own range (measured on the name encoder: closer to the fp32
vectors than one scale per call).

It is built either from PyTorch's dynamically quantized Linear (`from_dynamic`) or straight
from an fp32 Linear whose weights are the dequantized values of int8 weights saved with their
scales (`from_saved`): no observer, no packed weight, no fp32 copy, which is what loading a
saved int8 name encoder needs (measured: 0.03 s against 0.5 s through `quantize_dynamic`
for MiniLM's 37 Linear layers).
"""
from typing import Dict, Optional, Sequence, Union

import torch

# the attribute that marks an Int8Linear (quantize.py tests it without importing this module)
MARK = "medllm_int8_linear"


class Int8Linear(torch.nn.Module):
    """Its tensors are buffers outside the state dict (they are not a Linear's `weight`):
    save a model holding it through `spacy_medllm.layers.quantize.dequantized_copy` and
    `weight_scales` (as `NameEncoder.save` does), never with `save_pretrained` on the int8
    model itself, whose file would lack these layers' weights."""

    medllm_int8_linear = True

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: Optional[torch.Tensor]):
        """weight: (out, in) int8; scales: (out,), one per output row (zero points 0), kept
        as float32 as PyTorch's quantized tensors keep them; bias: (out,) or None."""
        super().__init__()
        if weight.dtype != torch.int8 or weight.dim() != 2 or scales.shape != (weight.shape[0],):
            raise ValueError(f"expected an (out, in) int8 weight and {weight.shape[0]} scales, got {tuple(weight.shape)} "
                             f"{weight.dtype} and {tuple(scales.shape)} scales")
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        # (in, out) as a view of the (out, in) rows: the column-major operand CPU int8 matmul
        # is fastest with (measured: 388 us against 921 for a row-major copy)
        self.register_buffer("weight_t", weight.contiguous().t(), persistent=False)
        self.register_buffer("scales", scales.detach().to(torch.float32).clone(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).clone(), persistent=False)

    @classmethod
    def from_dynamic(cls, linear) -> "Int8Linear":
        """From a `torch.ao.nn.quantized.dynamic.Linear` with symmetric weights (zero points 0)."""
        weight, bias = linear._weight_bias()  # (one unpacking of the packed weight for both)
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if bool((weight.q_per_channel_zero_points() != 0).any()):
                raise ValueError("per-token int8 activations need symmetric weights (zero points 0)")
            if int(weight.q_per_channel_axis()) != 0:
                raise ValueError("per-token int8 activations need one weight scale per output row")
            scales = weight.q_per_channel_scales()
        else:
            if int(weight.q_zero_point()) != 0:
                raise ValueError("per-token int8 activations need symmetric weights (zero point 0)")
            scales = torch.full((weight.shape[0],), float(weight.q_scale()))
        return cls(weight.int_repr(), scales, bias)

    @classmethod
    def from_saved(cls, linear: torch.nn.Linear, scale: Union[Dict[str, Sequence], Sequence]) -> "Int8Linear":
        """From an fp32 Linear that holds int8 weights' values and their saved scales
        (`weight_scales`: {"axis", "scales", "zero_points"} per channel or [scale, zero point]
        per tensor); the int8 weights are those that were saved, bit for bit."""
        out_features = linear.weight.shape[0]
        if isinstance(scale, dict):
            if int(scale.get("axis", -1)) != 0 or any(int(z) != 0 for z in scale.get("zero_points", [1])):
                raise ValueError("expected symmetric per-output-row scales (axis 0, zero points 0)")
            scales = torch.tensor(scale["scales"], dtype=torch.float64).to(torch.float32)
        else:
            if len(scale) != 2 or int(scale[1]) != 0:
                raise ValueError("expected a symmetric scale (zero point 0)")
            scales = torch.full((out_features,), float(scale[0]))
        if scales.shape != (out_features,) or not bool((scales > 0).all()):
            raise ValueError(f"expected {out_features} positive scales, found {tuple(scales.shape)}")
        with torch.no_grad():
            # the weights are exact multiples of their scales: the rounding only removes float error
            quantized = torch.round(linear.weight.detach().double() / scales.double()[:, None])
            if bool(((quantized < -128) | (quantized > 127)).any()):
                raise ValueError("weights outside the int8 range of their scales")
            weight = quantized.to(torch.int8)
        return cls(weight, scales, linear.bias)

    @classmethod
    def from_float(cls, linear: torch.nn.Linear) -> "Int8Linear":
        """From an fp32 Linear: one symmetric scale per output row, its largest |weight| over
        127.5, and the weights rounded to int8 at it, as PyTorch's per-channel weight
        observer and `quantize_per_channel` do (the same int8 weights and scales, tested)."""
        with torch.no_grad():
            weight = linear.weight.detach().to(torch.float32)
            amax = weight.abs().amax(dim=1)
            scales = torch.clamp(amax / 127.5, min=torch.finfo(torch.float32).eps)
            quantized = torch.round(weight * (1.0 / scales)[:, None]).clamp_(-128, 127).to(torch.int8)
        return cls(quantized, scales, linear.bias)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) fp32: the int8 weights times their scales (as PyTorch's `dequantize`)."""
        return self.weight_t.t().to(torch.float32) * self.scales[:, None]

    def forward(self, x):
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).to(torch.float32)
        # each row's largest magnitude as max(amax, -amin): the same value as abs().amax()
        # without an |x| copy; torch.div + in-place round_: the same values as torch.round(x / s),
        # whose out-of-place kernel took 10x longer here (measured: the transformer pass of the
        # shipped per-token pipeline 8.3-9.5 s -> 7.5-7.9 s on 160 abstracts, outputs bit-identical)
        scale = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_())
        scale.clamp_(min=1e-12).div_(127.0)
        quantized = torch.div(rows, scale).round_().to(torch.int8)
        try:
            out = torch._int_mm(quantized, self.weight_t).to(torch.float32)
        except (AttributeError, RuntimeError):  # no CPU int8 matmul: float64 is exact on these integers
            out = (quantized.double() @ self.weight_t.double()).to(torch.float32)
        out.mul_(scale).mul_(self.scales[None, :])
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], out.shape[-1]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, per-token int8 activations"


def replace_module(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def int8_from_saved(module: torch.nn.Module, scales: Dict[str, object]) -> torch.nn.Module:
    """Replace each Linear of `module` named in `scales` (`weight_scales` of a saved int8
    model) by an `Int8Linear` at those scales; a name that is no Linear of `module` raises
    ValueError. RETURNS `module`."""
    linears = {name: sub for name, sub in module.named_modules() if isinstance(sub, torch.nn.Linear)}
    unknown = sorted(set(scales) - set(linears))
    if unknown:
        raise ValueError(f"no Linear layer named {', '.join(unknown[:3])}")
    for name, scale in scales.items():
        replace_module(module, name, Int8Linear.from_saved(linears[name], scale))
    return module
