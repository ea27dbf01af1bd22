"""Encoder inference in bounded memory, without computing the padding.

spacy-transformers cuts a Doc into strided windows (of spaCy tokens, so of varying numbers of
word pieces), pads every window of a batch to the longest and runs the encoder on all of
them at once. Two costs follow:
- memory: a 200-page note (~130,000 tokens, ~1,600 windows) holds the activations of 1,600
  windows per layer, and peak memory grows with the document (6.0 GB at 128,000 tokens,
  measured);
- time: on BC5CDR test abstracts a quarter of the pieces the encoder computes are padding
  (batches of 32 abstracts: 67,409 padded pieces for 50,304 real ones), and the encoder's
  time is in its per-piece Linear layers.
`ChunkedHFShim` runs the encoder at inference on groups of windows of similar length (sorted
by length, at most `group_windows` per call, each group cut to its own longest window), then
puts the outputs back in order and at the batch's padded length (zeros at the padding, which
no alignment reads). Training is unchanged. `spacy_medllm.TransformerModel.v1` installs it.

A window's last hidden states do not depend on the other windows of its batch, to the bit
(on the CPU; the pooler's output, which nothing here reads, still may). Padding
used to move it a little: the attention over a padded window summed its real keys in
another order than over the window alone (3.7e-6 in fp32, enough for an int8 rounding step
to carry on: 9 entities of ~3,510 changed with the batch in the per-token int8 pipeline).
So at inference each window attends over its own keys only (`exact_attention`: the keys cut
to the window's length, no mask; BERT-style self-attention), and every encoder call holds
at least `MIN_ROWS` pieces (padding added where a lone short window would have fewer),
because the CPU's matrix product rounds some row counts under 12 differently. The Linear
layers, layer norms and activations work row by row, so with these two rules a window's
pieces come out the same alone or in any batch (tested, and measured on BC5CDR test with
`scripts/batch_dependence.py`: README).

Loading (`from_bytes`) is spacy-transformers' with less memory in flight: the saved message
is decoded once, the encoder is built without random initial weights, the saved tensors are
assigned to it instead of copied into it, and memory freed on the way is handed back to the
operating system. Measured on the MiniLM encoder: the load's peak falls by the size of one
copy of the weights (about 90 MB for MiniLM).
"""
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any, Dict

import srsly
from spacy.util import SimpleFrozenDict
from spacy_transformers.data_classes import HFObjects
from spacy_transformers.layers.hf_shim import HFShim
from spacy_transformers.util import make_tempdir
from thinc.api import ArgsKwargs, Model, get_torch_default_device

from ..errors import Errors
from .heap import release_freed_memory, trim_heap

# windows per encoder call at inference: 64 x 128 pieces keeps the activations of one call
# in the tens of MB for a MiniLM-sized encoder
MAX_WINDOWS = 64
# windows per call when they are grouped by length: small enough that a group's windows have
# nearly one length, large enough that the Linear layers still multiply big matrices
GROUP_WINDOWS = 8
# pieces (rows) per encoder call at the least: PyTorch's CPU matrix product rounds a row
# differently when the product has 1-3, 5-7 or 9-11 rows (measured on torch 2.13's Linear),
# so a call never holds fewer
MIN_ROWS = 12


def _exact_self_attention(self, hidden_states, attention_mask=None, *args, **kwargs):
    """A BERT-style SDPA self-attention's forward in which each window attends over its own
    real keys only (cut to its length, no mask), at inference on right-padded windows; any
    other call (training, cross-attention, a cache, head masks, attention maps asked for,
    arguments this forward does not know) goes to the class's own forward."""
    import torch

    default = type(self).forward
    if (self.training or torch.is_grad_enabled() or hidden_states.device.type != "cpu"
            or any(value is not None and value is not False for value in list(args) + list(kwargs.values()))
            or getattr(self, "is_decoder", False) or getattr(self, "position_embedding_type", "absolute") != "absolute"
            or (attention_mask is not None and (attention_mask.dim() != 4 or attention_mask.shape[1] != 1))):
        return default(self, hidden_states, attention_mask, *args, **kwargs)
    bsz, tgt_len, _ = hidden_states.size()
    if attention_mask is None:  # no padding: every window its full length, through the same path
        lengths = torch.full((bsz,), tgt_len, dtype=torch.long, device=hidden_states.device)
    else:
        keep = attention_mask[:, 0, 0, :] == 0  # [windows, keys]: 0 where attended, the dtype's minimum where masked
        lengths = keep.sum(dim=1)
        positions = torch.arange(keep.shape[1], device=keep.device)
        if not bool((keep == (positions[None, :] < lengths[:, None])).all()):
            return default(self, hidden_states, attention_mask, *args, **kwargs)
    query = self.transpose_for_scores(self.query(hidden_states))
    key = self.transpose_for_scores(self.key(hidden_states))
    value = self.transpose_for_scores(self.value(hidden_states))
    # the padding's own queries get zeros (no alignment reads them): computing them would put
    # the real queries in other blocks of the attention kernel, which rounds by block
    out = torch.zeros_like(query)
    for length in torch.unique(lengths).tolist():
        rows = (lengths == length).nonzero(as_tuple=True)[0]
        cut = max(int(length), 1)
        out[rows, :, :cut] = torch.nn.functional.scaled_dot_product_attention(query[rows, :, :cut], key[rows, :, :cut], value[rows, :, :cut])
    return (out.transpose(1, 2).reshape(bsz, tgt_len, self.all_head_size),)


