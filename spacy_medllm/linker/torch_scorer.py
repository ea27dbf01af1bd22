"""The candidate scorer: string and type features, optionally mention-in-context vs concept."""
import torch
from torch import nn


class CandidateScorer(nn.Module):
    """Logits for each (mention, candidate) pair.

    logit = MLP(features) [+ <P(mention vector), E[concept row]>]

    The mention vector comes from the shared encoder (pooled over the mention's
    tokens); concept rows are hashed concept ids, so a concept seen in training
    gets a context profile and an unseen one falls back on the features. With
    `width == 0` there is no context term: the scorer reads the features alone.
    Slot 0 of every mention is NIL: its features are all zero but for a NIL
    indicator, so the model learns when no candidate is right.
    """

    def __init__(self, width: int, n_features: int, hidden: int, n_rows: int):
        super().__init__()
        # the constructor's arguments: saved with the weights (`spacy_medllm.layers.torch_io`)
        self.config = {"width": width, "n_features": n_features, "hidden": hidden, "n_rows": n_rows}
        self.width = width
        self.features = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        if width > 0:
            self.project = nn.Linear(width, hidden)
            self.concepts = nn.Embedding(n_rows, hidden)
            nn.init.normal_(self.concepts.weight, std=0.01)

    @classmethod
    def config_from_state(cls, state, metadata, current: "CandidateScorer"):
        """The constructor's arguments of weights saved without them (thinc's
        `torch.save` of the state dict: pipelines saved before the safetensors format)."""
        hidden, n_features = state["features.0.weight"].shape
        config = dict(current.config, n_features=int(n_features), hidden=int(hidden))
        if "project.weight" in state:
            config["width"] = int(state["project.weight"].shape[1])
            config["n_rows"] = int(state["concepts.weight"].shape[0])
        else:
            config["width"] = 0
        return config

    def forward(self, mentions: torch.Tensor, feats: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # mentions (M, width); feats (M, K, F); rows (M, K) long; mask (M, K) bool -> logits (M, K)
        logits = self.features(feats).squeeze(-1)
        if self.width > 0:
            logits = logits + torch.einsum("mh,mkh->mk", self.project(mentions), self.concepts(rows))
        return logits.masked_fill(~mask, -1e4)
