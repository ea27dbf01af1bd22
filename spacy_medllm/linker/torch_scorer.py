"""The candidate scorer: string and type features, optionally mention-in-context vs concept."""
import torch
from torch import nn


class CandidateScorer(nn.Module):
    """Logits for each (mention, candidate) pair.

    logit = MLP(features) [+ <P(mention vector), E[concept row]>]

    With `n_heads > 1` the feature MLP is an ensemble of `n_heads` MLPs, each
    initialized apart: in training the module returns every head's logits side by
    side, (M, n_heads * K), and the component trains each head on its own loss; in
    prediction it returns their mean log-probability, (M, K) (the softmax of it is the
    normalized geometric mean of the heads' probabilities). The context term, where
    there is one, is shared: every head adds it, so it learns from all their losses.

    The mention vector comes from the shared encoder (pooled over the mention's
    tokens); concept rows are hashed concept ids, so a concept seen in training
    gets a context profile and an unseen one falls back on the features. With
    `width == 0` there is no context term: the scorer reads the features alone.
    Slot 0 of every mention is NIL: its features are all zero but for a NIL
    indicator, so the model learns when no candidate is right.
    """

    def __init__(self, width: int, n_features: int, hidden: int, n_rows: int, n_heads: int = 1):
        super().__init__()
        if n_heads < 1:
            raise ValueError(f"CandidateScorer: n_heads must be at least 1, not {n_heads}")
        # the constructor's arguments: saved with the weights (`spacy_medllm.layers.torch_io`)
        self.config = {"width": width, "n_features": n_features, "hidden": hidden, "n_rows": n_rows, "n_heads": n_heads}
        self.width = width
        self.n_heads = n_heads
        if n_heads == 1:
            self.features = _mlp(n_features, hidden)
        else:
            self.features = nn.ModuleList([_mlp(n_features, hidden) for _ in range(n_heads)])
        if width > 0:
            self.project = nn.Linear(width, hidden)
            self.concepts = nn.Embedding(n_rows, hidden)
            nn.init.normal_(self.concepts.weight, std=0.01)

    @classmethod
    def config_from_state(cls, state, metadata, current: "CandidateScorer"):
        """The constructor's arguments of weights saved without them (thinc's
        `torch.save` of the state dict: pipelines saved before the safetensors format)."""
        hidden, n_features = state["features.0.weight"].shape
        config = dict(current.config, n_features=int(n_features), hidden=int(hidden), n_heads=1)
        if "project.weight" in state:
            config["width"] = int(state["project.weight"].shape[1])
            config["n_rows"] = int(state["concepts.weight"].shape[0])
        else:
            config["width"] = 0
        return config

    def forward(self, mentions: torch.Tensor, feats: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # mentions (M, width); feats (M, K, F); rows (M, K) long; mask (M, K) bool -> logits (M, K)
        # (n_heads > 1 in training: (M, n_heads * K), each head's K logits in turn)
        if self.n_heads == 1:
            logits = self.features(feats).squeeze(-1)
        else:
            logits = torch.stack([head(feats).squeeze(-1) for head in self.features], dim=1)
        if self.width > 0:
            context = torch.einsum("mh,mkh->mk", self.project(mentions), self.concepts(rows))
            logits = logits + (context if self.n_heads == 1 else context.unsqueeze(1))
        if self.n_heads == 1:
            return logits.masked_fill(~mask, -1e4)
        logits = logits.masked_fill(~mask.unsqueeze(1), -1e4)
        if self.training:
            return logits.reshape(logits.shape[0], -1)
        return torch.log_softmax(logits, dim=-1).mean(dim=1)


def _mlp(n_features: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
