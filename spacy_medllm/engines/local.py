"""`medllm annotate`, local engine: a pipeline over a corpus, record by record, resumable.

The output is JSONL, one object per document (`records.doc_record`), in input order, written
and flushed as each document is done. An interrupted run (Ctrl-C, SIGTERM, SIGKILL, a power
cut) leaves the documents it finished; `resume=True` drops a last line cut short, reads the
ids already written and annotates only the rest, so the resumed output equals an
uninterrupted run's. Without `resume`, an existing output is replaced only with `force`.
The input is counted in a first, parse-only pass, so the progress bar can show the time left.
"""
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from ..deid.io import CorruptRecord
from ..errors import Errors
from ..evaluation.metrics import peak_rss_mb
from .records import doc_record, free_tensors, read_records, runs_context

ON_ERROR = ("skip", "stop")
logger = logging.getLogger(__name__)


@dataclass
class AnnotateSummary:
    documents: int = 0
    already_done: int = 0
    words: int = 0
    seconds: float = 0.0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    output: str = ""
    engine: str = "local"
    workers: Dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        return {
            "documents": self.documents, "already_done": self.already_done, "words": self.words,
            "seconds": round(self.seconds, 2),
            "documents_per_second": round(self.documents / self.seconds, 2) if self.seconds else None,
            "words_per_second": round(self.words / self.seconds) if self.seconds else None,
            "skipped": [{"position": p, "reason": r} for p, r in self.skipped],
            "peak_rss_mb": peak_rss_mb(), "output": self.output, "engine": self.engine, **({"workers": self.workers} if self.workers else {}),
        }


def done_ids(output: Path) -> Set[str]:
    """The ids already in `output`; a last line without its newline (a write cut short) is
    removed from the file first. A complete line that is not a record is an error."""
    with output.open("rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            f.truncate(end)
    ids: Set[str] = set()
    for n, line in enumerate(data[:end].splitlines(), start=1):
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(Errors.E146.format(path=output, line=n)) from None
    return ids


def check_output(input_path: Path, output: Path, *, resume: bool, force: bool) -> None:
    if output.resolve() == input_path.resolve() or input_path.resolve() in output.resolve().parents:
        raise ValueError(Errors.E064.format(path=output, input=input_path))
    if output.exists() and not (resume or force):
        raise ValueError(Errors.E147.format(path=output))
    if output.is_dir():
        raise ValueError(Errors.E148.format(path=output))


def count_records(input_path: Path, **read_options) -> int:
    return sum(1 for _ in read_records(input_path, **read_options))


def pending(input_path: Path, done: Set[str], summary: AnnotateSummary, *, on_error: str, report: Callable[[str], None],
            stop: List[CorruptRecord], **read_options) -> Iterator[Tuple[str, str]]:
    """(text, id) of each record of `input_path` still to annotate: the ids in `done` are
    left out; a corrupt record is reported and recorded in `summary`, and with
    `on_error="stop"` it ends the stream and is appended to `stop`."""
    for r in read_records(input_path, **read_options):
        if isinstance(r, CorruptRecord):
            summary.skipped.append((r.position, r.reason))
            report(f"{'stopped at' if on_error == 'stop' else 'skipped'}: {r}")
            if on_error == "stop":
                stop.append(r)
                return
            continue
        doc_id, text = r
        if doc_id not in done:
            yield text, doc_id


def write_records(input_path: Path, output: Path, *, run: Callable[[Iterator[Tuple[str, str]]], Iterable[Tuple[Dict[str, object], int]]],
                  engine: str, on_error: str = "skip", resume: bool = False, force: bool = False, progress: bool = True,
                  report: Optional[Callable[[str], None]] = None, **read_options) -> AnnotateSummary:
    """The part every engine shares: check the output, read the ids already done, count the
    input, then write and flush the (record, words) pairs `run(todo)` yields for the stream
    `todo` of (text, id), with a progress bar; a stopping corrupt record is raised at the end."""
    from tqdm import tqdm

    if on_error not in ON_ERROR:
        raise ValueError(Errors.E007.format(fmt=f"on_error={on_error!r}", known=", ".join(ON_ERROR)))
    check_output(input_path, output, resume=resume, force=force)
    report = report or logger.warning
    done = done_ids(output) if resume and output.exists() else set()
    total = count_records(input_path, **read_options)
    summary = AnnotateSummary(already_done=len(done), output=str(output), engine=engine)
    stop: List[CorruptRecord] = []
    todo = pending(input_path, done, summary, on_error=on_error, report=report, stop=stop, **read_options)
    mode = "a" if resume and output.exists() else "w"
    start = time.perf_counter()
    bar = tqdm(total=max(total - len(done), 0), unit="doc", desc="annotate", disable=not progress, file=sys.stderr, smoothing=0.1)
    with output.open(mode, encoding="utf8") as out:
        for record, words in run(todo):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            summary.documents += 1
            summary.words += words
            bar.update(1)
            elapsed = time.perf_counter() - start
            if summary.documents % 16 == 0 and elapsed > 0:
                bar.set_postfix(words_s=f"{summary.words / elapsed:,.0f}")
        os.fsync(out.fileno())
    bar.close()
    summary.seconds = time.perf_counter() - start
    if stop:
        raise stop[0]
    return summary


def annotate(
    model, input_path: Union[str, Path], output: Union[str, Path], *, batch_size: int = 32, n_process: int = 1,
    on_error: str = "skip", resume: bool = False, force: bool = False, with_text: bool = False, progress: bool = True,
    report: Optional[Callable[[str], None]] = None, **read_options,
) -> AnnotateSummary:
    """Annotate every record of `input_path` with the pipeline `model` (a name, a path or a
    loaded `Language`) into the JSONL file `output`; see the module docstring."""
    import spacy

    nlp = []

    def run(todo: Iterator[Tuple[str, str]]) -> Iterator[Tuple[Dict[str, object], int]]:
        context = runs_context(nlp[0])
        for doc, doc_id in nlp[0].pipe(todo, as_tuples=True, batch_size=batch_size, n_process=n_process):
            yield doc_record(doc_id, doc, text=with_text, context=context), len(doc)

    input_path, output = Path(input_path), Path(output)
    check_output(input_path, output, resume=resume, force=force)  # before the pipeline loads
    # a pipeline loaded here drops its documents' tensors once done; one given is used as it is
    nlp.append(free_tensors(spacy.load(model)) if isinstance(model, (str, Path)) else model)
    return write_records(input_path, output, run=run, engine="local", on_error=on_error, resume=resume, force=force,
                         progress=progress, report=report, **read_options)
