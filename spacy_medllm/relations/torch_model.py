"""The pair encoder: entity pairs of a Doc as vectors, from its token vectors."""
import math
from typing import List, Optional, Sequence

import torch
from torch import nn

# attention values (pairs x tokens) of the localized context pooling held at a time: 16 MB
CONTEXT_BUDGET = 1 << 22


class PairEncoder(nn.Module):
    """Vectors for (head entity, tail entity) pairs, one Doc at a time.

    Per Doc: token vectors are projected (and, with `depth` > 0, re-contextualized by
    a small BiLSTM, which lets a frozen shared encoder's output adapt to the task);
    a mention is the mean of its tokens; an entity (a mention, or all mentions of a
    concept) is the logsumexp of its mentions, a smooth max that lets the most telling
    mention dominate (ATLOP). Localized context pooling: each entity attends over the
    tokens; the product of the head's and the tail's attention, renormalized, pools the
    context that matters to both. Head and tail are then
    `tanh(W [entity; context; type])` with their own W. The words between the two
    closest mentions (the classic trigger of "X-induced Y") are max-pooled. The pair
    vector is `[head; tail; head * tail; between; distance embedding]`.

    Entity features (type ids): label, number of mentions, position of the first mention.
    Distance features: token gap and direction of the closest mentions, sentences apart.
    Knowledge features (PairRepresentation.v2): prior counts, relation rates and
    hierarchy flags, one embedding table each, summed and appended to the pair vector.
    """

    def __init__(
        self, width: int, hidden: int, n_labels: int, n_counts: int, n_positions: int,
        n_distances: int, n_sentences: int, max_between: int, distance_width: int, depth: int,
        dropout: float, knowledge_sizes: Sequence[int] = (), knowledge_width: int = 0,
    ):
        super().__init__()
        # the constructor's arguments: saved with the weights (`spacy_medllm.layers.torch_io`)
        self.config = {
            "width": width, "hidden": hidden, "n_labels": n_labels, "n_counts": n_counts, "n_positions": n_positions,
            "n_distances": n_distances, "n_sentences": n_sentences, "max_between": max_between,
            "distance_width": distance_width, "depth": depth, "dropout": dropout,
            "knowledge_sizes": [int(n) for n in knowledge_sizes], "knowledge_width": knowledge_width,
        }
        self.hidden = hidden
        self.max_between = max_between
        self.project = nn.Linear(width, hidden)
        self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=depth, bidirectional=True, batch_first=True) if depth > 0 else None
        self.labels = nn.Embedding(n_labels, hidden)
        self.counts = nn.Embedding(n_counts, hidden)
        self.positions = nn.Embedding(n_positions, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.head = nn.Linear(3 * hidden, hidden)
        self.tail = nn.Linear(3 * hidden, hidden)
        self.distances = nn.Embedding(n_distances, distance_width)
        self.sentences = nn.Embedding(n_sentences, distance_width)
        self.dropout = nn.Dropout(dropout)
        # prior / hierarchy feature tables (PairRepresentation.v2); none in v1
        self.knowledge = nn.ModuleList([nn.Embedding(n, knowledge_width) for n in knowledge_sizes]) if knowledge_width else None
        self.knowledge_width = knowledge_width if knowledge_width else 0

    @classmethod
    def config_from_state(cls, state, metadata, current: "PairEncoder"):
        """The constructor's arguments of weights saved without them (thinc's
        `torch.save` of the state dict: pipelines saved before the safetensors format);
        the token width comes from the projection, the rest from the current module."""
        return dict(current.config, width=int(state["project.weight"].shape[1]))

    def localized_context(self, entities: torch.Tensor, H: torch.Tensor, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(P, hidden): per pair, the tokens pooled by the product of the head's and the
        tail's attention. The attention is (pairs x tokens): on a long document (a discharge
        summary of 100k tokens, hundreds of pairs) it is computed a slice of pairs at a
        time, at most `CONTEXT_BUDGET` values per slice, so memory stays bounded."""
        n_tokens = H.shape[0]
        scale = math.sqrt(self.hidden)
        if (h.shape[0] + entities.shape[0]) * n_tokens <= CONTEXT_BUDGET:
            attention = torch.softmax(self.query(entities) @ self.key(H).T / scale, dim=-1)
            shared = attention[h] * attention[t]
            shared = shared / (shared.sum(-1, keepdim=True) + 1e-6)
            return shared @ H
        queries, keys = self.query(entities), self.key(H).T
        step = max(1, CONTEXT_BUDGET // (3 * n_tokens))
        out = []
        for i in range(0, h.shape[0], step):
            hs, ts = h[i : i + step], t[i : i + step]
            shared = torch.softmax(queries[hs] @ keys / scale, dim=-1) * torch.softmax(queries[ts] @ keys / scale, dim=-1)
            shared = shared / (shared.sum(-1, keepdim=True) + 1e-6)
            out.append(shared @ H)
        return torch.cat(out) if out else H.new_zeros(0, H.shape[1])

    @property
    def out_width(self) -> int:
        return 4 * self.hidden + self.distances.embedding_dim + self.knowledge_width

    def forward(
        self,
        tokvecs: List[torch.Tensor],
        bounds: List[torch.Tensor],
        members: List[torch.Tensor],
        feats: List[torch.Tensor],
        pairs: List[torch.Tensor],
        distances: List[torch.Tensor],
        between: List[torch.Tensor],
        knowledge: Optional[List[torch.Tensor]] = None,
    ) -> torch.Tensor:
        # per Doc: tokvecs (T, width); bounds (M, 2) token offsets; members (E, K)
        # mention indices, -1 padded; feats (E, 3) label/count/position ids;
        # pairs (P, 2) entity indices; distances (P, 2) token/sentence distance ids;
        # between (P, 2) token range between the closest mentions; knowledge (P, F) prior
        # and hierarchy feature ids  ->  (sum of P, out_width)
        out = []
        steps = None
        if knowledge is None:
            knowledge = [None] * len(tokvecs)
        for X, bnd, mem, feat, pair, dist, btw, know in zip(tokvecs, bounds, members, feats, pairs, distances, between, knowledge):
            H = self.dropout(self.project(X))
            if self.lstm is not None:
                H = self.lstm(H.unsqueeze(0))[0].squeeze(0)
            cum = torch.cat([H.new_zeros(1, H.shape[1]), H.cumsum(0)])
            lengths = (bnd[:, 1] - bnd[:, 0]).clamp(min=1).unsqueeze(1).to(H.dtype)
            mentions = (cum[bnd[:, 1]] - cum[bnd[:, 0]]) / lengths
            gathered = mentions[mem.clamp(min=0)]
            gathered = gathered.masked_fill((mem < 0).unsqueeze(-1), float("-inf"))
            entities = torch.logsumexp(gathered, dim=1)
            types = self.labels(feat[:, 0]) + self.counts(feat[:, 1]) + self.positions(feat[:, 2])
            h, t = pair[:, 0], pair[:, 1]
            context = self.localized_context(entities, H, h, t)
            zh = torch.tanh(self.head(torch.cat([entities[h], context, types[h]], dim=-1)))
            zt = torch.tanh(self.tail(torch.cat([entities[t], context, types[t]], dim=-1)))
            if steps is None:
                steps = torch.arange(self.max_between, device=H.device)
            index = btw[:, :1] + steps  # (P, max_between)
            valid = index < btw[:, 1:]
            words = H[index.clamp(max=H.shape[0] - 1)].masked_fill(~valid.unsqueeze(-1), float("-inf"))
            words = words.max(dim=1).values
            words = words.masked_fill(~valid.any(dim=1, keepdim=True), 0.0)
            position = self.distances(dist[:, 0]) + self.sentences(dist[:, 1])
            parts = [zh, zt, zh * zt, words, position]
            if self.knowledge is not None:
                parts.append(sum(table(know[:, i]) for i, table in enumerate(self.knowledge)))
            out.append(torch.cat(parts, dim=-1))
        return torch.cat(out) if out else tokvecs[0].new_zeros(0, self.out_width)
