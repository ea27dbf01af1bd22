"""Candidate generation: exact alias lookup plus character n-gram TF-IDF search.

Every name of the knowledge base is a row of an L2-normalized TF-IDF matrix over
character 3-grams (within word boundaries, like scispaCy's). A mention's candidates
are the concepts of its nearest names by cosine similarity, found by an exact
sparse matrix product: with ~100k names it takes about a millisecond per mention on
one core, needs no index build (scispaCy's HNSW index over the same names takes
~20 minutes to build) and never misses a neighbour. Names that match the mention
exactly (after case and whitespace normalization; a mention that matches no name as written
also tries its American spelling, `KnowledgeBase.lookup_spellings`) come first with score 1.0.

With a `DenseIndex` (`spacy_medllm.kb.dense`: a trained name encoder and one vector per
name), the candidates are the union of the exact matches, the TF-IDF top k and the dense
top k; every candidate gets both scores (its closest name's TF-IDF cosine and dense
cosine, computed exactly for the candidates the other search found) and they are ranked
by `alpha * tfidf + (1 - alpha) * dense` (alpha chosen on dev: `medllm
evaluate-candidates --alpha`). The dense index lives in `index/dense/`.

Everything is stored in safe formats: the vocabulary as JSON, idf and the name ->
concept mapping as `.npy`, the name matrix as a scipy `.npz` (loaded with
`allow_pickle=False`). The index records a fingerprint of the knowledge base it was
built from (its concept ids and names, hashed): loading it beside another knowledge base,
whose ids and names the rows would silently misname, is refused; so is a damaged file.
"""
import json
import zipfile
from collections import OrderedDict
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
    """A hash of what an index is built from (`KnowledgeBase.fingerprint`)."""
    return kb.fingerprint()


def _vectorizer(vocabulary: Optional[Dict[str, int]] = None) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 3), lowercase=True, dtype=np.float32, sublinear_tf=True, vocabulary=vocabulary
    )


# (concept id, merged score, TF-IDF cosine, dense cosine)
DetailedCandidate = Tuple[str, float, float, float]