def _takes_exact_attention(module) -> bool:
    """A BERT-style SDPA self-attention: a class named *SdpaSelfAttention with query, key,
    value and transpose_for_scores, whose forward takes (hidden_states, attention_mask, ...)."""
    import inspect

    if not type(module).__name__.endswith("SdpaSelfAttention"):
        return False
    if not all(hasattr(module, a) for a in ("query", "key", "value", "transpose_for_scores", "all_head_size")):
        return False
    try:
        params = list(inspect.signature(type(module).forward).parameters)
    except (TypeError, ValueError):
        return False
    return params[:3] == ["self", "hidden_states", "attention_mask"]


def exact_attention(model) -> int:
    """Give each BERT-style SDPA self-attention of `model` the per-window forward above, once
    (a `functools.partial`, which pickles and deep-copies with the module). RETURNS how many
    modules have it: 0 for encoders of other kinds (eager attention, other architectures),
    whose outputs still move with the batch's padding by float rounding."""
    import functools

    n = 0
    for module in model.modules():
        if _takes_exact_attention(module):
            current = vars(module).get("forward")
            if current is None:
                module.forward = functools.partial(_exact_self_attention, module)
            elif getattr(current, "func", None) is not _exact_self_attention:
                continue  # someone else's forward: left alone
            n += 1
    return n


def _merge(outputs, positions, n: int, length: int):
    """The groups' outputs as one batch: group g's windows go to the window positions
    `positions[g]` of `n`, and per-piece tensors ([windows, pieces, width]) are zero-padded
    on the piece axis to `length`. Each tensor is written once into a preallocated output
    (padding, concatenating and reordering copies would each hold another copy of the
    batch's activations)."""
    import torch

    first = outputs[0]
    if isinstance(first, torch.Tensor):
        if first.dim() == 3:
            out = first.new_zeros((n, length, first.shape[2]))
            for o, pos in zip(outputs, positions):
                out[pos, : o.shape[1]] = o[:, :length]
        else:
            out = first.new_empty((n,) + tuple(first.shape[1:]))
            for o, pos in zip(outputs, positions):
                out[pos] = o
        return out
    if isinstance(first, (tuple, list)) and not hasattr(first, "keys"):
        return type(first)(_merge([o[i] for o in outputs], positions, n, length) for i in range(len(first)))
    if hasattr(first, "keys"):
        merged = {k: _merge([o[k] for o in outputs], positions, n, length) if first[k] is not None else None for k in first.keys()}
        return type(first)(**merged)
    return first


def _pieces(tensor, cut: int, fill: int = 0):
    """[windows, pieces] cut to `cut` pieces, or padded to them with `fill` (the pad token for
    input ids; 0 elsewhere: a zero attention mask)."""
    import torch

    if tensor.shape[1] >= cut:
        return tensor[:, :cut]
    return torch.cat([tensor, tensor.new_full((tensor.shape[0], cut - tensor.shape[1]), fill)], dim=1)


