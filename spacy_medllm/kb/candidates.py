"""Candidate generation: exact alias lookup plus character n-gram TF-IDF search.

Every name of the knowledge base is a row of an L2-normalized TF-IDF matrix over
character 3-grams (within word boundaries, like scispaCy's). A mention's candidates
are the concepts of its nearest names by cosine similarity, found by an exact
sparse matrix product: with ~100k names it takes about a millisecond per mention on
one core, needs no index build (scispaCy's HNSW index over the same names takes
~20 minutes to build) and never misses a neighbour. Names that match the mention
exactly (after case and whitespace normalization) come first with score 1.0.

Everything is stored in safe formats: the vocabulary as JSON, idf and the name ->
concept mapping as `.npy`, the name matrix as a scipy `.npz` (loaded with
`allow_pickle=False`). The index records a fingerprint of the knowledge base it was
built from (its concept ids and names, hashed): loading it beside another knowledge base,
whose ids and names the rows would silently misname, is refused; so is a damaged file.
"""
import hashlib
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp
import srsly
from sklearn.feature_extraction.text import TfidfVectorizer

from ..errors import Errors
from .knowledge_base import KnowledgeBase, normalize_alias

INDEX_FORMAT = "spacy_medllm.candidate_index"
INDEX_VERSION = 1
INDEX_FILES = ("index.json", "idf.npy", "owners.npy", "names.npz")

Candidate = Tuple[str, float]


def kb_fingerprint(kb: KnowledgeBase) -> str:
    """A hash of what an index is built from: the concept ids and their names, in order."""
    h = hashlib.sha256()
    for concept in kb:
        h.update(concept.concept_id.encode("utf8") + b"\x00")
        for name in concept.names:
            h.update(normalize_alias(name).encode("utf8") + b"\x01")
        h.update(b"\x02")
    return h.hexdigest()


def _vectorizer(vocabulary: Optional[Dict[str, int]] = None) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 3), lowercase=True, dtype=np.float32, sublinear_tf=True, vocabulary=vocabulary
    )


