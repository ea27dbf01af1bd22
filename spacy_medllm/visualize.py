"""Self-contained HTML pages of annotated documents (`medllm visualize`).

A page holds, per document: the text with its entities marked and coloured by label (the
linked concept's id and name, the best candidates and the ConText flags on hover), the
negated, uncertain, historical, hypothetical and family entities marked, the document's
categories, and an SVG diagram of its relations: one arc per relation, from the head
entity to the tail entity, labelled with the relation and its score. Nothing is fetched:
no scripts, no fonts, no images, no links outside the page; the CSS is inline.

It draws *view records*: `engines.records.doc_record` objects (the JSONL that `medllm
annotate` writes) that also carry the document's `text` (`medllm annotate --with-text`), so
a page can be drawn from an annotation run without the pipeline. `render(docs)` draws Docs
(a pipeline's output, or gold Docs read from a `.spacy` file) the same way.

Markup, for tools that read the page: an entity is `mark.medllm-ent` with `data-label`,
`data-kb-id`, `data-kb-name` and `data-ent` (its index in the document); a relation arc is
`g.medllm-arc` with `data-label`, `data-head` and `data-tail` (entity indexes).
"""
import html
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from spacy.tokens import Doc

from .tokens import NIL, install_extensions, split_kb_id

COLORS = {"Chemical": "#9fd5ff", "Disease": "#ffb3b3", "Drug": "#9fd5ff", "Effect": "#ffb3b3", "Dose": "#ffe28a"}
# further labels (Chia has 15) take these in the sorted order of the labels on the page
PALETTE = ("#c5e1a5", "#ffd59e", "#d1c4e9", "#b2ebf2", "#f8bbd0", "#fff59d", "#d7ccc8", "#cfd8dc",
           "#a5d6a7", "#ffcc80", "#b39ddb", "#80deea", "#f48fb1", "#e6ee9c", "#bcaaa4", "#b0bec5")
# ConText attribute -> (badge, CSS class)
FLAGS = {"is_negated": ("NEG", "medllm-negated"), "is_uncertain": ("?", "medllm-uncertain"),
         "is_historical": ("HIST", "medllm-historical"), "is_hypothetical": ("HYPO", "medllm-hypothetical"),
         "is_family": ("FAM", "medllm-family")}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: 0.2em; }
