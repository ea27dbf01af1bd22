"""`medllm visualize`: a self-contained HTML page of annotated documents (entities coloured by
label with their concept on hover, ConText flags, relation arcs), drawn from annotation
records, gold .spacy files or a pipeline's output, and checked in a real headless browser."""
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.tokens import install_extensions
from spacy_medllm.visualize import COLORS, check_view, doc_view, render, render_records

from test_annotate import model  # noqa: F401  (the tiny NER pipeline, saved)
from test_ner_trf import trained  # noqa: F401
from test_relations import CID_TRAIN, cid_doc

TEXT = "Naloxone reverses the hypotension of clonidine. No <b>seizures</b> & no rash."
VIEW = {
    "id": "note <1>",
    "text": TEXT,
    "entities": [
        {"text": "Naloxone", "label": "Chemical", "start": 0, "end": 8, "kb_id": "D009270", "kb_name": "Naloxone",
         "candidates": [["D009270", 0.97], ["D009271", 0.02]]},
        {"text": "hypotension", "label": "Disease", "start": 22, "end": 33, "kb_id": "D007022", "kb_name": "Hypotension"},
        {"text": "clonidine", "label": "Chemical", "start": 37, "end": 46, "kb_id": "D003000", "kb_name": "Clonidine"},
        {"text": "<b>seizures</b>", "label": "Disease", "start": 51, "end": 66, "kb_id": "D012640", "kb_name": "Seizures", "is_negated": True},
        {"text": "rash", "label": "Sign", "start": 72, "end": 76, "kb_id": "NIL", "is_negated": True, "is_uncertain": True},
    ],
    "relations": [
        {"label": "CID", "score": 0.91, "head": 2, "tail": 1, "head_id": "D003000", "tail_id": "D007022"},
        {"label": "CID", "score": 0.42, "head": None, "tail": None, "head_id": "D009270", "tail_id": "D012640"},
    ],
    "categories": {"ADE": 0.83},
}


class Page(HTMLParser):
    """The marks, arcs, scripts and external references of a page."""

    def __init__(self):
        super().__init__()
        self.marks, self.arcs, self.refs, self.tags = [], [], [], set()
        self._mark = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        for key in ("src", "href", "xlink:href"):
            if attrs.get(key):
                self.refs.append(attrs[key])
        if tag == "mark" and "medllm-ent" in attrs.get("class", ""):
            self._mark = {**attrs, "text": ""}
            self.marks.append(self._mark)
        if tag == "g" and attrs.get("class") == "medllm-arc":
            self.arcs.append(attrs)

    def handle_data(self, data):
        if self._mark is not None and not self._mark.get("done"):
            self._mark["text"] += data
            self._mark["done"] = True  # the first text node: the mention itself

    def handle_endtag(self, tag):
        if tag == "mark":
            self._mark = None


def parse(html_text):
    page = Page()
    page.feed(html_text)
    return page


def check_page(html_text, view=VIEW):
    page = parse(html_text)
    assert "script" not in page.tags and "img" not in page.tags and "link" not in page.tags
    assert not page.refs and not re.search(r"https?://|www\.", html_text) and "url(" not in html_text.replace("url(#medllm-arrow-", "")
    assert [m["text"] for m in page.marks] == [view["text"][e["start"]:e["end"]] for e in view["entities"]]
    assert [m["data-label"] for m in page.marks] == [e["label"] for e in view["entities"]]
    assert [m["data-kb-name"] for m in page.marks] == [e.get("kb_name", "") for e in view["entities"]]
    return page


def test_page_marks_entities_concepts_flags_and_arcs():
    out = render_records([VIEW], title="t")
    page = check_page(out)
    # concept id and name on hover (title and tooltip); the NIL entity says so
    naloxone = page.marks[0]
    assert naloxone["title"] == "Chemical | D009270 Naloxone" and naloxone["data-kb-id"] == "D009270"
    assert "D009271 0.02" in out
    assert page.marks[4]["title"] == "Sign | negated | uncertain" and "not linked (NIL)" in out
    # negated entities are marked; the markup of the text is escaped, never interpreted
    assert [("medllm-negated" in m["class"]) for m in page.marks] == [False, False, False, True, True]
    assert "&lt;b&gt;seizures&lt;/b&gt;" in out and "<b>seizures" not in out
    # one arc per relation; the one without entity indexes is drawn between the first
    # mentions of its concepts
    assert [(a["data-head"], a["data-tail"], a["data-label"]) for a in page.arcs] == [("2", "1", "CID"), ("0", "3", "CID")]
    assert "CID 0.91" in out and "ADE 0.83" in out
    # a label without a default colour gets one of its own, the same across the page
    colors = re.findall(r'data-label="Sign"[^>]*style="background: (#[0-9a-f]{6})', out)
    assert colors and colors[0] not in COLORS.values()


def test_bad_records_name_the_problem():
    with pytest.raises(ValueError, match="x.jsonl, line 3: no 'text'"):
        check_view({"id": "a"}, "x.jsonl, line 3")
    with pytest.raises(ValueError, match="entity 0 offsets 5:99 are outside the text"):
        check_view({"text": "short", "entities": [{"start": 5, "end": 99, "label": "X"}]}, "doc")
    for bad, message in (({"relations": ["x"]}, "relation 0 must be an object"), ({"categories": {"A": None}}, "category 'A'"),
                         ({"entities": [{"start": 0, "end": 1, "label": ["a"]}]}, "string 'label'"), ({"relations": {}}, "'relations' must be")):
        with pytest.raises(ValueError, match=message):
            check_view({"text": "short", **bad}, "doc")


