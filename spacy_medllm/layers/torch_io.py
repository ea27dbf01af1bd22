"""Torch modules inside thinc layers, saved as safetensors with the shapes they need.

The three torch-backed layers (the linker's candidate scorer, the relation pair
encoder, KG attention) wrap their `nn.Module` with `wrap_module`. The wrapper is a
thinc `PyTorchWrapper_v3` whose `serialize_model` writes the module's weights as a
safetensors buffer (no pickle) and, in its metadata, the module's constructor
arguments (`module.config`, a JSON object: the shapes); its `deserialize_model`
builds a new module from those arguments and then loads the weights, so a pipeline
loads without knowing beforehand the width of its encoder or the size of its
embedding table.

A module whose shapes change once the pipeline is initialized (a listener's width, the
graph table's size) is replaced with `replace_module`, which swaps the whole wrapper
layer in its parent model (thinc's `Model.replace_node`); no shim internals are touched.

What thinc's default `PyTorchWrapper_v2` saved (`torch.save` of the state dict) is still
read, with `torch.load(weights_only=True)`, which unpickles tensors and containers only;
the shapes then come from the tensors (`legacy_config`).

A module used with `wrap_module` has a `config` attribute: a dict of its constructor's
keyword arguments, JSON-serializable.
"""
import json
import warnings
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from typing import Any, Callable, Dict, Optional

from thinc.api import Model, PyTorchWrapper_v3
from thinc.model import serialize_attr

from ..errors import Errors

FORMAT = "spacy_medllm.torch_module"
VERSION = 1
# the safetensors metadata key under which the format, version, module name and config are stored
META_KEY = "spacy_medllm"

# (state dict, safetensors metadata, current module) -> constructor arguments
LegacyConfig = Callable[[Dict[str, Any], Dict[str, str], Any], Dict[str, Any]]


@dataclass
class TorchIO:
    """How a wrapper layer builds, saves and loads its module (kept in the layer's attrs,
    so `replace_module` can build a like wrapper; not serialized: thinc skips an attr
    whose serializer raises TypeError)."""

    name: str
    build: Callable[..., Any]
    convert_inputs: Optional[Callable]
    convert_outputs: Optional[Callable]
    legacy_config: Optional[LegacyConfig] = None


@serialize_attr.register(TorchIO)
def _serialize_torch_io(_: TorchIO, value: TorchIO, name: str, model: Model) -> bytes:
    # code, not data: rebuilt by the architecture function when the pipeline is constructed
    raise TypeError("TorchIO is not serialized")


def wrap_module(
    module: Any,
    *,
    name: str,
    build: Callable[..., Any],
    convert_inputs: Optional[Callable] = None,
    convert_outputs: Optional[Callable] = None,
    legacy_config: Optional[LegacyConfig] = None,
    device: Optional[Any] = None,
) -> Model:
    """A thinc layer around `module` that saves it as safetensors plus its config.

    module (torch.nn.Module): the module, with a `config` dict of constructor arguments.
    name (str): the layer's name in error messages and in the saved metadata.
    build (Callable[..., torch.nn.Module]): builds a module from `**config`.
    convert_inputs, convert_outputs (Optional[Callable]): as for `PyTorchWrapper_v3`.
    legacy_config (Optional[LegacyConfig]): constructor arguments for weights saved without
        a config (older formats); None: the current module's config.
    device (Optional[torch.device]): where the module lives (default: thinc's torch device).
    RETURNS (Model): the wrapper layer.
    """
    io = TorchIO(name, build, convert_inputs, convert_outputs, legacy_config)
    wrapper = PyTorchWrapper_v3(
        module,
        convert_inputs=convert_inputs,
        convert_outputs=convert_outputs,
        device=device,
        serialize_model=partial(serialize_module, name=name),
        deserialize_model=partial(deserialize_module, io=io),
    )
    wrapper.attrs["torch_io"] = io
    return wrapper


