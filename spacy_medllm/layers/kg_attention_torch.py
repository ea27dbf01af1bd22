"""The KG-attention module: tokens attend over the graph embeddings of their KB candidates.

Only tokens that have at least one candidate are given to the module (the thinc
layer leaves the others untouched), so every row has a real key to attend to.
"""
import json
from typing import Any, Dict

import torch
from torch import nn

# the layer's first format (safetensors, shapes in the tensors): read by `config_from_state`
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
        # the constructor's arguments: saved with the weights (`spacy_medllm.layers.torch_io`)
        self.config = {
            "width": width, "n_concepts": n_concepts, "embedding_dim": embedding_dim, "n_heads": n_heads,
            "attention_width": attention_width, "freeze_embeddings": freeze_embeddings, "gate_bias": gate_bias,
        }
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


def config_from_state(state: Dict[str, torch.Tensor], metadata: Dict[str, str], current: KGAttentionModule) -> Dict[str, Any]:
    """The constructor's arguments of weights in the layer's first safetensors format
    (`spacy_medllm.kg_attention` version 1: n_heads and freeze_embeddings in the
    metadata, the other shapes in the tensors)."""
    meta = json.loads(metadata.get("config", "{}"))
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > STATE_VERSION:
        raise ValueError(f"format version {meta.get('version')!r} is newer than this spacy_medllm supports ({STATE_VERSION})")
    n_concepts, embedding_dim = state["embeddings.weight"].shape
    attention_width, width = state["query.weight"].shape
    return {
        "width": int(width), "n_concepts": int(n_concepts), "embedding_dim": int(embedding_dim),
        "n_heads": int(meta["n_heads"]), "attention_width": int(attention_width),
        "freeze_embeddings": bool(meta["freeze_embeddings"]),
    }