class CandidateGenerator:
    """Top-k concepts for mention strings, from a `KnowledgeBase`.

    dense (DenseIndex): optional dense name index of the same KB (names in the same order).
    alpha (float): weight of the TF-IDF score in the merged score (1: TF-IDF only).
    """

    def __init__(self, kb: KnowledgeBase, *, dense=None, alpha: float = 0.5, _state: Optional[dict] = None):
        self.kb = kb
        self.dense = dense
        self.alpha = float(alpha)
        # the names x terms matrix transposed once, in CSR, at the first search: a product with
        # its CSC view would convert it again on every call (~10 ms per 100k names)
        self._names_by_term = None
        # normalized mention -> its candidates, least recently used first (see `detailed`)
        self._cache: "OrderedDict[str, List[DetailedCandidate]]" = OrderedDict()
        self._cache_setting: Optional[tuple] = None
        # ~6.5 KB an entry (30 candidates with their scores as Python objects): 4,096 keeps the
        # cache under ~27 MB on a long corpus; `medllm_linker` keeps as many mention blocks in
        # front of it
        self.cache_size = 4096
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(Errors.E154.format(path="alpha", reason=f"{alpha}: the TF-IDF weight must be in [0, 1]"))
        if _state is not None:
            self.__dict__.update(_state)
            self._concept_ranges()
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
        self._concept_ranges()

    def _concept_ranges(self) -> None:
        # names are stored concept by concept: concept o owns rows start[o]:end[o]
        n = len(self.concept_ids)
        self._position = {cid: i for i, cid in enumerate(self.concept_ids)}
        # each concept row's rank among the ids in string order: ties of score break by id
        self._id_rank = np.empty(n, dtype=np.int64)
        self._id_rank[sorted(range(n), key=self.concept_ids.__getitem__)] = np.arange(n)
        # concept row -> {normalized name: its name row}, filled as mentions need them
        self._name_keys: Dict[int, Dict[str, int]] = {}
        self._starts = np.searchsorted(self.owners, np.arange(n), side="left")
        self._ends = np.searchsorted(self.owners, np.arange(n), side="right")
        if len(self.owners) > 1 and bool((np.diff(self.owners) < 0).any()):
            raise ValueError(Errors.E051.format(path="owners.npy", reason="names are not stored concept by concept"))

    def prepare(self) -> "CandidateGenerator":
        """Build now what the first search would build: the KB's alias index (exact
        matches) and the term-major copy of the name matrix; `medllm_linker` does this when
        a pipeline loads, so the first documents do not pay for it."""
        self.kb.alias_index  # noqa: B018  (a property that builds the index once)
        if self._names_by_term is None:
            self._names_by_term = self.matrix.T.tocsr()
        return self

    def set_dense(self, dense, alpha: Optional[float] = None) -> None:
        """Attach (or, with None, remove) a dense index of this KB."""
        if dense is not None and len(dense) != len(self.owners):
            raise ValueError(Errors.E052.format(path="dense index", kb=f"this index ({len(self.owners)} names)", reason=f"it holds {len(dense)} names"))
        self.dense = dense
        if alpha is not None:
            self.alpha = float(alpha)
        self._cache.clear()

    def __call__(self, mentions: Sequence[str], k: int = 30, chunk_size: int = 64) -> List[List[Candidate]]:
        """The k best (concept_id, score) for each mention, best first.

        Exact name matches score 1.0; other concepts score the cosine similarity of
        their closest name (merged with the dense cosine when there is a dense index).
        Ties break by concept id, so results are reproducible.
        """
        return [[(c[0], c[1]) for c in cs] for cs in self.detailed(mentions, k=k, chunk_size=chunk_size)]

    def detailed(self, mentions: Sequence[str], k: int = 30, chunk_size: int = 64) -> List[List[DetailedCandidate]]:
        """Like `__call__`, with each candidate's TF-IDF and dense cosines (dense 0.0 without a dense index).

        A mention's candidates depend on its normalized text alone, so each distinct text is
        searched once and the last `cache_size` results are kept across calls: in running
        text most mentions repeat ("cocaine", "seizures"; on the BC5CDR test abstracts, 2,355
        distinct texts among 9,809 mentions)."""
        keys = [normalize_alias(m) for m in mentions]
        # `set_dense` empties the cache itself; an int8 query encoder moves the dense scores
        setting = (k, self.alpha, getattr(self.dense, "query_precision", None))
        if self._cache_setting != setting:
            self._cache.clear()
            self._cache_setting = setting
        todo = [key for key in dict.fromkeys(keys) if key not in self._cache]
        exact = [self.kb.lookup_spellings(key) for key in todo]
        # the dense query vectors of every new text at once (the encoder's batches, and with
        # an int8 encoder their activation scales, do not depend on the chunking below)
        qvec = self._query_vectors(todo, exact) if self.dense is not None and todo else None
        # in chunks: the mentions x names similarity matrix holds ~35k cosines per mention
        # (short texts share 3-grams with tens of thousands of names)
        for i in range(0, len(todo), chunk_size):
            part = slice(i, i + chunk_size)
            found = self._search(todo[part], k, exact[part], None if qvec is None else qvec[part])
            for key, candidates in zip(todo[part], found):
                self._cache[key] = candidates
        out: List[List[DetailedCandidate]] = []
        for key in keys:
            out.append(list(self._cache[key]))
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _tfidf_concepts(self, sims, row: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(concept rows, best cosine) of the concepts among the mention's k*8 best names, in
        the order the concepts first appear among those names."""
        start, end = sims.indptr[row], sims.indptr[row + 1]
        cols, vals = sims.indices[start:end], sims.data[start:end]
        if not len(vals):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        # keep the k*8 best names: enough for k concepts unless concepts repeat >8 times there
        top = np.argpartition(-vals, k * 8)[: k * 8] if len(vals) > k * 8 else np.arange(len(vals))
        owners = self.owners[cols[top]]
        uniq, first, inverse = np.unique(owners, return_index=True, return_inverse=True)
        best = np.full(len(uniq), -1.0)
        np.maximum.at(best, inverse, vals[top].astype(np.float64))
        order = np.argsort(first, kind="stable")
        return uniq[order].astype(np.int64), best[order]

    def _tfidf_top(self, sims, row: int, k: int) -> Dict[int, float]:
        """The best cosine per concept among the mention's k*8 best names, in the order the
        concepts first appear among those names."""
        owners, best = self._tfidf_concepts(sims, row, k)
        return dict(zip(owners.tolist(), best.tolist()))

    def _tfidf_top_k(self, sims, row: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(concept rows, best cosines) of the mention's k best concepts by TF-IDF, best
        first, ties in `_tfidf_concepts`' order."""
        owners, best = self._tfidf_concepts(sims, row, k)
        keep = np.argsort(-best, kind="stable")[:k]
        return owners[keep], best[keep]

    def _name_rows(self, owners: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(pair index, name row) of every name of each pair's concept (`owners`: one per pair)."""
        starts, ends = self._starts[owners], self._ends[owners]
        lengths = ends - starts
        pair_idx = np.repeat(np.arange(len(owners)), lengths)
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = np.repeat(starts, lengths) + (np.arange(int(lengths.sum())) - offsets)
        return pair_idx, rows

    def _exact_name_row(self, key: str, concept_ids: Sequence[str]) -> int:
        """The row of a name of these concepts whose normalized text is `key` (-1: none)."""
        for cid in concept_ids:
            o = self._position.get(cid)
            if o is None:
                continue
            rows = self._name_keys.get(o)
            if rows is None:
                names = self.kb[cid].names
                if len(names) != int(self._ends[o] - self._starts[o]):
                    continue  # not this index's names (never so for a KB and index saved together)
                rows = self._name_keys[o] = {}
                for j, name in enumerate(names):
                    rows.setdefault(normalize_alias(name), int(self._starts[o]) + j)
            row = rows.get(key)
            if row is not None:
                return row
        return -1

    def _pair_max(self, pair_idx: np.ndarray, values: np.ndarray, n_pairs: int) -> np.ndarray:
        best = np.full(n_pairs, -1.0, dtype=np.float64)
        np.maximum.at(best, pair_idx, values)
        return np.maximum(best, 0.0)

    def _query_vectors(self, keys: List[str], exact: List[List[str]]) -> np.ndarray:
        """Dense vectors of distinct normalized mention texts; a text that is a KB name takes
        that name's stored vector (`DenseIndex.reuse_name_vectors`)."""
        name_rows = [self._exact_name_row(key, ids) if ids else -1 for key, ids in zip(keys, exact)]
        return self.dense.encode_queries(keys, name_rows)

    def _search(self, keys: List[str], k: int, exact: List[List[str]], qvec: Optional[np.ndarray]) -> List[List[DetailedCandidate]]:
        """Candidates of distinct normalized mention texts, given their exact matches and
        (with a dense index) their query vectors."""
        queries = self.vectorizer.transform(keys).astype(np.float32)
        sims = (queries @ self.prepare()._names_by_term).tocsr()
        if self.dense is None:
            tfidf = [self._tfidf_top(sims, row, k) for row in range(len(keys))]
            out = []
            for row in range(len(keys)):
                scored = {self.concept_ids[o]: min(s, 0.9999) for o, s in tfidf[row].items()}
                for cid in exact[row]:
                    scored[cid] = 1.0
                ranked = sorted(scored.items(), key=lambda x: (-x[1], x[0]))[:k]
                out.append([(cid, round(s, 4), round(s, 4), 0.0) for cid, s in ranked])
            return out
        return self._merge_dense(keys, queries, sims, exact, k, qvec)

    def _merge_dense(self, keys: List[str], queries, sims, exact: List[List[str]], k: int, qvec: np.ndarray) -> List[List[DetailedCandidate]]:
        """The union of the TF-IDF top k, the dense top k and the exact matches of each
        mention, each candidate with both scores, ranked by merged score then id: as arrays
        of (mention, concept) pairs, not per-pair Python objects."""
        n_mentions, n_concepts = len(keys), len(self.concept_ids)
        # the k best of the TF-IDF search (not every concept of its k*8 names)
        t_parts = [self._tfidf_top_k(sims, row, k) for row in range(n_mentions)]
        # dense: the keys are distinct, one query vector and one search each
        top = self.dense.top_concepts(qvec, k)

        def pair_keys(parts):
            lengths = np.array([len(p) for p in parts], dtype=np.int64)
            mention = np.repeat(np.arange(n_mentions, dtype=np.int64), lengths)
            owners = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]) if len(parts) else np.zeros(0, np.int64)
            return mention * n_concepts + owners

        t_keys = pair_keys([p[0] for p in t_parts])
        t_vals = np.concatenate([p[1] for p in t_parts]) if t_parts else np.zeros(0)
        d_keys = pair_keys([list(d) for d in top])
        d_vals = np.fromiter((v for d in top for v in d.values()), dtype=np.float64, count=len(d_keys))
        e_keys = pair_keys([[self._position[c] for c in e if c in self._position] for e in exact])
        pairs = np.unique(np.concatenate([t_keys, d_keys, e_keys]))
        mention_of, owner_of = pairs // n_concepts, pairs % n_concepts
        # a search's own score is exact for the candidates it found (the concept's best name);
        # the other score is computed from each of the pair's names (row-wise dot products)
        t_best = np.full(len(pairs), -1.0)
        t_best[np.searchsorted(pairs, t_keys)] = t_vals
        d_best = np.full(len(pairs), -1.0)
        d_best[np.searchsorted(pairs, d_keys)] = d_vals
        for which, known in (("tfidf", t_best), ("dense", d_best)):
            todo = np.flatnonzero(known < 0)
            if not len(todo):
                continue
            pair_idx, name_rows_ = self._name_rows(owner_of[todo])
            vals = np.zeros(len(name_rows_), dtype=np.float32)
            if which == "tfidf":
                block = 32768  # a batch's candidates can have hundreds of thousands of names
                for b in range(0, len(name_rows_), block):
                    rows, mrow = name_rows_[b : b + block], mention_of[todo[pair_idx[b : b + block]]]
                    vals[b : b + block] = np.asarray(queries[mrow].multiply(self.matrix[rows]).sum(axis=1)).ravel()
            else:
                # popular concepts are candidates of many mentions: (mention, name) pairs in
                # name order, so that each name's stored vector is read (for 8-bit codes:
                # decoded) once, in blocks small enough to keep a block's vectors ~10 MB
                by_name = np.argsort(name_rows_, kind="stable")
                block = 4096
                for b in range(0, len(by_name), block):
                    at = by_name[b : b + block]
                    uniq, inverse = np.unique(name_rows_[at], return_inverse=True)
                    vals[at] = np.einsum("ij,ij->i", qvec[mention_of[todo[pair_idx[at]]]], self.dense.name_vectors(uniq)[inverse])
            known[todo] = self._pair_max(pair_idx, vals, len(todo))
        t_best, d_best = np.maximum(t_best, 0.0), np.maximum(d_best, 0.0)
        t_r = np.round(np.minimum(t_best, 0.9999), 4)
        d_r = np.round(np.minimum(d_best, 0.9999), 4)
        m_r = np.round(np.minimum(self.alpha * np.minimum(t_best, 0.9999) + (1 - self.alpha) * np.minimum(d_best, 0.9999), 0.9999), 4)
        score = np.where(np.isin(pairs, e_keys), 1.0, m_r)
        # per mention: best merged score first, ties by concept id; the k first kept
        order = np.lexsort((self._id_rank[owner_of], -score, mention_of))
        ranked_mention = mention_of[order]
        group_start = np.searchsorted(ranked_mention, np.arange(n_mentions))
        group_end = np.minimum(np.searchsorted(ranked_mention, np.arange(n_mentions), side="right"), group_start + k)
        ids = [self.concept_ids[o] for o in owner_of[order].tolist()]
        rows = list(zip(ids, score[order].tolist(), t_r[order].tolist(), d_r[order].tolist()))
        return [rows[a:b] for a, b in zip(group_start.tolist(), group_end.tolist())]

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
        if self.dense is not None:
            self.dense.to_disk(path / "dense")
            # json, not srsly: ujson writes 0.3 as 0.30000000000000004
            (path / "dense" / "merge.json").write_text(json.dumps({"alpha": self.alpha}), encoding="utf8")

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
        meta = read_meta(meta_file, INDEX_FORMAT, INDEX_VERSION)
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
        generator = cls(kb, _state=state)
        if (path / "dense" / "dense.json").exists():
            from .dense import DenseIndex

            merge_file = path / "dense" / "merge.json"
            try:
                merge = json.loads(merge_file.read_text(encoding="utf8")) if merge_file.exists() else {}
            except ValueError as err:
                raise ValueError(Errors.E051.format(path=merge_file, reason=f"not valid JSON ({err})")) from None
            if not isinstance(merge, dict) or not isinstance(merge.get("alpha", 0.5), (int, float)):
                raise ValueError(Errors.E051.format(path=merge_file, reason="expected {\"alpha\": number}"))
            generator.set_dense(DenseIndex.from_disk(path / "dense", kb), alpha=float(merge.get("alpha", 0.5)))
        return generator


def read_meta(meta_file: Path, fmt: str, version: int) -> dict:
    """The JSON header of an index file: missing (E003), not JSON or not `fmt` (E051), or
    newer than `version` (E011) is refused, naming the file."""
    if not meta_file.exists():
        raise FileNotFoundError(Errors.E003.format(path=meta_file))
    try:
        meta = srsly.read_json(meta_file)
    except ValueError as err:
        raise ValueError(Errors.E051.format(path=meta_file, reason=f"not valid JSON ({err})")) from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(Errors.E051.format(path=meta_file, reason=f"not a {fmt} file"))
    if not isinstance(meta.get("version"), int) or meta["version"] > version:
        raise ValueError(Errors.E011.format(path=meta_file, version=meta.get("version"), supported=version))
    return meta


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        # object arrays (which would need pickle), truncated and garbage files end up here
        raise ValueError(Errors.E051.format(path=path, reason=f"not a plain .npy array ({err})")) from None
