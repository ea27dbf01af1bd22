"""A torch module rebuilt once its shapes are known (a new wrapper layer,
`spacy_medllm.layers.torch_io.replace_module`) stays on the device of the module it
replaces, the one `--gpu-id` chose, never a hard-coded one. On CPU: the ops below report a
GPU while the modules live on the CPU; a rebuilt module that followed the ops (or moved to
"cuda") would leave the CPU."""
import numpy
import spacy
import torch
from thinc.api import NumpyOps

from spacy_medllm.kb import Concept, KnowledgeBase
from spacy_medllm.layers.torch_io import module_of

CPU = {torch.device("cpu")}
LISTENER = {"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"}, "upstream": "*"}


def gpu_looking_ops() -> NumpyOps:
    return NumpyOps(device_type="gpu")


def devices(module: torch.nn.Module):
    return {p.device for p in module.parameters()}


def test_linker_scorer():
    from spacy_medllm.linker.model import set_input_width

    linker = spacy.blank("en").add_pipe("medllm_linker", config={"model": {"@architectures": "spacy_medllm.LinkerModel.v1", "tok2vec": LISTENER}})
    assert devices(module_of(linker.model.get_ref("scorer"))) == CPU
    linker.model.ops = gpu_looking_ops()
    set_input_width(linker.model, 8)
    module = module_of(linker.model.get_ref("scorer"))
    assert module.width == 8 and devices(module) == CPU


def test_relation_pair_encoder():
    from spacy_medllm.relations.model import set_input_width

    rel = spacy.blank("en").add_pipe("medllm_rel")
    pairs = rel.model.get_ref("pair_representation")
    assert devices(module_of(pairs.layers[0])) == CPU
    pairs.ops = gpu_looking_ops()
    set_input_width(pairs, 8)
    module = module_of(pairs.layers[0])
    assert module.project.in_features == 8 and devices(module) == CPU


def test_kg_attention_module():
    from spacy_medllm.kg.embeddings import EmbeddingTable
    from spacy_medllm.layers.kg_attention import build_kg_attention, set_knowledge
    from thinc.api import Model

    tok2vec = Model("fixed", lambda model, docs, is_train: ([], lambda d: []), dims={"nO": 16})
    layer = build_kg_attention(tok2vec, n_heads=2, attention_width=8)
    assert devices(module_of(layer.get_ref("attention"))) == CPU
    layer.ops = gpu_looking_ops()
    kb = KnowledgeBase([Concept("D1", "Hypotension", [], ["Disease"]), Concept("D2", "Naloxone", [], ["Chemical"])])
    set_knowledge(layer, EmbeddingTable(numpy.ones((2, 4), dtype="float32"), ["D1", "D2"]), kb, 16)
    module = module_of(layer.get_ref("attention"))
    assert module.embeddings.weight.shape == (2, 4) and devices(module) == CPU