def replace_module(parent: Model, wrapper: Model, module: Any) -> Model:
    """Put `module` in place of `wrapper`'s module: a new wrapper (same conversions and
    formats, same device) replaces `wrapper` wherever `parent` holds it.

    parent (Model): a model whose layers or refs include `wrapper`.
    wrapper (Model): a layer made by `wrap_module`.
    module (torch.nn.Module): the new module (with `config`).
    RETURNS (Model): the new wrapper.
    """
    io: TorchIO = wrapper.attrs["torch_io"]
    new = wrap_module(
        module, name=io.name, build=io.build, convert_inputs=io.convert_inputs, convert_outputs=io.convert_outputs,
        legacy_config=io.legacy_config, device=wrapper.shims[0].device,
    )
    if not parent.replace_node(wrapper, new):
        raise ValueError(Errors.E130.format(name=io.name, reason="the layer to replace is not part of the model"))
    return new


def module_of(wrapper: Model) -> Any:
    """The torch module of a `wrap_module` layer (read only: `replace_module` changes it)."""
    return wrapper.shims[0]._model


def serialize_module(module: Any, *, name: str) -> bytes:
    """The module's weights as safetensors bytes, with its config in the metadata."""
    from safetensors.torch import save

    meta = {"format": FORMAT, "version": VERSION, "module": name, "config": module.config}
    state = {key: t.detach().contiguous().cpu() for key, t in module.state_dict().items()}
    return save(state, metadata={META_KEY: json.dumps(meta)})


def deserialize_module(current: Any, data: bytes, device: Any, *, io: TorchIO) -> Any:
    """A module rebuilt from the config saved with `data`, its weights loaded, on `device`.

    RAISES (ValueError): E131 when `data` is neither a safetensors buffer nor a state dict
        `torch.load(weights_only=True)` reads; E132 for a newer or unknown format;
        E133 when the weights do not fit the saved shapes; E132 for another module's weights too.
    """
    state, meta = _read_state(data, io.name)
    saved = meta.get(META_KEY)
    if saved is not None:
        try:
            info = json.loads(saved)
        except ValueError as err:
            raise ValueError(Errors.E132.format(name=io.name, reason=f"unreadable metadata ({err})")) from None
        if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("config"), dict):
            raise ValueError(Errors.E132.format(name=io.name, reason=f"format {info.get('format') if isinstance(info, dict) else info!r}, expected {FORMAT!r}"))
        if not isinstance(info.get("version"), int) or info["version"] > VERSION:
            raise ValueError(Errors.E132.format(name=io.name, reason=f"format version {info.get('version')!r} is newer than this spacy_medllm supports ({VERSION})"))
        if info.get("module") != io.name:
            raise ValueError(Errors.E132.format(name=io.name, reason=f"these are the weights of {info.get('module')!r}"))
        config = info["config"]
    elif io.legacy_config is not None:
        try:
            config = io.legacy_config(state, meta, current)
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(Errors.E133.format(name=io.name, reason=f"older format without shapes: {err}")) from None
    else:
        config = dict(current.config)
    try:
        module = io.build(**config)
        module.load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ValueError(Errors.E133.format(name=io.name, reason=err)) from None
    return module.to(device)


def _read_state(data: bytes, name: str):
    """(state dict, safetensors metadata) of a safetensors buffer, or of a `torch.save`d state
    dict (thinc's default format; metadata empty)."""
    import torch
    from safetensors.torch import load

    try:
        return load(data), _safetensors_metadata(data)
    except Exception as err:  # safetensors raises its own error types
        safetensors_error = err
    state = None
    # torch.save writes a zip archive (torch >= 1.6) or, before, a pickle (protocol 2)
    if data[:4] == b"PK\x03\x04" or data[:2] == b"\x80\x02":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(BytesIO(data), map_location="cpu", weights_only=True)
        except Exception:  # an unpickling error, a truncated archive, ...: not a state dict either
            state = None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(Errors.E131.format(name=name, reason=f"neither safetensors ({safetensors_error}) nor a torch state dict")) from None
    return dict(state), {}


def _safetensors_metadata(data: bytes) -> Dict[str, str]:
    """The `__metadata__` of a safetensors buffer: an 8-byte little-endian header
    length, then the JSON header (the format's specification)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n].decode("utf8")).get("__metadata__") or {}
