"""Abbreviation definitions found on the text's characters (Schwartz & Hearst)."""
import pytest

from spacy_medllm.linker.abbreviations import abbreviation_definitions, mention_long_forms, number_variants


@pytest.mark.parametrize("text,short,long", [
    # a hyphenated short form: the token version refuses it (a one-character token)
    ("The agonist dexmedetomidine (D-MED) induced sedation.", "D-MED", "dexmedetomidine"),
    # the short form before ": " or "; " inside the parenthesis
    ("It is given with diethylnitrosamine (DEN: 10 mg/kg/day) for 8 weeks.", "DEN", "diethylnitrosamine"),
    ("Rats received phenobarbital (PB; 15 mg per rat) daily.", "PB", "phenobarbital"),
    # the whole hyphenated word, not its end
    ("Toxicity of 1-(2-chloroethyl)-3-cyclohexyl-1-nitrosourea (CCNU) in rats.", "CCNU", "1-(2-chloroethyl)-3-cyclohexyl-1-nitrosourea"),
    # the long form inside the parenthesis
    ("Elevation of cAMP (cyclic adenosine 3',5'-monophosphate) was seen.", "cAMP", "cyclic adenosine 3',5'-monophosphate"),
    # a definition inside another parenthesis
    ("Locations of the Atm (ataxia-telangiectasia (AT) -mutated) gene.", "AT", "ataxia-telangiectasia"),
    ("Ammonia and 5-fluorouracil (5-FU) were given.", "5-FU", "5-fluorouracil"),
    # an unbalanced bracket the long form would start with is dropped
    ("Rates of [complete response (CR) were low.", "CR", "complete response"),
])
def test_definitions(text, short, long):
    assert abbreviation_definitions(text)[short] == long


@pytest.mark.parametrize("text", [
    "The trial ran in 2003 (1990) and enrolled patients (n = 12).",
    "Scores fell (p < 0.05) after treatment.",
    "Methylprednisolone (M) was given.",  # one character: no short form
    "Patients (HR) were enrolled.",  # the letters are not there in order
    "First sentence ends with cocaine. (CO) stands alone.",  # the long form stays in its sentence
])
def test_no_definition(text):
    assert abbreviation_definitions(text) == {}


def test_first_definition_kept_and_long_form_reused():
    text = ("ataxia-telangiectasia (A-T) is rare. Cells of ataxia-telangiectasia (AT) patients. "
            "Then acetaminophen (AT) was given.")
    assert abbreviation_definitions(text) == {"A-T": "ataxia-telangiectasia", "AT": "ataxia-telangiectasia"}


def test_linker_reads_definitions_from_the_text():
    """The component's own definitions: from the document's text, also where the parenthesis
    is inside a token."""
    import spacy

    nlp = spacy.blank("en")
    linker = nlp.add_pipe("medllm_linker")
    doc = nlp.make_doc("We gave dexmedetomidine(D-MED) and 5-fluorouracil (5-FU).")
    assert linker._abbreviation_definitions(doc) == {"D-MED": "dexmedetomidine", "5-FU": "5-fluorouracil"}
    assert linker._abbreviation_definitions(nlp.make_doc("dexmedetomidine(D-MED)")) == {"D-MED": "dexmedetomidine"}
    assert linker._abbreviation_definitions(nlp.make_doc("No parenthesis here.")) == {}


def test_number_variants():
    variants = number_variants({"VSDs": "ventricular septal defects", "COC": "combined oral contraceptive",
                                "PAs": "pyrrolizidine alkaloids", "OA": "osteoarthritis"})
    assert variants["VSD"] == "ventricular septal defect"
    assert variants["COCs"] == "combined oral contraceptives"
    assert variants["PA"] == "pyrrolizidine alkaloid"
    # no plural of a long form that already ends in "s"
    assert "OAs" not in variants
    # a short form's own definition wins over a variant of another
    assert number_variants({"MDs": "midline defects", "MD": "muscular dystrophy"})["MD"] == "muscular dystrophy"


def test_mention_long_forms():
    mentions = [("overactive bladder", "Disease"), ("prostaglandins", "Chemical"), ("OAB", "Disease"), ("PGs", "Chemical"),
                ("startle", "Disease"), ("PGE2", "Chemical"), ("HT", "Disease"), ("hypertension", "Chemical"),
                ("DVP", "Chemical"), ("valproate", "Chemical")]
    found = mention_long_forms(mentions, {})
    assert found == {"OAB": "overactive bladder", "PGs": "prostaglandins"}
    # a short form defined in the text is left to its definition
    assert "OAB" not in mention_long_forms(mentions, {"OAB": "overactive bladder"})
    # the most frequent of several spellings
    assert mention_long_forms([("ARF", "Disease"), ("acute renal failure", "Disease"), ("acute rheumatic fever", "Disease"),
                               ("acute rheumatic fever", "Disease")], {}) == {"ARF": "acute rheumatic fever"}


def test_linker_links_short_forms_through_other_mentions():
    import spacy
    from spacy.tokens import Span

    nlp = spacy.blank("en")
    on = nlp.add_pipe("medllm_linker", name="on", config={"abbreviation_mentions": True})
    off = nlp.add_pipe("medllm_linker", name="off")
    doc = nlp.make_doc("Women with overactive bladder were seen ; OAB improved . VSD and VSDs ( ventricular septal defects ) .")
    doc.ents = [Span(doc, 2, 4, "Disease"), Span(doc, 7, 8, "Disease"), Span(doc, 10, 11, "Disease"), Span(doc, 12, 13, "Disease"),
                Span(doc, 14, 17, "Disease")]
    linked = {ent.text: text for ent, text, _ in on._mentions(doc)}
    assert linked["OAB"] == "overactive bladder"
    assert linked["VSD"] == "ventricular septal defect"
    assert linked["VSDs"] == "ventricular septal defects"
    assert {ent.text: text for ent, text, _ in off._mentions(doc)}["OAB"] == "OAB"
