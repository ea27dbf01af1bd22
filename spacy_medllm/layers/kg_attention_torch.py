"""The KG-attention module: tokens attend over the graph embeddings of their KB candidates.

Only tokens that have at least one candidate are given to the module (the thinc
layer leaves the others untouched), so every row has a real key to attend to.
"""
import json
from typing import Any, Dict

import torch
from torch import nn

STATE_FORMAT = "spacy_medllm.kg_attention"
STATE_VERSION = 1


class KGAttentionModule(nn.Module):
    """Knowledge added to token vectors through multi-head attention and a learned gate.

    For a token vector h (width W) and its candidates' embeddings e_1..e_K (dim D):

        q = Wq h;  k_j = Wk e_j;  v_j = Wv e_j          (split into `n_heads` heads)
        c = Wo concat_heads(softmax(q k / sqrt(d)) v)   (back to width W)
        g = sigmoid(Wg [h; c] + b)
        delta = g * c                                   (the caller adds it to h)

    The gate bias starts at `gate_bias` (-4: g ~ 0.02), so the layer starts close
    to the identity and the encoder's features are not disturbed before the gate
    has learned where knowledge helps.

    width (int): token vector width W.
    n_concepts (int): rows of the embedding table.
    embedding_dim (int): columns of the embedding table D.
    n_heads (int): attention heads; `attention_width` must be a multiple.
    attention_width (int): width of queries, keys and values.
    freeze_embeddings (bool): keep the table fixed (no gradient) or fine-tune it.
    """

    def __init__(
        self,
        width: int,
        n_concepts: int,
        embedding_dim: int,
        n_heads: int = 4,
        attention_width: int = 128,
        freeze_embeddings: bool = True,
        gate_bias: float = -4.0,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.head_width = attention_width // n_heads
        self.freeze_embeddings = freeze_embeddings
        self.embeddings = nn.Embedding(n_concepts, embedding_dim)
        self.embeddings.weight.requires_grad = not freeze_embeddings
        self.query = nn.Linear(width, attention_width)
        self.key = nn.Linear(embedding_dim, attention_width)
        self.value = nn.Linear(embedding_dim, attention_width)
        self.output = nn.Linear(attention_width, width)
        self.gate = nn.Linear(2 * width, width)
        nn.init.constant_(self.gate.bias, gate_bias)

    @property
    def width(self) -> int:
        return self.query.in_features

    def set_embeddings(self, vectors: torch.Tensor) -> None:
        """Copy a (n_concepts, embedding_dim) table into the module."""
        with torch.no_grad():
            self.embeddings.weight.copy_(vectors)

    def forward(self, tokens: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (N, W); candidates (N, K) rows of the table; mask (N, K) bool, >= 1 True per row.

        RETURNS (torch.Tensor): the gated knowledge delta (N, W) to add to `tokens`.
        """
        n, k = candidates.shape
        h, d = self.n_heads, self.head_width
        emb = self.embeddings(candidates)  # (N, K, D)
        q = self.query(tokens).view(n, h, d)
        keys = self.key(emb).view(n, k, h, d)
        values = self.value(emb).view(n, k, h, d)
        scores = torch.einsum("nhd,nkhd->nhk", q, keys) / (d**0.5)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = self.output(torch.einsum("nhk,nkhd->nhd", weights, values).reshape(n, h * d))
        gate = torch.sigmoid(self.gate(torch.cat([tokens, context], dim=-1)))
        return gate * context


def serialize_module(module: KGAttentionModule) -> bytes:
    """The module's weights and hyperparameters as safetensors bytes (no pickle)."""
    from safetensors.torch import save

    meta = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "n_heads": module.n_heads,
        "freeze_embeddings": module.freeze_embeddings,
    }
    state = {name: t.detach().contiguous().cpu() for name, t in module.state_dict().items()}
    return save(state, metadata={"config": json.dumps(meta)})


def deserialize_module(module: KGAttentionModule, data: bytes, device: "torch.device") -> KGAttentionModule:
    """Rebuild a module with the shapes stored in `data` and load its weights.

    A freshly constructed pipeline holds a placeholder module (the table's size and
    the encoder's width are known only after `nlp.initialize`); the saved tensors
    carry the real shapes, so the module is rebuilt from them before loading.
    """
    from safetensors.torch import load

    from ..errors import Errors

    try:
        state = load(data)
        raw = _safetensors_metadata(data).get("config", "{}")
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(Errors.E020.format(reason=f"not a safetensors state ({err})")) from None
    meta: Dict[str, Any] = json.loads(raw)
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(Errors.E020.format(reason=f"format {meta.get('format')!r}, expected {STATE_FORMAT!r}"))
    if not isinstance(meta.get("version"), int) or meta["version"] > STATE_VERSION:
        raise ValueError(Errors.E020.format(reason=f"format version {meta.get('version')!r} is newer than this spacy_medllm supports ({STATE_VERSION})"))
    try:
        n_concepts, embedding_dim = state["embeddings.weight"].shape
        attention_width, width = state["query.weight"].shape
        new = KGAttentionModule(
            width, n_concepts, embedding_dim, n_heads=int(meta["n_heads"]), attention_width=attention_width,
            freeze_embeddings=bool(meta["freeze_embeddings"]),
        )
        new.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as err:
        raise ValueError(Errors.E020.format(reason=str(err))) from None
    new.to(device)
    return new


def _safetensors_metadata(data: bytes) -> Dict[str, str]:
    """The `__metadata__` of a safetensors buffer: an 8-byte little-endian header
    length, then the JSON header (the format's specification)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n].decode("utf8")).get("__metadata__") or {}