.medllm-meta { color: #666; font-size: 0.85em; margin-bottom: 1em; }
.medllm-legend span { display: inline-block; padding: 0.1em 0.5em; margin: 0 0.3em 0.3em 0; border-radius: 0.3em; font-size: 0.85em; }
.medllm-doc { border-top: 1px solid #ddd; padding: 0.8em 0 1.2em 0; }
.medllm-doc h2 { font-size: 1em; margin: 0 0 0.4em 0; }
.medllm-cats span { display: inline-block; font-size: 0.8em; background: #eee; border-radius: 0.3em; padding: 0 0.4em; margin-right: 0.3em; }
.medllm-cats span.medllm-on { background: #ffd59e; font-weight: 600; }
.medllm-text { line-height: 2.4; white-space: pre-wrap; }
mark.medllm-ent { position: relative; padding: 0.2em 0.3em; border-radius: 0.35em; border: 2px solid transparent; }
mark.medllm-ent .medllm-label { font-size: 0.62em; font-weight: 700; text-transform: uppercase; margin-left: 0.35em; vertical-align: middle; }
mark.medllm-ent .medllm-badge { font-size: 0.6em; font-weight: 700; color: #fff; background: #555; border-radius: 0.25em; padding: 0 0.25em; margin-left: 0.25em; vertical-align: middle; }
mark.medllm-negated { border: 2px dashed #c62828; }
mark.medllm-negated .medllm-span { text-decoration: line-through; text-decoration-color: #c62828; }
mark.medllm-negated .medllm-badge { background: #c62828; }
mark.medllm-uncertain { border: 2px dotted #6a1b9a; }
mark.medllm-family, mark.medllm-historical, mark.medllm-hypothetical { border-bottom: 2px solid #555; }
mark.medllm-ent .medllm-tip { display: none; position: absolute; left: 0; top: 2.2em; z-index: 10; min-width: 14em; max-width: 28em;
  background: #fffff0; border: 1px solid #999; border-radius: 0.3em; padding: 0.3em 0.5em; font-size: 0.8em; line-height: 1.4;
  white-space: normal; box-shadow: 0 2px 6px rgba(0,0,0,0.2); }
mark.medllm-ent:hover .medllm-tip { display: block; }
.medllm-tip b { font-weight: 600; }
.medllm-arcs { overflow-x: auto; margin-top: 0.6em; }
.medllm-arcs text { font-size: 12px; font-family: inherit; }
table.medllm-rels { border-collapse: collapse; margin-top: 0.5em; font-size: 0.85em; }
table.medllm-rels td, table.medllm-rels th { border: 1px solid #ccc; padding: 0.15em 0.5em; text-align: left; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def label_colors(labels: Iterable[str], colors: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """label -> CSS colour: `colors`, then the defaults, then the palette in label order."""
    out = {**COLORS, **(colors or {})}
    free = [c for c in PALETTE if c not in out.values()] or list(PALETTE)
    for i, label in enumerate(sorted(set(labels) - set(out))):
        out[label] = free[i % len(free)]
    return out


def doc_view(doc: Doc, doc_id: Optional[str] = None, *, max_candidates: int = 5) -> Dict[str, Any]:
    """The view record of a Doc: `doc_record` with the text (id: `doc._.medllm_doc_id`, when set)."""
    from .engines.records import doc_record

    install_extensions()
    if doc_id is None:
        doc_id = str(doc._.medllm_doc_id) if doc._.medllm_doc_id else ""
    return doc_record(doc_id, doc, max_candidates=max_candidates, text=True)


def check_view(record: Any, where: str) -> Dict[str, Any]:
    """`record` if it is a view record; else a ValueError naming `where` and what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("text"), str):
        raise ValueError(f"{where}: no 'text' string (write the annotations with `medllm annotate --with-text`, or give --model)")
    n = len(record["text"])
    for key, kind in (("entities", list), ("relations", list), ("categories", dict)):
        if record.get(key) is not None and not isinstance(record[key], kind):
            raise ValueError(f"{where}: '{key}' must be a JSON {'array' if kind is list else 'object'}")
    for i, ent in enumerate(record.get("entities") or []):
        if not isinstance(ent, dict) or not all(isinstance(ent.get(k), int) for k in ("start", "end")) or not isinstance(ent.get("label"), str):
            raise ValueError(f"{where}: entity {i} needs integer 'start' and 'end' and a string 'label'")
        if not 0 <= ent["start"] < ent["end"] <= n:
            raise ValueError(f"{where}: entity {i} offsets {ent['start']}:{ent['end']} are outside the text ({n} characters)")
    for i, rel in enumerate(record.get("relations") or []):
        if not isinstance(rel, dict) or not isinstance(rel.get("label", ""), str):
            raise ValueError(f"{where}: relation {i} must be an object with a string 'label'")
        if rel.get("score") is not None and not isinstance(rel["score"], (int, float)):
            raise ValueError(f"{where}: relation {i}: 'score' must be a number")
    for name, value in (record.get("categories") or {}).items():
        if not isinstance(value, (int, float)):
            raise ValueError(f"{where}: category {name!r}: the score must be a number, not {value!r}")
    return record


def _entity_ids(ent: Dict[str, Any]) -> set:
    kb_id = ent.get("kb_id")
    return set(split_kb_id(str(kb_id))) if kb_id and kb_id != NIL else set()


def _endpoints(record: Dict[str, Any], rel: Dict[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """Entity indexes of a relation's head and tail; for one without them (a gold concept
    pair), the first entity that carries each concept id."""
    ents = record.get("entities") or []
    out = []
    for side in ("head", "tail"):
        i = rel.get(side)
        if isinstance(i, int) and 0 <= i < len(ents):
            out.append(i)
            continue
        ids = set(split_kb_id(str(rel.get(f"{side}_id") or "")))
        out.append(next((j for j, e in enumerate(ents) if ids & _entity_ids(e)), None) if ids else None)
    return out[0], out[1]


def _tip(ent: Dict[str, Any]) -> str:
    lines = [f"<b>{_e(ent['label'])}</b>"]
    if ent.get("kb_id") and ent["kb_id"] != NIL:
        name = f" {_e(ent['kb_name'])}" if ent.get("kb_name") else ""
        lines.append(f"<b>{_e(ent['kb_id'])}</b>{name}")
    elif "kb_id" in ent:
        lines.append("not linked (NIL)")
    if ent.get("candidates"):
        lines.append("candidates: " + ", ".join(f"{_e(c)} {float(s):.2f}" for c, s in ent["candidates"]))
    flags = [attr[3:] for attr in FLAGS if ent.get(attr)]
    if flags:
        lines.append("context: " + ", ".join(flags))
    return "<br>".join(lines)


def _title(ent: Dict[str, Any]) -> str:
    parts = [str(ent["label"])]
    if ent.get("kb_id") and ent["kb_id"] != NIL:
        parts.append(f"{ent['kb_id']} {ent.get('kb_name') or ''}".strip())
    parts += [attr[3:] for attr in FLAGS if ent.get(attr)]
    return " | ".join(parts)


def _text_html(record: Dict[str, Any], colors: Dict[str, str]) -> str:
    text = record["text"]
    ents = sorted(enumerate(record.get("entities") or []), key=lambda x: (x[1]["start"], -x[1]["end"]))
    parts, pos = [], 0
    for i, ent in ents:
        if ent["start"] < pos:  # overlaps the entity before it (records from elsewhere): arcs and table only
            continue
        parts.append(_e(text[pos : ent["start"]]))
        classes = ["medllm-ent"] + [cls for attr, (_, cls) in FLAGS.items() if ent.get(attr)]
        badges = "".join(f'<span class="medllm-badge">{badge}</span>' for attr, (badge, _) in FLAGS.items() if ent.get(attr))
        data = {"data-ent": i, "data-label": ent["label"], "data-kb-id": ent.get("kb_id") or "", "data-kb-name": ent.get("kb_name") or ""}
        attrs = " ".join(f'{k}="{_e(v)}"' for k, v in data.items())
        parts.append(
            f'<mark class="{" ".join(classes)}" {attrs} title="{_e(_title(ent))}" style="background: {colors.get(ent["label"], "#ddd")}">'
            f'<span class="medllm-span">{_e(text[ent["start"] : ent["end"]])}</span><span class="medllm-label">{_e(ent["label"])}</span>'
            f'{badges}<span class="medllm-tip">{_tip(ent)}</span></mark>'
        )
        pos = ent["end"]
    parts.append(_e(text[pos:]))
    return "".join(parts)


def _arcs_svg(record: Dict[str, Any], arcs: Sequence[Tuple[int, int, Dict[str, Any]]], colors: Dict[str, str], uid: str) -> str:
    """The relation diagram: the entities of the relations in text order, an arc per relation."""
    ents = record["entities"]
    nodes = sorted({i for h, t, _ in arcs for i in (h, t)}, key=lambda i: (ents[i]["start"], i))
    char_w, pad, gap = 7.2, 14, 34
    widths = [max(len(ents[i]["text"] if "text" in ents[i] else ""), len(str(ents[i]["label"]))) * char_w + 2 * pad for i in nodes]
    order = {i: k for k, i in enumerate(nodes)}
    xs, x = [], 10.0
    for w in widths:
        xs.append(x)
        x += w + gap
    span = [abs(order[h] - order[t]) for h, t, _ in arcs]
    levels = sorted(set(span))
    top = 30 + 28 * len(levels)
    height = top + 52
    out = [f'<svg class="medllm-arc-diagram" width="{x:.0f}" height="{height}" viewBox="0 0 {x:.0f} {height}">',
           f'<defs><marker id="medllm-arrow-{uid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M 0 0 L 10 5 L 0 10 z" fill="#444"/></marker></defs>']
    for (h, t, rel), s in zip(arcs, span):
        x1 = xs[order[h]] + widths[order[h]] / 2
        x2 = xs[order[t]] + widths[order[t]] / 2
        if x1 == x2:
            continue
        lift = 24 + 28 * levels.index(s)
        y = top
        score = rel.get("score")
        label = f"{rel.get('label', '')} {float(score):.2f}" if isinstance(score, (int, float)) and score < 1.0 else str(rel.get("label", ""))
        head_text, tail_text = ents[h].get("text", ""), ents[t].get("text", "")
        out.append(
            f'<g class="medllm-arc" data-label="{_e(rel.get("label", ""))}" data-head="{h}" data-tail="{t}">'
            f'<title>{_e(head_text)} &#8594; {_e(tail_text)}: {_e(label)}</title>'
            f'<path d="M {x1:.1f} {y} C {x1:.1f} {y - lift} {x2:.1f} {y - lift} {x2:.1f} {y - 2}" fill="none" stroke="#444" stroke-width="1.6" marker-end="url(#medllm-arrow-{uid})"/>'
            f'<text x="{(x1 + x2) / 2:.1f}" y="{y - 0.75 * lift - 4:.1f}" text-anchor="middle" fill="#333">{_e(label)}</text></g>'
        )
    for k, i in enumerate(nodes):
        ent = ents[i]
        out.append(
            f'<g class="medllm-node" data-ent="{i}"><rect x="{xs[k]:.1f}" y="{top}" width="{widths[k]:.1f}" height="40" rx="6" '
            f'fill="{colors.get(ent["label"], "#ddd")}"/>'
            f'<text x="{xs[k] + widths[k] / 2:.1f}" y="{top + 17}" text-anchor="middle">{_e(ent.get("text", ""))}</text>'
            f'<text x="{xs[k] + widths[k] / 2:.1f}" y="{top + 33}" text-anchor="middle" font-size="10" font-weight="700">{_e(ent["label"])}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def render_record(record: Dict[str, Any], *, colors: Optional[Dict[str, str]] = None, uid: str = "0") -> str:
    """One view record as an HTML fragment: marked text, categories, relation arcs and table."""
    record = check_view(record, f"document {record.get('id', uid) if isinstance(record, dict) else uid}")
    ents = [{"text": record["text"][e["start"] : e["end"]], **e} for e in record.get("entities") or []]
    record = {**record, "entities": ents}
    colors = label_colors((e["label"] for e in ents), colors)
    parts = [f'<section class="medllm-doc" data-doc="{_e(record.get("id", ""))}">']
    if record.get("id"):
        parts.append(f"<h2>{_e(record['id'])}</h2>")
    cats = record.get("categories") or {}
    if cats:
        spans = "".join(f'<span class="{"medllm-on" if float(v) >= 0.5 else ""}">{_e(k)} {float(v):.2f}</span>' for k, v in cats.items())
        parts.append(f'<div class="medllm-cats">{spans}</div>')
    parts.append(f'<div class="medllm-text">{_text_html(record, colors)}</div>')
    rels = record.get("relations") or []
    arcs = []
    for rel in rels:
        h, t = _endpoints(record, rel)
        if h is not None and t is not None and h != t:
            arcs.append((h, t, rel))
    if arcs:
        parts.append(f'<div class="medllm-arcs">{_arcs_svg(record, arcs, colors, uid)}</div>')
    if rels:
        rows = ["<tr><th>relation</th><th>head</th><th>tail</th><th>score</th></tr>"]
        for rel in rels:
            h, t = _endpoints(record, rel)
            cells = [_e(rel.get("label", ""))]
            for side, i in (("head", h), ("tail", t)):
                text = ents[i]["text"] if i is not None else ""
                kb = rel.get(f"{side}_id")
                cells.append(_e(f"{text} [{kb}]" if kb else text))
            score = rel.get("score")
            cells.append(f"{float(score):.3f}" if isinstance(score, (int, float)) else "")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append('<table class="medllm-rels">' + "".join(rows) + "</table>")
    parts.append("</section>")
    return "\n".join(parts)


def render_records(records: Iterable[Dict[str, Any]], *, title: str = "spacy_medllm", page: bool = True,
                   colors: Optional[Dict[str, str]] = None, meta: str = "") -> str:
    """View records as a self-contained HTML page (or, without `page`, a fragment for a
    notebook or an existing page). One colour per label across the page."""
    records = list(records)
    labels = sorted({str(e["label"]) for r in records for e in (r.get("entities") or []) if isinstance(e, dict) and "label" in e})
    colors = label_colors(labels, colors)
    body = "\n".join(render_record(r, colors=colors, uid=str(i)) for i, r in enumerate(records))
    if not page:
        return body
    n_ents = sum(len(r.get("entities") or []) for r in records)
    n_rels = sum(len(r.get("relations") or []) for r in records)
    legend = "".join(f'<span style="background: {colors[label]}">{_e(label)}</span>' for label in labels)
    info = f"{len(records)} documents, {n_ents} entities, {n_rels} relations" + (f" &middot; {_e(meta)}" if meta else "")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style></head>\n<body>\n<h1>{_e(title)}</h1>\n"
        f'<div class="medllm-meta">{info}</div>\n<div class="medllm-legend">{legend}</div>\n{body}\n</body>\n</html>\n'
    )


def render(docs: Union[Doc, Iterable[Doc]], *, page: bool = False, title: str = "spacy_medllm", colors: Optional[Dict[str, str]] = None) -> str:
    """Render one Doc or several as HTML: entities with their concepts, and relation arcs.

    docs (Union[Doc, Iterable[Doc]]): annotated Docs (e.g. the output of a pipeline with
        `medllm_rel`, or gold Docs read from a `.spacy` file).
    page (bool): a whole HTML page (for a file) instead of a fragment (for a notebook or
        an existing page).
    title (str): the page title, with `page`.
    colors (Dict[str, str]): entity label -> CSS colour.
    RETURNS (str): the HTML.
    """
    if isinstance(docs, Doc):
        docs = [docs]
    return render_records([doc_view(d) for d in docs], page=page, title=title, colors=colors)


def is_view_file(path) -> bool:
    """Whether a JSONL file holds view records (annotations with their text): its first
    non-empty line is an object with `text` and `entities`."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file() or not path.name.endswith((".jsonl", ".jsonl.gz")):
        return False
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and "entities" in first and isinstance(first.get("text"), str)
    return True  # no record at all: an empty page, not a request for a pipeline


def load_views(input_path, *, model=None, limit: int = 0, batch_size: int = 32, report=None, **read_options) -> List[Dict[str, Any]]:
    """The view records `medllm visualize` draws from `input_path`:
    * a `.spacy` file: its Docs as stored (gold annotations), unless `model` is given;
    * a JSONL of view records (`medllm annotate --with-text`): as written, without a pipeline;
    * any input `medllm annotate` reads (text, folder, JSONL, CSV, MIMIC; `read_options`),
      annotated by the pipeline `model` (a name, a path or a loaded Language). A corrupt
      record is reported and left out.
    `limit`: at most this many documents (0: all)."""
    import json
    from itertools import islice
    from pathlib import Path

    import spacy
    from spacy.tokens import DocBin

    from .deid.io import CorruptRecord
    from .engines.records import read_records
    from .errors import Errors

    install_extensions()
    path = Path(input_path)
    report = report or (lambda msg: None)
    if not path.exists():
        raise FileNotFoundError(Errors.E068.format(path=path))
    stop = limit or None
    if path.suffix == ".spacy" and model is None:
        install_extensions()
        docs = DocBin(store_user_data=True).from_disk(path).get_docs(spacy.blank("en").vocab)
        return [doc_view(d, d._.medllm_doc_id or f"doc {i}") for i, d in enumerate(islice(docs, stop), start=1)]
    if model is None and is_view_file(path):
        import gzip

        opener = gzip.open if path.name.endswith(".gz") else open
        views = []
        with opener(path, "rt", encoding="utf8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    raise ValueError(f"{path}, line {n}: not JSON ({err})") from None
                views.append(check_view(record, f"{path}, line {n}"))
                if stop and len(views) >= stop:
                    break
        return views
    if model is None:
        raise ValueError(f"{path}: not annotations with their text (.spacy, or the JSONL of `medllm annotate --with-text`); "
                         "give --model to annotate it")
    nlp = spacy.load(model) if isinstance(model, (str, Path)) else model
    if path.suffix == ".spacy":
        texts = ((d.text, d._.medllm_doc_id or f"doc {i}") for i, d in
                 enumerate(DocBin(store_user_data=True).from_disk(path).get_docs(nlp.vocab), start=1))
    else:
        def good():
            for r in read_records(path, **read_options):
                if isinstance(r, CorruptRecord):
                    report(f"skipped: {r}")
                    continue
                yield r[1], r[0]
        texts = good()
    return [doc_view(doc, doc_id) for doc, doc_id in nlp.pipe(islice(texts, stop), as_tuples=True, batch_size=batch_size)]


def write_page(html_text: str, output) -> None:
    """Write `html_text` to `output` through a temporary file moved into place."""
    import os
    import tempfile
    from pathlib import Path

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf8") as f:
            f.write(html_text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would: the page is for sharing
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
