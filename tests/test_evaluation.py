"""spacy_medllm.evaluation: the P/R/F, recall@k and timing helpers on hand-made inputs; NER,
candidate, linker and relation evaluation on tiny pipelines (an alternative id of the gold
concept counts); threshold tuning into a new pipeline folder (the input untouched byte for
byte, an existing output refused without --force, the input refused always) and the copy
of thresholds from a tuned pipeline; the medllm commands and the scripts that wrap them."""
import hashlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import DocBin
from thinc.api import Adam, fix_random_seed
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.evaluation import metrics
from spacy_medllm.evaluation.metrics import (
    ComponentTimes, HitCounts, PRFCounts, first_hit, prf, recall_at_k, time_components,
)
from spacy_medllm.kb import CandidateGenerator, Concept, KnowledgeBase, ids_match
from spacy_medllm.tokens import NIL, install_extensions, relation

from test_linker import CONCEPTS, TRAIN as LINKER_TRAIN, gold_doc
from test_relations import CID_TRAIN, SMALL_MODEL, cid_doc, separation

ROOT = Path(__file__).parent.parent
runner = CliRunner()

# Hypotension also has the id a later vocabulary gave it (as a supplementary record
# and the descriptor it became); gold may use either
ALT = "C000001"
ALT_CONCEPTS = [
    Concept(c.concept_id, c.canonical_name, list(c.aliases), list(c.types), c.definition, alt_ids=[ALT] if c.concept_id == "D007022" else [])
    for c in CONCEPTS
]