def test_visualize_command(model, tmp_path):  # noqa: F811
    srsly.write_jsonl(tmp_path / "views.jsonl", [VIEW, {**VIEW, "id": "second"}])
    run = lambda *a: CliRunner().invoke(app, ["visualize", *map(str, a)])  # noqa: E731
    result = run(tmp_path / "views.jsonl", tmp_path / "page.html")
    assert result.exit_code == 0, result.output
    page = parse((tmp_path / "page.html").read_text(encoding="utf8"))
    assert len(page.marks) == 10 and len(page.arcs) == 4
    # never over an existing page without --force; never over the input
    assert run(tmp_path / "views.jsonl", tmp_path / "page.html").exit_code == 1
    assert run(tmp_path / "views.jsonl", tmp_path / "page.html", "--force", "--limit", "1").exit_code == 0
    assert len(parse((tmp_path / "page.html").read_text(encoding="utf8")).marks) == 5
    assert run(tmp_path / "views.jsonl", tmp_path / "views.jsonl", "--force").exit_code == 1
    # annotations without their text need the pipeline; a bad line is named
    srsly.write_jsonl(tmp_path / "bare.jsonl", [{"id": "a", "entities": []}])
    result = run(tmp_path / "bare.jsonl", tmp_path / "x.html")
    assert result.exit_code == 1 and "--model" in result.output
    (tmp_path / "broken.jsonl").write_text(srsly.json_dumps(VIEW) + "\n{oops\n", encoding="utf8")
    result = run(tmp_path / "broken.jsonl", tmp_path / "x.html")
    assert result.exit_code == 1 and "broken.jsonl, line 2: not JSON" in result.output
    assert not (tmp_path / "x.html").exists()
    # an annotation run that wrote nothing: an empty page; pages are readable by others, as files are
    (tmp_path / "empty.jsonl").write_text("", encoding="utf8")
    assert run(tmp_path / "empty.jsonl", tmp_path / "empty.html").exit_code == 0
    assert "0 documents" in (tmp_path / "empty.html").read_text(encoding="utf8")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "empty.html").stat().st_mode & 0o777 == 0o666 & ~umask
    # gold documents of a .spacy file, drawn as stored (relations between concepts)
    install_extensions()
    DocBin(store_user_data=True, docs=[cid_doc(spacy.blank("en"), t, e, p) for t, e, p in CID_TRAIN]).to_disk(tmp_path / "gold.spacy")
    assert run(tmp_path / "gold.spacy", tmp_path / "gold.html", "--limit", "2").exit_code == 0
    gold = (tmp_path / "gold.html").read_text(encoding="utf8")
    assert gold.count('class="medllm-arc"') == 4 and "nephrotoxicity" in gold and "breast cancer" in gold
    # a pipeline's output, straight or through `medllm annotate --with-text`: the same page
    (tmp_path / "notes.txt").write_text("Cisplatin induced acute renal failure in rats.\nLithium toxicity caused seizures.\n", encoding="utf8")
    assert run(tmp_path / "notes.txt", tmp_path / "direct.html", "--model", model).exit_code == 0
    result = CliRunner().invoke(app, ["annotate", str(model), str(tmp_path / "notes.txt"), str(tmp_path / "ann.jsonl"), "--with-text"])
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in srsly.read_jsonl(tmp_path / "ann.jsonl")][0].startswith("Cisplatin")
    assert run(tmp_path / "ann.jsonl", tmp_path / "from_records.html").exit_code == 0
    direct = (tmp_path / "direct.html").read_text(encoding="utf8")
    assert direct.split("<h2>", 1)[1] == (tmp_path / "from_records.html").read_text(encoding="utf8").split("<h2>", 1)[1]


def test_render_docs_matches_records(trained):  # noqa: F811
    """A Doc draws as its annotation record does after a JSON round trip."""
    doc = trained("Cisplatin induced acute renal failure in rats.")
    assert render(doc) == render_records([srsly.json_loads(srsly.json_dumps(doc_view(doc)))], page=False)
    assert render(doc, page=True).startswith("<!DOCTYPE html>")


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("no headless browser (apt-get install chromium)")
    return path


def browser(*args, timeout=90):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
             "--user-data-dir=" + str(Path(args[-1]).parent / "chromium-profile")]
    proc = subprocess.run([chromium(), *flags, *args[:-1], Path(args[-1]).resolve().as_uri()],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_page_in_a_headless_browser(tmp_path):
    """Chromium loads the page (no network: the page's own policy forbids every fetch),
    builds the same entities, concept names and arcs from it, and paints them: the
    screenshot has the entity colours."""
    import matplotlib.image
    import numpy

    path = tmp_path / "page.html"
    path.write_text(render_records([VIEW], title="visualize"), encoding="utf8")
    dom = browser("--dump-dom", str(path))
    page = check_page(dom)  # the DOM the browser built
    assert [(a["data-head"], a["data-tail"]) for a in page.arcs] == [("2", "1"), ("0", "3")]
    assert "medllm-arc-diagram" in dom and dom.count("<path") >= 3  # two arcs and the arrowhead
    browser("--window-size=1000,700", f"--screenshot={tmp_path / 'shot.png'}", str(path))
    pixels = (matplotlib.image.imread(tmp_path / "shot.png")[..., :3] * 255).round().astype(int)
    for label in ("Chemical", "Disease"):
        rgb = numpy.array([int(COLORS[label][i:i + 2], 16) for i in (1, 3, 5)])
        assert (numpy.abs(pixels - rgb).sum(axis=-1) <= 6).sum() > 500, label  # filled entity boxes and arc nodes
