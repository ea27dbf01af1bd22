"""Inference over a long document in bounded memory.

spacy-transformers cuts a Doc into strided windows and runs the encoder on all windows of a
batch at once: a 200-page note (~130,000 tokens, ~1,600 windows of 128 pieces) then holds the
activations of 1,600 windows per layer, and peak memory grows with the document (6.0 GB at
128,000 tokens, measured). `ChunkedHFShim` runs the encoder at inference on at most
`max_windows` windows at a time and concatenates the outputs, which are the same numbers;
training is unchanged. `spacy_medllm.TransformerModel.v1` installs it.
"""
from spacy_transformers.layers.hf_shim import HFShim
from thinc.api import ArgsKwargs, Model

from ..errors import Errors

# windows per encoder call at inference: 64 x 128 pieces keeps the activations of one call
# in the tens of MB for a MiniLM-sized encoder
MAX_WINDOWS = 64


def _concat(outputs):
    import torch

    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs, dim=0)
    if isinstance(first, (tuple, list)) and not hasattr(first, "keys"):
        return type(first)(_concat([o[i] for o in outputs]) for i in range(len(first)))
    if hasattr(first, "keys"):
        merged = {k: _concat([o[k] for o in outputs]) if first[k] is not None else None for k in first.keys()}
        return type(first)(**merged)
    return first


class ChunkedHFShim(HFShim):
    """HFShim whose inference runs the encoder on at most `max_windows` windows per call."""

    max_windows = MAX_WINDOWS

    def predict(self, inputs: ArgsKwargs):
        import torch

        sizes = {v.shape[0] for v in inputs.kwargs.values() if isinstance(v, torch.Tensor) and v.dim() > 0}
        if inputs.args or len(sizes) != 1 or next(iter(sizes)) <= self.max_windows:
            return super().predict(inputs)
        n = next(iter(sizes))
        parts = []
        for start in range(0, n, self.max_windows):
            kwargs = {
                k: v[start : start + self.max_windows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
                for k, v in inputs.kwargs.items()
            }
            parts.append(super().predict(ArgsKwargs(args=(), kwargs=kwargs)))
        return _concat(parts)


def hf_shim(model: Model) -> HFShim:
    """The HFShim of a spacy-transformers TransformerModel."""
    for node in model.walk():
        for shim in node.shims:
            if isinstance(shim, HFShim):
                return shim
    raise ValueError(Errors.E141.format(name=model.name))


def use_chunked_shim(model: Model) -> None:
    """Switch a TransformerModel's shim to `ChunkedHFShim` (unless it already is one)."""
    shim = hf_shim(model)
    if not isinstance(shim, ChunkedHFShim):
        shim.__class__ = ChunkedHFShim