def tree_bytes(path: Path) -> dict:
    """Every file under `path` with the sha256 of its bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def write_docbin(path: Path, docs) -> Path:
    DocBin(docs=docs, store_user_data=True).to_disk(path)
    return path


# ---- metrics ------------------------------------------------------------------------------------
def test_prf_counts_exact():
    assert prf(3, 4, 6) == {"p": 0.75, "r": 0.5, "f": 0.6}
    assert prf(0, 0, 0) == {"p": 0.0, "r": 0.0, "f": 0.0}
    counts = PRFCounts()
    counts.add("B", tp=1, predicted=1, gold=3)
    counts.add_sets([("A", 1), ("A", 2), ("A", 2), ("B", 5)], [("A", 1), ("A", 3), ("B", 9)])
    assert counts.scores() == {
        "overall": {"p": 50.0, "r": 33.33, "f": 40.0, "tp": 2, "predicted": 4, "gold": 6},
        "per_label": {
            "A": {"p": 50.0, "r": 50.0, "f": 50.0, "tp": 1, "predicted": 2, "gold": 2},
            "B": {"p": 50.0, "r": 25.0, "f": 33.33, "tp": 1, "predicted": 2, "gold": 4},
        },
    }
    assert PRFCounts().scores() == {"overall": {"p": 0.0, "r": 0.0, "f": 0.0, "tp": 0, "predicted": 0, "gold": 0}, "per_label": {}}


def test_recall_at_k_and_hit_counts_exact():
    ranked = ["X", "Y", "D2", "Z"]
    assert first_hit(ranked, {"D1", "D2"}) == 2
    assert first_hit(ranked, {"D9"}) is None
    assert recall_at_k(ranked, {"D1", "D2"}, ks=(1, 2, 3, 30)) == {"recall@1": False, "recall@2": False, "recall@3": True, "recall@30": True}
    # with a match rule, another id of the gold concept counts
    kb = KnowledgeBase(ALT_CONCEPTS)
    assert recall_at_k(["D003000", "D007022"], {ALT}, ks=(1, 2)) == {"recall@1": False, "recall@2": False}
    assert recall_at_k(["D003000", "D007022"], {ALT}, ks=(1, 2), match=lambda c, g: ids_match(kb, c, g)) == {"recall@1": False, "recall@2": True}
    hits = HitCounts(measures=["acc@1"])
    hits.add("Disease", {"acc@1": True, "recall@5": True})
    hits.add("Disease", {"acc@1": False, "recall@5": True})
    hits.add("Chemical", {"acc@1": True, "recall@5": True})
    hits.add("Chemical", {})  # a mention that could not be linked at all: a miss for every measure
    assert hits.scores() == {
        "Chemical": {"mentions": 2, "acc@1": 50.0, "recall@5": 50.0},
        "Disease": {"mentions": 2, "acc@1": 50.0, "recall@5": 100.0},
        "overall": {"mentions": 4, "acc@1": 50.0, "recall@5": 75.0},
    }
    assert HitCounts(measures=["acc@1"]).scores() == {}


def test_component_times_shares():
    times = ComponentTimes(seconds={"transformer": 3.0, "ner": 1.0, "medllm_linker": 1.0}, tokenizer_s=1.0, docs=2, words=600)
    assert times.pipes_s == 5.0 and times.total_s == 6.0
    assert times.words_per_second == 100
    assert times.share("medllm_linker") == 0.2
    assert times.adds_to_rest("medllm_linker") == 0.25
    assert ComponentTimes(seconds={"ner": 0.0}).words_per_second is None
    assert ComponentTimes(seconds={"ner": 1.0}).adds_to_rest("ner") is None


def test_peak_memory_without_resource(monkeypatch):
    """`resource` is Unix-only: without it the peak comes from psutil's peak working set
    (Windows), else it is reported as None; the table then shows n/a."""
    from spacy_medllm import evaluate
    from spacy_medllm.evaluation.ner import markdown_table

    assert evaluate.peak_rss_mb is metrics.peak_rss_mb and evaluate.markdown_table is markdown_table
    assert isinstance(metrics.peak_rss_mb(), float)
    monkeypatch.setattr(metrics, "PROC_STATUS", "/nonexistent/status")  # not Linux
    monkeypatch.setattr(metrics, "resource", None)
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed
    assert metrics.peak_rss_mb() is None
    fake = types.SimpleNamespace(Process=lambda: types.SimpleNamespace(memory_info=lambda: types.SimpleNamespace(peak_wset=300 * 1024 * 1024)))
    monkeypatch.setitem(sys.modules, "psutil", fake)
    assert metrics.peak_rss_mb() == 300.0
    fake_linux = types.SimpleNamespace(Process=lambda: types.SimpleNamespace(memory_info=lambda: types.SimpleNamespace(rss=1)))
    monkeypatch.setitem(sys.modules, "psutil", fake_linux)
    assert metrics.peak_rss_mb() is None  # no peak to report
    result = {"tiny": {"peak_rss_mb": None, "datasets": {"gold": {"words_per_second": 10, "overall": {"p": 1.0, "r": 1.0, "f": 1.0}, "per_type": {}}}}}
    assert markdown_table(result).splitlines()[-1] == "| tiny | gold | overall | 1.00 | 1.00 | 1.00 | 10 | n/a |"


def test_peak_memory_reads_vmhwm_on_linux(monkeypatch, tmp_path):
    """Linux: VmHWM of /proc/self/status (ru_maxrss survives exec: a spawned child would
    report its parent's size)."""
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 9999999 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1000 kB\n", encoding="ascii")
    monkeypatch.setattr(metrics, "PROC_STATUS", str(status))
    assert metrics.peak_rss_mb() == 512.0


# ---- NER ------------------------------------------------------------------------------------------
NER_GOLD = [
    ("Naloxone reversed the hypotension .", [(0, 8, "Chemical"), (22, 33, "Disease")]),
    ("Cisplatin caused renal failure .", [(0, 9, "Chemical"), (17, 30, "Disease")]),
    ("Lithium was given .", [(0, 7, "Chemical")]),
]
# right: Naloxone, hypotension, Cisplatin; wrong boundary: failure; wrong: given; missed: renal failure, Lithium
NER_PATTERNS = [
    {"label": "Chemical", "pattern": "Naloxone"}, {"label": "Disease", "pattern": "hypotension"},
    {"label": "Chemical", "pattern": "Cisplatin"}, {"label": "Disease", "pattern": "failure"}, {"label": "Disease", "pattern": "given"},
]


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ner")
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(NER_PATTERNS)
    nlp.to_disk(tmp / "model")
    docs = []
    for text, ents in NER_GOLD:
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=l) for s, e, l in ents]
        docs.append(doc)
    return tmp / "model", write_docbin(tmp / "gold.spacy", docs)


