"""The training logger prints progress lines where spaCy's tqdm bar switches itself off."""
import io

import pytest
import spacy
from spacy.util import registry


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _nlp(max_steps):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner").add_label("Chemical")
    nlp.config["training"]["max_steps"] = max_steps
    return nlp


def test_progress_lines_on_a_log_file_not_on_a_terminal():
    make = registry.loggers.get("spacy_medllm.ConsoleLogger.v1")
    nlp = _nlp(200)
    out, err = io.StringIO(), io.StringIO()
    log_step, finalize = make(progress_bar="eval", log_every=50)(nlp, out, err)
    for step in range(120):
        info = None
        if step == 99:
            info = {"epoch": 0, "step": step, "score": 0.8123, "other_scores": {}, "losses": {"ner": 1.0},
                    "checkpoints": [], "seconds": 1, "words": 10}
        log_step(info)
    finalize()
    lines = [line for line in err.getvalue().splitlines() if line.startswith("progress:")]
    assert len(lines) == 2, err.getvalue()
    assert lines[0].startswith("progress: step 50/200 (25%)") and "left ~" in lines[0]
    assert lines[1].startswith("progress: step 100/200 (50%)") and "last score 0.8123" in lines[1]
    assert "0.81" in out.getvalue() or "81" in out.getvalue()  # spaCy's own table still printed

    tty = _Tty()
    log_step, finalize = make(progress_bar=None, log_every=50)(_nlp(200), io.StringIO(), tty)
    for _ in range(100):
        log_step(None)
    assert "progress:" not in tty.getvalue()
    with pytest.raises(ValueError, match="log_every"):
        make(log_every=-1)


def test_every_config_logs_progress():
    from pathlib import Path

    from thinc.api import Config

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.cfg"))
    loggers = {p.name: Config().from_disk(p, interpolate=False)["training"]["logger"]["@loggers"] for p in configs
               if "training" in Config().from_disk(p, interpolate=False)}
    assert loggers and set(loggers.values()) == {"spacy_medllm.ConsoleLogger.v1"}, loggers