class CandidateGenerator:
    """Top-k concepts for mention strings, from a `KnowledgeBase`."""

    def __init__(self, kb: KnowledgeBase, *, _state: Optional[dict] = None):
        self.kb = kb
        if _state is not None:
            self.__dict__.update(_state)
            return
        names: List[str] = []
        owners: List[int] = []
        self.concept_ids: List[str] = [c.concept_id for c in kb]
        for i, concept in enumerate(kb):
            for name in concept.names:
                names.append(normalize_alias(name))
                owners.append(i)
        self.vectorizer = _vectorizer()
        self.matrix = self.vectorizer.fit_transform(names).tocsr().astype(np.float32)
        self.owners = np.asarray(owners, dtype=np.int32)

    def __call__(self, mentions: Sequence[str], k: int = 30, chunk_size: int = 256) -> List[List[Candidate]]:
        """The k best (concept_id, score) for each mention, best first.

        Exact name matches score 1.0; other concepts score the cosine similarity of
        their closest name. Ties break by concept id, so results are reproducible.
        """
        out: List[List[Candidate]] = []
        # in chunks: the similarity matrix of many mentions against ~100k names is large
        for i in range(0, len(mentions), chunk_size):
            out.extend(self._search(mentions[i : i + chunk_size], k))
        return out

    def _search(self, mentions: Sequence[str], k: int) -> List[List[Candidate]]:
        queries = self.vectorizer.transform([normalize_alias(m) for m in mentions]).astype(np.float32)
        sims = (queries @ self.matrix.T).tocsr()
        out: List[List[Candidate]] = []
        for row, mention in enumerate(mentions):
            start, end = sims.indptr[row], sims.indptr[row + 1]
            cols, vals = sims.indices[start:end], sims.data[start:end]
            best: Dict[int, float] = {}
            if len(vals):
                # keep the k*8 best names: enough for k concepts unless concepts repeat >8 times there
                top = np.argpartition(-vals, k * 8)[: k * 8] if len(vals) > k * 8 else np.arange(len(vals))
                for j in top:
                    owner = int(self.owners[cols[j]])
                    score = float(vals[j])
                    if score > best.get(owner, -1.0):
                        best[owner] = score
            scored = {self.concept_ids[o]: min(s, 0.9999) for o, s in best.items()}
            for cid in self.kb.lookup(mention):
                scored[cid] = 1.0
            ranked = sorted(scored.items(), key=lambda x: (-x[1], x[0]))[:k]
            out.append([(cid, round(score, 4)) for cid, score in ranked])
        return out

    def to_disk(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "index.json", {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "kb_fingerprint": kb_fingerprint(self.kb),
            "vocabulary": {k: int(v) for k, v in self.vectorizer.vocabulary_.items()}, "concept_ids": self.concept_ids,
        })
        np.save(path / "idf.npy", self.vectorizer.idf_.astype(np.float32))
        np.save(path / "owners.npy", self.owners)
        sp.save_npz(path / "names.npz", self.matrix)

    @classmethod
    def from_disk(cls, path: Union[str, Path], kb: KnowledgeBase, kb_source: Optional[str] = None) -> "CandidateGenerator":
        """Load an index written by `to_disk` for the knowledge base `kb`; a damaged file
        (E051) or an index of another knowledge base (E052) is refused, naming the file.

        kb_source (str): where `kb` came from, for the error message.
        """
        path = Path(path)
        for name in INDEX_FILES:
            if not (path / name).exists():
                raise FileNotFoundError(Errors.E003.format(path=path / name))
        meta_file = path / "index.json"
        try:
            meta = srsly.read_json(meta_file)
        except ValueError as err:
            raise ValueError(Errors.E051.format(path=meta_file, reason=f"not valid JSON ({err})")) from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise ValueError(Errors.E051.format(path=meta_file, reason=f"not a {INDEX_FORMAT} file"))
        if not isinstance(meta.get("version"), int) or meta["version"] > INDEX_VERSION:
            raise ValueError(Errors.E011.format(path=meta_file, version=meta.get("version"), supported=INDEX_VERSION))
        if not isinstance(meta.get("vocabulary"), dict) or not isinstance(meta.get("concept_ids"), list):
            raise ValueError(Errors.E051.format(path=meta_file, reason="'vocabulary' or 'concept_ids' missing"))
        kb_name = kb_source or f"the given one ({len(kb)} concepts)"
        ids = [c.concept_id for c in kb]
        if meta.get("kb_fingerprint") is not None:
            if meta["kb_fingerprint"] != kb_fingerprint(kb):
                reason = ("its concepts differ" if meta["concept_ids"] != ids else "the same concept ids with other names")
                raise ValueError(Errors.E052.format(path=meta_file, kb=kb_name, reason=f"{reason}: {len(meta['concept_ids'])} concepts in the index, {len(ids)} in the knowledge base"))
        elif meta["concept_ids"] != ids:  # an index saved before the fingerprint existed
            raise ValueError(Errors.E052.format(path=meta_file, kb=kb_name, reason=f"its concepts differ: {len(meta['concept_ids'])} in the index, {len(ids)} in the knowledge base"))
        idf = _load_npy(path / "idf.npy")
        owners = _load_npy(path / "owners.npy")
        try:
            matrix = sp.load_npz(path / "names.npz").tocsr()
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(Errors.E051.format(path=path / "names.npz", reason=f"not a scipy sparse .npz matrix ({type(err).__name__}: {err})")) from None
        n_terms = len(meta["vocabulary"])
        if idf.ndim != 1 or len(idf) != n_terms:
            raise ValueError(Errors.E051.format(path=path / "idf.npy", reason=f"expected {n_terms} idf values, found shape {idf.shape}"))
        if matrix.shape[1] != n_terms:
            raise ValueError(Errors.E051.format(path=path / "names.npz", reason=f"expected {n_terms} columns, found {matrix.shape[1]}"))
        if owners.ndim != 1 or len(owners) != matrix.shape[0] or (len(owners) and not 0 <= int(owners.min()) <= int(owners.max()) < len(ids)):
            raise ValueError(Errors.E051.format(path=path / "owners.npy", reason=f"expected {matrix.shape[0]} concept rows below {len(ids)}, found shape {owners.shape}"))
        vectorizer = _vectorizer(meta["vocabulary"])
        vectorizer.idf_ = idf
        state = {"concept_ids": list(meta["concept_ids"]), "vectorizer": vectorizer, "matrix": matrix, "owners": owners}
        return cls(kb, _state=state)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        # object arrays (which would need pickle), truncated and garbage files end up here
        raise ValueError(Errors.E051.format(path=path, reason=f"not a plain .npy array ({err})")) from None