def test_evaluate_ner_exact(ner_files):
    from spacy_medllm.evaluation.ner import evaluate_ner

    model, gold = ner_files
    res = evaluate_ner(str(model), [("gold", str(gold)), ("chem", str(gold))], labels={"chem": ["Chemical"]}, warmup_docs=2)
    assert res["pipeline"] == ["entity_ruler"]
    d = res["datasets"]["gold"]
    assert (d["docs"], d["words"]) == (3, 14)
    assert list(d["seconds_per_component"]) == ["entity_ruler"]
    assert d["overall"] == {"p": 60.0, "r": 60.0, "f": 60.0}
    assert d["per_type"] == {"Chemical": {"p": 100.0, "r": 66.67, "f": 80.0}, "Disease": {"p": 33.33, "r": 50.0, "f": 40.0}}
    assert res["datasets"]["chem"]["overall"] == {"p": 100.0, "r": 66.67, "f": 80.0}
    assert list(res["datasets"]["chem"]["per_type"]) == ["Chemical"]


def test_evaluate_command(ner_files, tmp_path):
    """`medllm evaluate` (one process per pipeline) on the same tiny pipeline."""
    model, gold = ner_files
    result = runner.invoke(app, ["evaluate", "--model", f"ruler={model}", "--data", f"gold={gold}", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert srsly.read_json(tmp_path / "ruler.json")["datasets"]["gold"]["overall"] == {"p": 60.0, "r": 60.0, "f": 60.0}
    assert (tmp_path / "ner.md").read_text().splitlines()[3] == "| ruler | gold | Chemical | 100.00 | 66.67 | 80.00 |  |  |"


# ---- candidates -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("kb")
    kb = KnowledgeBase(ALT_CONCEPTS)
    kb.to_disk(path)
    CandidateGenerator(kb).to_disk(path / "index")
    return path


def candidate_gold(path: Path) -> Path:
    nlp = spacy.blank("en")
    docs = [
        gold_doc(nlp, "Naloxone worsened the hypotensive state after clonidine .", [(0, 8, "Chemical", "D009270"), (22, 33, "Disease", ALT), (46, 55, "Chemical", "D003000")]),
        # NIL and unlinked mentions are left out; an id no concept has is never found
        gold_doc(nlp, "Nalozone and xyzzy and cold .", [(0, 8, "Chemical", NIL), (13, 18, "Chemical", "D999999"), (23, 27, "SpecificDisease", "D003139|D000002")]),
    ]
    return write_docbin(path, docs)


def test_candidates_alternative_id_counts(kb_dir, tmp_path):
    from spacy_medllm.evaluation.candidates import evaluate_candidates, gold_mentions, markdown

    gold = candidate_gold(tmp_path / "gold.spacy")
    assert [(m.text, m.label, sorted(m.ids)) for m in gold_mentions(gold)] == [
        ("Naloxone", "Chemical", ["D009270"]), ("hypotensive", "Disease", [ALT]), ("clonidine", "Chemical", ["D003000"]),
        ("xyzzy", "Chemical", ["D999999"]), ("cold", "Disease", ["D000002", "D003139"]),
    ]
    res = evaluate_candidates(kb_dir, [("gold", gold)], ks=(1, 2))
    assert res["concepts"] == 6
    assert res["datasets"]["gold"]["per_label"] == {
        "Chemical": {"mentions": 3, "id_in_kb": 66.67, "recall@1": 66.67, "recall@2": 66.67},
        # the gold id of "hypotensive" is Hypotension's alternative id; "cold": one of two concepts named so
        "Disease": {"mentions": 2, "id_in_kb": 100.0, "recall@1": 50.0, "recall@2": 100.0},
        "overall": {"mentions": 5, "id_in_kb": 80.0, "recall@1": 60.0, "recall@2": 80.0},
    }
    assert markdown(res).splitlines()[3] == "| gold | Disease | 2 | 100.0 | 50.0 | 100.0 |  |"


def test_evaluate_candidates_command_and_script(kb_dir, tmp_path):
    gold = candidate_gold(tmp_path / "gold.spacy")
    result = runner.invoke(app, ["evaluate-candidates", str(kb_dir), "--data", f"gold={gold}", "--output", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    overall = srsly.read_json(tmp_path / "cli" / "candidates.json")["datasets"]["gold"]["per_label"]["overall"]
    assert overall == {"mentions": 5, "id_in_kb": 80.0, "recall@1": 60.0, "recall@5": 80.0, "recall@10": 80.0, "recall@30": 80.0}
    spec = importlib.util.spec_from_file_location("benchmark_candidates", ROOT / "scripts" / "benchmark_candidates.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(str(kb_dir), str(tmp_path / "script"), f"gold={gold}")
    scripted = srsly.read_json(tmp_path / "script" / "candidates.json")["datasets"]["gold"]["per_label"]
    assert scripted == srsly.read_json(tmp_path / "cli" / "candidates.json")["datasets"]["gold"]["per_label"]
    missing = runner.invoke(app, ["evaluate-candidates", str(kb_dir), "--data", f"gold={tmp_path / 'nope.spacy'}", "--output", str(tmp_path / "x")])
    assert missing.exit_code == 1 and f"[E128] data set gold: {tmp_path / 'nope.spacy'} not found" in missing.output


# ---- linker ---------------------------------------------------------------------------------------
LINKER_PATTERNS = [
    {"label": "Chemical", "pattern": "Naloxone"}, {"label": "Disease", "pattern": "hypotensive"},
    {"label": "Chemical", "pattern": "clonidine"}, {"label": "Disease", "pattern": "Low blood pressure"},
]


@pytest.fixture(scope="module")
def linker_model(tmp_path_factory):
    """An entity ruler (the NER) and a medllm_linker overfit on test_linker's examples, over a
    KB in which Hypotension has an alternative id."""
    from spacy.training import Example

    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker")
    linker.set_kb(KnowledgeBase(ALT_CONCEPTS))
    examples = [Example(nlp.make_doc(t), gold_doc(nlp, t, e)) for t, e in LINKER_TRAIN]
    nlp.initialize(lambda: examples)
    optimizer = Adam(0.01)
    for _ in range(100):
        nlp.update(examples, sgd=optimizer, losses={})
    # added after training: initializing an entity ruler clears its patterns
    nlp.add_pipe("entity_ruler", before="medllm_linker").add_patterns(LINKER_PATTERNS)
    path = tmp_path_factory.mktemp("linker") / "model"
    nlp.to_disk(path)
    return path


def linker_gold(path: Path) -> Path:
    nlp = spacy.blank("en")
    docs = [
        # the gold id of "hypotensive" is Hypotension's alternative id
        gold_doc(nlp, LINKER_TRAIN[0][0], [(0, 8, "Chemical", "D009270"), (22, 33, "Disease", ALT), (46, 55, "Chemical", "D003000")]),
        gold_doc(nlp, LINKER_TRAIN[4][0], [(0, 18, "Disease", "D007022"), (28, 37, "Chemical", "D003000")]),
        # no pattern finds "cold": linked among the gold mentions, missed end to end; NIL left out
        gold_doc(nlp, "The patient caught a cold after the rain .", [(21, 25, "SpecificDisease", "D003139")]),
        gold_doc(nlp, "Nalozone was given .", [(0, 8, "Chemical", NIL)]),
    ]
    return write_docbin(path, docs)


def test_linker_evaluation_alternative_id_counts(linker_model, tmp_path):
    from spacy_medllm.evaluation.linker import evaluate_linker, markdown

    gold = linker_gold(tmp_path / "gold.spacy")
    res = evaluate_linker(linker_model, [("gold", gold)], ks=(1, 30))
    d = res["datasets"]["gold"]
    assert d["gold_mentions"] == {
        "Chemical": {"mentions": 3, "acc@1": 100.0, "recall@1": 100.0, "recall@30": 100.0},
        "Disease": {"mentions": 3, "acc@1": 100.0, "recall@1": 100.0, "recall@30": 100.0},
        "overall": {"mentions": 6, "acc@1": 100.0, "recall@1": 100.0, "recall@30": 100.0},
    }
    assert d["end_to_end"] == {
        "p": 100.0, "r": 83.33, "f": 90.91, "tp": 5, "predicted": 5, "gold": 6,
        "per_label": {
            "Chemical": {"p": 100.0, "r": 100.0, "f": 100.0, "tp": 3, "predicted": 3, "gold": 3},
            "Disease": {"p": 100.0, "r": 66.67, "f": 80.0, "tp": 2, "predicted": 2, "gold": 3},
        },
    }
    assert list(d["seconds"]) == ["entity_ruler", "medllm_linker"]
    assert markdown(res).splitlines()[2] == "| gold | Chemical | 3 | 100.0 | 100.0 | 100.0 |"
    # the same gold with the primary id everywhere scores the same; exact ids alone would not
    linked = spacy.load(linker_model)(LINKER_TRAIN[0][0])
    assert [e.kb_id_ for e in linked.ents] == ["D009270", "D007022", "D003000"]
    assert not ids_match(None, "D007022", ALT)


def test_evaluate_linker_command(linker_model, tmp_path):
    gold = linker_gold(tmp_path / "gold.spacy")
    result = runner.invoke(app, ["evaluate-linker", str(linker_model), "--data", f"gold={gold}", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert srsly.read_json(tmp_path / "linker.json")["datasets"]["gold"]["end_to_end"]["f"] == 90.91
    assert "gold end to end (span, label, id): P 100.0 R 83.3 F 90.9" in (tmp_path / "linker.md").read_text()
    ruler = spacy.blank("en")
    ruler.add_pipe("entity_ruler")
    ruler.to_disk(tmp_path / "ruler")
    no_linker = runner.invoke(app, ["evaluate-linker", str(tmp_path / "ruler"), "--data", f"gold={gold}", "--output", str(tmp_path / "x")])
    assert no_linker.exit_code == 1
    assert f"[E125] {tmp_path / 'ruler'}: no medllm_linker component (pipeline: entity_ruler)" in no_linker.output


def test_time_components_one_entry_per_pipe(linker_model):
    nlp = spacy.load(linker_model)
    texts = [t for t, _ in LINKER_TRAIN] + [""]
    docs, times = time_components(nlp, texts, batch_size=2, warmup=2)
    assert list(times.seconds) == nlp.pipe_names == ["entity_ruler", "medllm_linker"]
    assert all(s >= 0.0 for s in times.seconds.values()) and times.tokenizer_s >= 0.0
    assert (times.docs, times.words) == (6, sum(len(nlp.make_doc(t)) for t in texts))
    expected = list(nlp.pipe(texts, batch_size=2))
    assert [[(e.text, e.label_, e.kb_id_) for e in d.ents] for d in docs] == [[(e.text, e.label_, e.kb_id_) for e in d.ents] for d in expected]
    # Docs given as they are, a subset of the pipes
    given = [gold_doc(nlp, t, e) for t, e in LINKER_TRAIN[:2]]
    linked, times = time_components(nlp, given, pipes=["medllm_linker"])
    assert list(times.seconds) == ["medllm_linker"] and times.tokenizer_s == 0.0
    assert [e.kb_id_ for e in linked[0].ents] == [k for *_, k in LINKER_TRAIN[0][1]]


# ---- relations --------------------------------------------------------------------------------------
def test_concept_pairs_compared_by_primary_id():
    from spacy_medllm.evaluation.relations import concept_pair_counts

    install_extensions()
    nlp = spacy.blank("en")
    pred = nlp.make_doc("x")
    pred._.medllm_rels = [relation("CID", head_id="D003000", tail_id="D007022"), relation("CID", head_id="D003000", tail_id="D006973")]
    gold = nlp.make_doc("x")
    gold._.medllm_rels = [relation("CID", head_id="D003000", tail_id=f"{ALT}|D000002")]
    kb = KnowledgeBase(ALT_CONCEPTS)
    assert concept_pair_counts([pred], [gold], "CID", kb) == {"p": 50.0, "r": 50.0, "f": 50.0, "predicted": 2, "gold": 2}
    assert concept_pair_counts([pred], [gold], "CID") == {"p": 0.0, "r": 0.0, "f": 0.0, "predicted": 2, "gold": 2}


# ---- threshold tuning ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rel_files(tmp_path_factory):
    """A medllm_rel pipeline overfit on test_relations' CID examples, saved untuned, and the
    same examples as a gold .spacy file."""
    from spacy.training import Example

    install_extensions()
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_rel", config={"model": SMALL_MODEL})
    examples = [Example(nlp.make_doc(t), cid_doc(nlp, t, e, p)) for t, e, p in CID_TRAIN]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(60):
        nlp.update(examples, sgd=optimizer, losses={})
    tmp = tmp_path_factory.mktemp("rel")
    nlp.to_disk(tmp / "model-best")
    dev = write_docbin(tmp / "dev.spacy", [cid_doc(nlp, t, e, p) for t, e, p in CID_TRAIN])
    return tmp / "model-best", dev


def expected_threshold(model: Path):
    """Halfway between the lowest gold pair and the highest other (as in test_relations);
    approx to 1e-12: srsly's JSON reader parses the saved "0.4941" as 0.49410000000000004."""
    from spacy_medllm.relations import gold_entity_docs

    nlp = spacy.load(model)
    gold = [cid_doc(nlp, t, e, p) for t, e, p in CID_TRAIN]
    low, high = separation(nlp.get_pipe("medllm_rel"), list(gold_entity_docs(nlp, gold, upto="medllm_rel")))
    assert low > high
    return pytest.approx(round((low + high) / 2, 4), abs=1e-12)


def test_tuning_writes_a_new_pipeline(rel_files, tmp_path):
    from spacy_medllm.evaluation.tuning import tune_relation_thresholds

    model, dev = rel_files
    before = tree_bytes(model)
    assert srsly.read_json(model / "medllm_rel" / "cfg")["thresholds"] == {}
    out = tmp_path / "model-tuned"
    result = tune_relation_thresholds(model, dev, out, report_path=tmp_path / "report.json")
    threshold = expected_threshold(model)
    assert result["thresholds"] == {"medllm_rel": {"CID": {"threshold": threshold, "relative_threshold": None, "f": 1.0, "gold": 4}}}
    assert result["chosen"] == str(model) and result["dev_f"] == {str(model): 1.0}
    assert srsly.read_json(tmp_path / "report.json") == srsly.json_loads(srsly.json_dumps(result))
    assert spacy.load(out).get_pipe("medllm_rel").cfg["thresholds"] == {"CID": threshold}
    assert tree_bytes(model) == before  # the input is read, never written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-tuned", "report.json"]  # no temporary folder left
    # an existing output needs --force; the input (or a folder inside or around it) never
    with pytest.raises(FileExistsError, match=r"\[E120\]"):
        tune_relation_thresholds(model, dev, out)
    tune_relation_thresholds(model, dev, out, force=True, relative=True)
    assert spacy.load(out).get_pipe("medllm_rel").cfg["relative_thresholds"] == {"CID": 0.0}
    for target in (model, model / "medllm_rel", model.parent):
        with pytest.raises(ValueError, match=r"\[E121\]"):
            tune_relation_thresholds(model, dev, target, force=True)
    assert tree_bytes(model) == before


def test_tuning_with_a_second_model(rel_files, tmp_path):
    """--or: both are tuned; on a tie the first is written."""
    from spacy_medllm.evaluation.tuning import tune_relation_thresholds

    model, dev = rel_files
    result = tune_relation_thresholds(model, dev, tmp_path / "tuned", other=model)
    assert result["chosen"] == str(model) and result["other"] == str(model)
    with pytest.raises(ValueError, match=r"\[E121\]"):
        tune_relation_thresholds(model, dev, tmp_path / "tuned" / "x", other=tmp_path / "tuned")


def test_thresholds_copied_from_a_tuned_model(rel_files, tmp_path):
    """A model trained on train + dev takes the dev-tuned thresholds of the train-only run,
    read with spacy.load; the copy is a new folder and the final model stays as it was."""
    from spacy_medllm.evaluation.tuning import copy_relation_thresholds, tune_relation_thresholds

    model, dev = rel_files
    tuned = tmp_path / "tuned"
    tune_relation_thresholds(model, dev, tuned, relative=True)
    final = model  # stands in for a model trained on train + dev: untuned
    before = tree_bytes(final)
    result = copy_relation_thresholds(final, tuned, tmp_path / "final-tuned")
    threshold = expected_threshold(model)
    assert result["thresholds"] == {"medllm_rel": {"thresholds": {"CID": threshold}, "relative_thresholds": {"CID": 0.0}}}
    rel = spacy.load(tmp_path / "final-tuned").get_pipe("medllm_rel")
    assert (rel.cfg["thresholds"], rel.cfg["relative_thresholds"]) == ({"CID": threshold}, {"CID": 0.0})
    assert tree_bytes(final) == before
    # a source that was never tuned is refused, naming it, and nothing is written
    with pytest.raises(ValueError, match=r"\[E124\]") as err:
        copy_relation_thresholds(final, model, tmp_path / "from-untuned")
    assert str(model) in str(err.value) and not (tmp_path / "from-untuned").exists()
    # a source without a relation component of that name
    other = spacy.blank("en")
    other.add_pipe("medllm_rel", name="rel_other", config={"model": SMALL_MODEL})
    other.to_disk(tmp_path / "other")
    with pytest.raises(ValueError, match=r"\[E123\] .*'medllm_rel'.*rel_other"):
        copy_relation_thresholds(final, tmp_path / "other", tmp_path / "from-other")


def test_tune_thresholds_command(rel_files, tmp_path):
    model, dev = rel_files
    before = tree_bytes(model)
    out = tmp_path / "model-tuned"
    result = runner.invoke(app, ["tune-thresholds", str(model), str(out), "--dev", str(dev), "--report", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    threshold = expected_threshold(model)
    assert f"{model} medllm_rel CID: threshold {threshold.expected} (dev F1 100.00, 4 gold)" in result.output
    assert spacy.load(out).get_pipe("medllm_rel").cfg["thresholds"] == {"CID": threshold}
    again = runner.invoke(app, ["tune-thresholds", str(model), str(out), "--dev", str(dev)])
    assert again.exit_code == 1 and f"[E120] {out}: the output exists; pass --force to replace it" in again.output
    into_input = runner.invoke(app, ["tune-thresholds", str(model), str(model), "--dev", str(dev), "--force"])
    assert into_input.exit_code == 1 and "[E121]" in into_input.output
    copied = runner.invoke(app, ["tune-thresholds", str(model), str(tmp_path / "copy"), "--from", str(out)])
    assert copied.exit_code == 0, copied.output
    assert spacy.load(tmp_path / "copy").get_pipe("medllm_rel").cfg["thresholds"] == {"CID": threshold}
    for args in ([], ["--dev", str(dev), "--from", str(out)], ["--from", str(out), "--relative"]):
        bad = runner.invoke(app, ["tune-thresholds", str(model), str(tmp_path / "bad")] + args)
        assert bad.exit_code == 1 and "[E126]" in bad.output and not (tmp_path / "bad").exists()
    no_rel = spacy.blank("en")
    no_rel.to_disk(tmp_path / "blank")
    bad = runner.invoke(app, ["tune-thresholds", str(tmp_path / "blank"), str(tmp_path / "bad"), "--dev", str(dev)])
    assert bad.exit_code == 1 and f"[E122] {tmp_path / 'blank'}: no medllm_rel component (pipeline: none)" in bad.output
    assert tree_bytes(model) == before


# ---- relation evaluation ------------------------------------------------------------------------------
def test_evaluate_relations_command(rel_files, tmp_path):
    """`medllm evaluate-relations` on a tuned relation-only pipeline: with gold entities every
    CID pair is found; end to end there is no NER, so nothing; a missing model is noted."""
    from spacy_medllm.evaluation.tuning import tune_relation_thresholds

    model, dev = rel_files
    tuned = tmp_path / "model-tuned"
    tune_relation_thresholds(model, dev, tuned)
    result = runner.invoke(app, [
        "evaluate-relations", "--output", str(tmp_path / "metrics"), "--cid", str(tuned), "--cid-data", str(dev),
        "--chia", str(tmp_path / "missing"),
    ])
    assert result.exit_code == 0, result.output
    res = srsly.read_json(tmp_path / "metrics" / "relations.json")
    cid = res["cid"]
    assert cid["gold_entities"] == {"p": 100.0, "r": 100.0, "f": 100.0, "predicted": 4, "gold": 4, "gold_pairs_with_both_concepts_among_entities": 4}
    assert cid["end_to_end"] == {"p": 0.0, "r": 0.0, "f": 0.0, "predicted": 0, "gold": 4}
    assert cid["baseline_same_sentence_gold_entities"]["gold"] == 4
    assert list(cid["seconds"]) == ["medllm_rel"] and cid["documents"] == 3
    assert res["notes"] == [f"chia: {tmp_path / 'missing'} not found, skipped"]
    table = (tmp_path / "metrics" / "relations.md").read_text().splitlines()
    assert table[2] == "| gold entities | 100.00 | 100.00 | 100.00 | 4 | 4 |"
    assert f"- chia: {tmp_path / 'missing'} not found, skipped" in table
