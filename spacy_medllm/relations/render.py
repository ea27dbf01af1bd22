"""HTML rendering of entities (with linked concepts) and relations.

`render(doc)` returns one HTML fragment per Doc: the text with its entities marked
(label, concept id and, when the linker set `Span._.kb_concept`, the concept's name),
an arc diagram of the relations over the mentions they connect (an arrow from head to
tail, labelled with the relation and its score), and a table of the relations. It uses
spaCy's displaCy renderers with manual input, so the output looks like displaCy's.
From the command line: `medllm render`.
"""
import html
from typing import Dict, Iterable, List, Optional, Tuple, Union

from spacy import displacy
from spacy.tokens import Doc, Span

from ..tokens import NIL, get_relations, install_extensions, split_kb_id

PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; }}
.medllm-doc {{ border-bottom: 1px solid #ddd; padding-bottom: 1.5em; margin-bottom: 1.5em; }}
.medllm-arcs {{ overflow-x: auto; }}
table.medllm-rels {{ border-collapse: collapse; margin-top: 0.8em; font-size: 0.9em; }}
table.medllm-rels td, table.medllm-rels th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
</style></head>
<body>
{body}
</body>
</html>
"""

COLORS = {"Chemical": "#9fd5ff", "Disease": "#ffb3b3", "Drug": "#9fd5ff", "Effect": "#ffb3b3", "Dose": "#ffe28a"}


def _concept_text(span: Span) -> str:
    """`D009270 Naloxone`: the id and, when the linker set it, the concept's name."""
    kb_id = span.kb_id_
    if not kb_id or kb_id == NIL:
        return ""
    concept = span._.kb_concept if Span.has_extension("kb_concept") else None
    name = concept.get("name") if isinstance(concept, dict) else None
    return f"{kb_id} {name}" if name else kb_id


def _record_spans(doc: Doc, record: Dict[str, object]) -> Tuple[Optional[Tuple[int, int]], Optional[Tuple[int, int]]]:
    """Token offsets of a record's head and tail; for a record without offsets (a gold
    concept pair), the first entity that carries each id."""
    out = []
    for side in ("head", "tail"):
        offsets = record.get(side)
        if offsets is not None:
            out.append((int(offsets[0]), int(offsets[1])))
            continue
        ids = set(split_kb_id(str(record.get(f"{side}_id") or "")))
        match = next((ent for ent in doc.ents if ids & set(split_kb_id(ent.kb_id_))), None)
        out.append((match.start, match.end) if match is not None else None)
    return out[0], out[1]


def render_doc(doc: Doc, *, title: Optional[str] = None, colors: Optional[Dict[str, str]] = None) -> str:
    """One Doc as an HTML fragment: marked entities, relation arcs, relation table.

    title (str): a heading (default: `doc._.medllm_doc_id`, when set).
    colors (Dict[str, str]): entity label -> CSS colour, on top of the defaults.
    """
    install_extensions()
    if title is None and doc._.medllm_doc_id:
        title = str(doc._.medllm_doc_id)
    ents = []
    for ent in doc.ents:
        item = {"start": ent.start_char, "end": ent.end_char, "label": html.escape(ent.label_)}
        concept = _concept_text(ent)
        if concept:
            item.update({"kb_id": html.escape(concept), "kb_url": "#"})
        ents.append(item)
    options = {"colors": {**COLORS, **(colors or {})}}
    parts = ['<div class="medllm-doc">']
    if title:
        parts.append(f"<h3>{html.escape(title)}</h3>")
    parts.append(displacy.render({"text": doc.text, "ents": ents}, style="ent", manual=True, options=options))
    records = get_relations(doc)
    arcs: List[Tuple[Tuple[int, int], Tuple[int, int], Dict[str, object]]] = []
    for r in records:
        head, tail = _record_spans(doc, r)
        if head is not None and tail is not None and head != tail:
            arcs.append((head, tail, r))
    if arcs:
        nodes = sorted({span for head, tail, _ in arcs for span in (head, tail)})
        index = {span: i for i, span in enumerate(nodes)}
        labels = {(e.start, e.end): e.label_ for e in doc.ents}
        words = [{"text": doc[s:e].text, "tag": html.escape(labels.get((s, e), ""))} for s, e in nodes]
        dep_arcs = []
        for head, tail, r in arcs:
            i, j = index[head], index[tail]
            score = float(r.get("score", 1.0))
            label = f"{r['label']} {score:.2f}" if score < 1.0 else str(r["label"])
            dep_arcs.append({"start": min(i, j), "end": max(i, j), "label": html.escape(label), "dir": "right" if i < j else "left"})
        svg = displacy.render({"words": words, "arcs": dep_arcs}, style="dep", manual=True, options={"compact": True, "distance": 140, "offset_x": 60})
        parts.append(f'<div class="medllm-arcs">{svg}</div>')
    if records:
        rows = ["<tr><th>relation</th><th>head</th><th>tail</th><th>score</th></tr>"]
        for r in records:
            head, tail = _record_spans(doc, r)
            cells = [html.escape(str(r["label"]))]
            for side, span in (("head", head), ("tail", tail)):
                text = doc[span[0] : span[1]].text if span is not None else ""
                kb = r.get(f"{side}_id")
                cells.append(html.escape(f"{text} [{kb}]" if kb else text))
            cells.append(f"{float(r.get('score', 1.0)):.3f}")
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append('<table class="medllm-rels">' + "".join(rows) + "</table>")
    parts.append("</div>")
    return "\n".join(parts)


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
    body = "\n".join(render_doc(doc, colors=colors) for doc in docs)
    return PAGE.format(title=html.escape(title), body=body) if page else body