class ChunkedHFShim(HFShim):
    """HFShim whose inference runs the encoder on length-sorted groups of windows."""

    max_windows = MAX_WINDOWS
    group_windows = GROUP_WINDOWS

    def predict(self, inputs: ArgsKwargs):
        import torch

        kwargs = inputs.kwargs
        mask = kwargs.get("attention_mask")
        per_window = {k for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
        if (
            inputs.args or mask is None or mask.dim() != 2
            or {kwargs[k].shape[0] for k in per_window} != {mask.shape[0]}
        ):
            return super().predict(inputs)
        n, length = mask.shape
        lengths = mask.sum(dim=1)
        # cut only right-padded windows (every window's real pieces first), and never when
        # the attention maps ([windows, heads, pieces, pieces]) are asked for
        right_padded = bool((mask.cumsum(dim=1) == torch.arange(1, length + 1, device=mask.device).clamp(max=lengths.unsqueeze(1))).all())
        if kwargs.get("output_attentions") or not right_padded:
            return self._predict_in_order(inputs, n)
        if getattr(self, "_exact_for", None) is not self._model:  # once per encoder (a load replaces it)
            self._exact_for = self._model
            if not exact_attention(self._model):
                warnings.warn(f"{type(self._model).__name__}: no BERT-style SDPA self-attention found, so a text's encoder "
                              "outputs may move with the other texts of its batch by float rounding")
        step = max(1, min(self.group_windows, self.max_windows))
        pad_id = getattr(getattr(self._model, "config", None), "pad_token_id", None) or 0
        sort = torch.argsort(lengths, descending=True, stable=True)
        trim_heap()  # what the previous batch's later components freed
        parts, positions = [], []
        for start in range(0, n, step):
            idx = sort[start : start + step]
            positions.append(idx)
            # at least MIN_ROWS pieces per call: a lone short window gets padding (which its
            # exact attention does not read), beyond the batch's own where it must
            cut = max(1, int(lengths[idx].max()), -(-MIN_ROWS // len(idx)))
            group = {
                k: (_pieces(v.index_select(0, idx), cut, pad_id if k == "input_ids" else 0) if v.dim() == 2 and v.shape[1] == length else v.index_select(0, idx)) if k in per_window else v
                for k, v in kwargs.items()
            }
            parts.append(super().predict(ArgsKwargs(args=(), kwargs=group)))
        merged = _merge(parts, positions, n, length)
        del parts
        trim_heap()
        return merged

    def _predict_in_order(self, inputs: ArgsKwargs, n: int):
        """At most `max_windows` windows per call, in order, uncut (any padding side)."""
        import torch

        if n <= self.max_windows:
            return super().predict(inputs)
        parts, positions = [], []
        for start in range(0, n, self.max_windows):
            positions.append(slice(start, min(start + self.max_windows, n)))
            kwargs = {
                k: v[start : start + self.max_windows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
                for k, v in inputs.kwargs.items()
            }
            parts.append(super().predict(ArgsKwargs(args=(), kwargs=kwargs)))
        merged = _merge(parts, positions, n, inputs.kwargs["attention_mask"].shape[1])
        del parts
        trim_heap()
        return merged

    def from_bytes(self, bytes_data):
        load_hf_message(self, srsly.msgpack_loads(bytes_data))
        release_freed_memory()
        return self


def load_hf_message(shim: HFShim, msg: Dict[str, Any]) -> None:
    """Set up `shim` from a decoded HFShim message (what `HFShim.from_bytes` does, holding
    one copy of the weights fewer: no random initialization, the saved tensors assigned).
    `msg["state"]` is removed from `msg` (its bytes are freed once read)."""
    import torch
    from transformers import AutoModel
    from transformers.modeling_utils import no_init_weights

    from .encoder import model_from_config

    config_dict = msg["config"]
    if not config_dict:
        shim._hfmodel = HFObjects(None, None, None, msg["_init_tokenizer_config"], msg["_init_transformer_config"])
        return
    tok_dict = dict(msg["tokenizer"])
    with make_tempdir() as temp_dir:
        config_file = temp_dir / "config.json"
        srsly.write_json(config_file, config_dict)
        config = shim.config_cls.from_pretrained(config_file)
        tok_kwargs = tok_dict.pop("kwargs", {})
        for x, x_bytes in tok_dict.items():
            Path(temp_dir / x).write_bytes(x_bytes)
        tokenizer = shim.tokenizer_cls.from_pretrained(str(temp_dir.absolute()), **tok_kwargs)
        vocab_file_contents = None
        if hasattr(tokenizer, "vocab_file"):
            vocab_file_name = tokenizer.vocab_files_names["vocab_file"]
            vocab_file_contents = (temp_dir / vocab_file_name).read_bytes()
    with no_init_weights():
        if shim.model_cls is AutoModel:
            transformer = model_from_config(config)
        else:
            transformer = shim.model_cls.from_config(config)
    shim._hfmodel = HFObjects(tokenizer, transformer, vocab_file_contents, SimpleFrozenDict(), SimpleFrozenDict())
    shim._model = transformer
    device = get_torch_default_device()
    # tensors and containers only: a pipeline handed to a user runs no pickled code
    state = torch.load(BytesIO(msg.pop("state")), map_location=device, weights_only=True)
    try:
        transformer.load_state_dict(state, assign=True)
    except RuntimeError:
        warnings.warn(
            "Error loading saved torch state_dict with strict=True, likely due to differences between "
            "'transformers' versions. Attempting to load with strict=False as a fallback...\n\nIf you see "
            "errors or degraded performance, download a newer compatible model or retrain your custom model "
            "with the current 'transformers' and 'spacy-transformers' versions. For more details and "
            "available updates, run: python -m spacy validate"
        )
        # assign=False: a parameter missing from the state keeps an allocated (zero) tensor
        for param in transformer.parameters():
            param.data.zero_()
        transformer.load_state_dict(state, strict=False)
    del state
    transformer.to(device)


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
