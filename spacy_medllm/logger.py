"""A training logger whose progress shows in a log file too.

spaCy's console loggers draw their progress bar with tqdm set to switch itself off when
stderr is not a terminal, so a training run under `nohup ... > train.log`, in CI or in a
`spacy project run` piped to a file shows nothing between two evaluations (on a 2-core CPU,
15 minutes). `spacy_medllm.ConsoleLogger.v1` is spaCy's `ConsoleLogger.v3` (same table, same
bar in a terminal, same optional JSONL file) plus, when stderr is not a terminal, one plain
line every `log_every` steps: step, share of `max_steps`, steps/s and the time left.
"""
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Optional, Tuple, Union

from spacy.util import registry


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@registry.loggers("spacy_medllm.ConsoleLogger.v1")
def console_logger(
    progress_bar: Optional[str] = "train",
    console_output: bool = True,
    output_file: Optional[Union[str, Path]] = None,
    log_every: int = 50,
):
    """spaCy's ConsoleLogger.v3, with progress lines where no progress bar can be drawn.

    progress_bar (Optional[str]): "train", "eval" or None, as in spacy.ConsoleLogger.v3 (a
        terminal only).
    console_output (bool): print the evaluation table.
    output_file (Optional[str | Path]): also write every evaluation as JSON lines here.
    log_every (int): on a stderr that is not a terminal, a progress line every this many
        steps (0 = never).
    """
    if log_every < 0:
        raise ValueError(f"log_every must be 0 or more, got {log_every}")
    base = registry.loggers.get("spacy.ConsoleLogger.v3")(
        progress_bar=progress_bar, console_output=console_output, output_file=output_file
    )

    def setup_printer(nlp, stdout: IO = sys.stdout, stderr: IO = sys.stderr) -> Tuple[Callable[[Optional[Dict[str, Any]]], None], Callable[[], None]]:
        log_step, finalize = base(nlp, stdout, stderr)
        isatty = getattr(stderr, "isatty", None)
        if not log_every or (isatty is not None and isatty()):
            return log_step, finalize
        max_steps = int(nlp.config["training"].get("max_steps") or 0)
        state = {"step": 0, "start": time.perf_counter(), "last_eval": None}

        def log_progress(info: Optional[Dict[str, Any]]) -> None:
            log_step(info)
            state["step"] += 1
            if info is not None:
                state["last_eval"] = info.get("score")
            step = state["step"]
            if step % log_every:
                return
            elapsed = time.perf_counter() - state["start"]
            rate = step / elapsed if elapsed > 0 else 0.0
            parts = [f"step {step:,}"]
            if max_steps:
                parts[0] += f"/{max_steps:,} ({100 * step / max_steps:.0f}%)"
            parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate:.1f} s/step" if rate else "")
            parts.append(f"elapsed {_clock(elapsed)}")
            if max_steps and rate:
                parts.append(f"left ~{_clock((max_steps - step) / rate)}")
            if state["last_eval"] is not None:
                parts.append(f"last score {state['last_eval']:.4f}")
            stderr.write("progress: " + ", ".join(p for p in parts if p) + "\n")
            stderr.flush()

        return log_progress, finalize

    return setup_printer
