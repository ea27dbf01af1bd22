"""The measures every evaluation shares.

- `prf` and `PRFCounts`: precision, recall and F1 from counts, micro over all labels and
  per label;
- `first_hit`, `recall_at_k` and `HitCounts`: ranked candidates against gold ids
  (accuracy@1, recall@k), per label and overall;
- `time_components`: one pipeline over the same texts, each component timed on the same
  batches (one entry per pipe), so a component's share of the pipeline is measured in the
  run that produces the predictions that are scored;
- `peak_rss_mb`: the peak resident memory of this process;
- `write_report`: a result as JSON beside its markdown table.

Scores are reported in percent, rounded to two decimals.
"""
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import srsly
from spacy.language import Language
from spacy.tokens import Doc

try:  # Unix only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

OVERALL = "overall"
KS = (1, 5, 10, 30)


def percent(fraction: float, ndigits: int = 2) -> float:
    """A fraction in percent, rounded."""
    return round(100 * float(fraction), ndigits)


def prf(tp: int, predicted: int, gold: int) -> Dict[str, float]:
    """Precision, recall and F1 (fractions) from counts; 0.0 where undefined."""
    p = tp / predicted if predicted else 0.0
    r = tp / gold if gold else 0.0
    return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


class PRFCounts:
    """True positives, predicted and gold counts per label; `scores` gives P/R/F (in
    percent) with the counts, micro over all labels ("overall") and per label."""

    def __init__(self) -> None:
        self.counts: Dict[str, List[int]] = defaultdict(lambda: [0, 0, 0])

    def add(self, label: str, *, tp: int = 0, predicted: int = 0, gold: int = 0) -> None:
        c = self.counts[label]
        c[0] += tp
        c[1] += predicted
        c[2] += gold

    def add_sets(
        self, predicted: Iterable[Hashable], gold: Iterable[Hashable], label_of: Callable[[Hashable], str] = lambda key: key[0],
    ) -> None:
        """Count exact matches between two collections of keys (each counted once);
        `label_of` gives a key's label (default: its first element)."""
        predicted, gold = set(predicted), set(gold)
        for key in predicted:
            self.add(label_of(key), tp=int(key in gold), predicted=1)
        for key in gold:
            self.add(label_of(key), gold=1)

    def scores(self, ndigits: int = 2) -> Dict[str, object]:
        """{"overall": {p, r, f, tp, predicted, gold}, "per_label": {label: {...}}}; labels sorted."""

        def row(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
            s = prf(tp, n_pred, n_gold)
            return {**{k: percent(v, ndigits) for k, v in s.items()}, "tp": tp, "predicted": n_pred, "gold": n_gold}

        total = [sum(c[i] for c in self.counts.values()) for i in range(3)]
        return {"overall": row(*total), "per_label": {label: row(*c) for label, c in sorted(self.counts.items())}}


def first_hit(ranked: Iterable[str], gold: Collection[str], match: Optional[Callable[[str, Collection[str]], bool]] = None) -> Optional[int]:
    """The rank (0 = first) of the first id in `ranked` that is right for `gold`, or None.

    match: whether an id is right for the gold ids, e.g.
        `lambda cid, gold: spacy_medllm.kb.ids_match(kb, cid, gold)` so that another id of
        the same concept counts; default: the id is one of them.
    """
    for i, cid in enumerate(ranked):
        if (match(cid, gold) if match is not None else cid in gold):
            return i
    return None


def recall_at_k(
    ranked: Sequence[str], gold: Collection[str], ks: Sequence[int] = KS, match: Optional[Callable[[str, Collection[str]], bool]] = None,
) -> Dict[str, bool]:
    """{"recall@k": whether a right id is among the first k} for each k."""
    hit = first_hit(list(ranked)[: max(ks)], gold, match)
    return {f"recall@{k}": hit is not None and hit < k for k in ks}


class HitCounts:
    """Items (mentions) per label, and for each named measure how many of them hit it.

    An item counts for its label and for "overall"; a measure an item was not given counts
    as a miss for it (a gold mention the tokenizer cannot represent: `add(label, {})`).
    """

    def __init__(self, measures: Sequence[str] = ()) -> None:
        self.n: Dict[str, int] = defaultdict(int)
        self.hits: Dict[str, Dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # reported in the order first given (or added), each 0 where no item hit it
        self.measures: Dict[str, None] = dict.fromkeys(measures)

    def add(self, label: str, hits: Mapping[str, bool]) -> None:
        for lab in (label, OVERALL):
            self.n[lab] += 1
            for measure, hit in hits.items():
                self.measures.setdefault(measure)
                self.hits[lab][measure] += bool(hit)

    def scores(self, ndigits: int = 2, key: str = "mentions") -> Dict[str, Dict[str, float]]:
        """{label: {"mentions": n, measure: percent}}: labels sorted, "overall" last."""
        labels = sorted(lab for lab in self.n if lab != OVERALL) + ([OVERALL] if self.n else [])
        return {
            lab: {key: self.n[lab], **{m: percent(self.hits[lab][m] / self.n[lab], ndigits) for m in self.measures}}
            for lab in labels
        }


@dataclass
class ComponentTimes:
    """Seconds per component over the same texts (pipeline order), the tokenizer's apart."""

    seconds: Dict[str, float] = field(default_factory=dict)
    tokenizer_s: float = 0.0
    docs: int = 0
    words: int = 0

    @property
    def pipes_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def total_s(self) -> float:
        return self.tokenizer_s + self.pipes_s

    @property
    def words_per_second(self) -> Optional[float]:
        """Tokens (of the pipeline's tokenizer) per second of the whole pipeline, tokenizer included."""
        return round(self.words / self.total_s) if self.total_s else None

    def share(self, name: str) -> Optional[float]:
        """The component's fraction of the components' time."""
        return round(self.seconds[name] / self.pipes_s, 4) if self.pipes_s else None

    def adds_to_rest(self, name: str) -> Optional[float]:
        """The component's time as a fraction of the other components' time."""
        rest = self.pipes_s - self.seconds[name]
        return round(self.seconds[name] / rest, 4) if rest > 0 else None

    def to_dict(self) -> Dict[str, object]:
        return {
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()}, "tokenizer_s": round(self.tokenizer_s, 2),
            "docs": self.docs, "words": self.words, "words_per_second": self.words_per_second,
        }


def time_components(
    nlp: Language, texts: Sequence[Union[str, Doc]], *, batch_size: int = 32, pipes: Optional[Sequence[str]] = None,
    warmup: int = 0,
) -> Tuple[List[Doc], ComponentTimes]:
    """Run `nlp` over `texts` in batches, timing each component on each batch, as
    `nlp.pipe(texts, batch_size=batch_size)` runs them.

    texts: strings (tokenized with `nlp.make_doc`, timed as the tokenizer) or Docs (used as
        they are, e.g. Docs that carry gold entities).
    pipes: the components to run, in pipeline order (default: every enabled one).
    warmup: run the first `warmup` texts through the pipeline once first, untimed (the
        first batch pays for lazy allocations).
    RETURNS (Tuple[List[Doc], ComponentTimes]): the processed Docs, and one entry per
        component run.
    """
    names = list(pipes) if pipes is not None else list(nlp.pipe_names)
    procs = [(name, nlp.get_pipe(name)) for name in names]

    def run(batch: Sequence[Union[str, Doc]], times: Optional[ComponentTimes]) -> List[Doc]:
        if all(isinstance(x, Doc) for x in batch):
            docs = list(batch)
        else:
            t = time.perf_counter()
            docs = [x if isinstance(x, Doc) else nlp.make_doc(x) for x in batch]
            if times is not None:
                times.tokenizer_s += time.perf_counter() - t
        for name, proc in procs:
            t = time.perf_counter()
            docs = list(proc.pipe(docs, batch_size=batch_size)) if hasattr(proc, "pipe") else [proc(d) for d in docs]
            if times is not None:
                times.seconds[name] += time.perf_counter() - t
        return docs

    if warmup:
        run([x.copy() if isinstance(x, Doc) else x for x in texts[:warmup]], None)
    times = ComponentTimes(seconds={name: 0.0 for name in names})
    out: List[Doc] = []
    for start in range(0, len(texts), batch_size):
        out.extend(run(texts[start : start + batch_size], times))
    times.docs = len(out)
    times.words = sum(len(d) for d in out)
    return out, times


PROC_STATUS = "/proc/self/status"


def peak_rss_mb() -> Optional[float]:
    """The peak resident memory of this process in MB: VmHWM on Linux, `resource` on other
    Unix systems, psutil's peak working set on Windows (when psutil is installed), else None.

    Not `ru_maxrss` on Linux: it survives exec, so a process spawned from a large parent
    (multiprocessing's spawn forks, then execs) reports the parent's size at the fork.
    """
    try:
        with open(PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    if resource is not None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    try:
        import psutil
    except ImportError:
        return None
    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)
    return round(peak / (1024 * 1024), 1) if peak is not None else None


def write_report(out_dir: Union[str, Path], stem: str, results: Dict[str, object], table: str) -> Tuple[Path, Path]:
    """Write OUT_DIR/STEM.json (the results) and OUT_DIR/STEM.md (the table)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srsly.write_json(out / f"{stem}.json", results)
    (out / f"{stem}.md").write_text(table, encoding="utf8")
    return out / f"{stem}.json", out / f"{stem}.md"


def _isolated_child(queue, func, args, kwargs):
    try:
        queue.put(("ok", func(*args, **kwargs)))
    except BaseException as err:  # report the failure to the parent instead of hanging it
        queue.put(("error", f"{type(err).__name__}: {err}"))


def run_in_fresh_process(func: Callable, model, *args, **kwargs):
    """`func(model, *args, **kwargs)` in a fresh (spawned) process, so that the peak memory it
    reports is its own; a failure comes back as E127 naming `model`."""
    import multiprocessing as mp

    from ..errors import Errors

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_isolated_child, args=(queue, func, (model, *args), kwargs))
    proc.start()
    import queue as queues

    while True:
        try:
            status, result = queue.get(timeout=1.0)
            break
        except queues.Empty:
            if not proc.is_alive():  # died before it could report (killed, out of memory, unpicklable)
                status, result = "error", f"the evaluation process ended with exit code {proc.exitcode} and no result"
                break
    proc.join()
    if status != "ok":
        raise RuntimeError(Errors.E127.format(model=model, reason=result))
    return result
