"""medllm_deid: each PHI type on inline synthetic notes, surrogates, date shifts, the pipeline."""
import datetime
import re

import pytest
import spacy

from spacy_medllm.deid.patterns import find_phi, resolve, widen_names
from spacy_medllm.deid.surrogates import DateFormat, Surrogates, map_offset, replace_spans


@pytest.fixture(scope="module")
def tagger():
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_deid", config={"replace": "tag"})
    return nlp


def found(text):
    return [(text[s:e], label) for s, e, label in widen_names(text, resolve(find_phi(text)))]


@pytest.mark.parametrize(
    "text,expected",
    [
        # names next to titles and initials, all-caps names, kin, headers, credentials
        ("Seen by Dr. John Smith and Dr. J. Williams today.", [("John Smith", "NAME"), ("J. Williams", "NAME")]),
        ("DR CAMARDA AND CLIFFORD AWARE AND AT BEDSIDE.", [("CAMARDA", "NAME"), ("CLIFFORD", "NAME")]),
        ("Wife MARY at bedside. Son, Robert, called.", [("MARY", "NAME"), ("Robert", "NAME")]),
        ("dr healey aware of labs. mr.renzi returned from OR.", [("healey", "NAME"), ("renzi", "NAME")]),
        ("Patient Name: Smith, John", [("Smith, John", "NAME")]),
        ("Note signed by Maria Lopez, RN", [("Maria Lopez", "NAME")]),
        ("social: son bill called for update", [("bill", "NAME")]),
        # dates in every common format, years in context
        (
            "Admitted 03/14/2087; seen 3/14, again March 14th and 14-Mar-2087, discharged 2087-03-14. MI in 1992.",
            [("03/14/2087", "DATE"), ("3/14", "DATE"), ("March 14th", "DATE"), ("14-Mar-2087", "DATE"), ("2087-03-14", "DATE"), ("1992", "DATE")],
        ),
        ("PMH: AVR 8/88, CABG in '95, seen Mar 3, 2001.", [("8/88", "DATE"), ("'95", "DATE"), ("Mar 3, 2001", "DATE")]),
        # ages over 89, in digits and in words; 45 is not PHI
        ("A 93 yo woman; a ninety-two year old man; aged 101. A 45 yo man.", [("93", "AGE"), ("ninety-two", "AGE"), ("101", "AGE")]),
        # phone numbers with extensions, fax, pager
        (
            "Call 410-555-1234 ext. 22 or (410) 555-9876 x45; fax 410-555-0000; pager 54321.",
            [("410-555-1234 ext. 22", "PHONE"), ("(410) 555-9876 x45", "PHONE"), ("410-555-0000", "FAX"), ("54321", "PHONE")],
        ),
        ("Email j.smith@example.com, see http://www.example.org/notes or 192.168.1.20.", [("j.smith@example.com", "EMAIL"), ("http://www.example.org/notes", "URL"), ("192.168.1.20", "IP")]),
        (
            "MRN: 12345678, SSN 123-45-6789, license number MD-445566, account # 99887766.",
            [("12345678", "ID"), ("123-45-6789", "ID"), ("MD-445566", "ID"), ("99887766", "ID")],
        ),
        ("Lives at 123 Main Street, Apt 4, Baltimore, MD 21201.", [("123 Main Street, Apt 4", "STREET"), ("Baltimore", "CITY"), ("MD", "STATE"), ("21201", "ZIP")]),
        # the name of a hospital, without the generic words before or after it
        ("Transferred from Calvert Memorial Hospital to St. Mary's Medical Center.", [("Calvert Memorial", "HOSPITAL"), ("St. Mary's", "HOSPITAL")]),
        ("CONTINUED HYPOTENSION AT CALVERT HOSPITAL. WANTS TO GO BACK TO THE HOSPITAL.", [("CALVERT", "HOSPITAL")]),
        ("PT ADMITTED TO QUARTERMAIN7 W/ CHF. Husband works in Bel Air.", [("QUARTERMAIN7", "LOCATION"), ("Bel Air", "LOCATION")]),
        # nicknames, initials with a surname, a possessive, a hyphen after a name
        ("Reported to D. Phyl. son Rob-who states he will come. per dr. white's order. E. Coli in urine.", [("D. Phyl", "NAME"), ("Rob", "NAME"), ("white", "NAME")]),
        # after a kinship word or "MS" (mental status), an ordinary English word is no name
        ("WIFE REQUESTING UPDATE. DAUGHTER IS BRINGING LOTION. MS CHANGES. WIFE IS A CCU NURSE.", []),
        ("r radial aline intact. TILL FURTHER NOTICE.", []),
        ("ROS General: no fever. Consult: General Surgery. ATTENDING PHYSICIAN reviewed.", []),
        ("TEAM AWARE, UNCLEAR WHY. GIVEN MOM X1. NP STOOL. N/V. Abdomen soft. SISTER-KRISSY AND NP Patty here.", [("KRISSY", "NAME"), ("Patty", "NAME")]),
        # a ventilator setting, a pain score, a range of times or volumes is no date or phone number
        ("On PSV 10/5, CPAP/PS 16/5/40% tolerating. CP 5/10 relieved. TV 500-1000, 900-1000 slept.", []),
        # two-digit years of a history
        ("PMH: CAD: NQWMI 13. NIDDM. 09 PTCA to LCX. AAA REPAIR IN 14' C/B DVT", [("13", "DATE"), ("09", "DATE"), ("14'", "DATE")]),
        # a county; a name before a credential that is also a state code; instruments, units and
        # the "MS:" header are no places
        ("Last hospitalized in Pierce County. Evaluated by Rebecca Richardson, MD. Lives in Towson, MD.", [("Pierce County", "LOCATION"), ("Rebecca Richardson", "NAME"), ("Towson", "CITY"), ("MD", "STATE")]),
        ("Dissected using Mayo scissors. Transferred from Labor And Delivery Room. RR18, Afebrile.,MS: ,A&O.", []),
        ("Works for Acme Widgets Inc. in Ohio.", [("Acme Widgets Inc.", "ORGANIZATION"), ("Ohio", "STATE")]),
        # dates run into the word before them ("TOXICITY-9/2/92", "HX:8/30")
        ("LITHIUM TOXICITY-9/2/92. PRESENT HX:8/30 LETHARGIC. ACCESS #18 LA-10/3.", [("9/2/92", "DATE"), ("8/30", "DATE"), ("10/3", "DATE")]),
        # phone numbers with the area code run in, with spaces after the hyphens, a pager after "PG"
        ("son ,dave, (240444-1243) was in; dtr Frances Baker- 212- 476- 8356. PG 23456", [("dave", "NAME"), ("240444-1243", "PHONE"), ("Frances Baker", "NAME"), ("212- 476- 8356", "PHONE"), ("23456", "PHONE")]),
        # a residence after "lives at" / "home in" without the facility words; a hospital's campus
        ("He lives at Carpenter Assisted living. Husband is home in Hagerstown. Bed on mackerer campus.", [("Carpenter", "LOCATION"), ("Hagerstown", "LOCATION"), ("mackerer", "LOCATION")]),
        # dates run into history shorthand; a named residence
        ("prostate CA'88, GERD, s/p pelvic fx4/97. ADMITTED FROM THE KEELEY HOUSE. OPEN HOUSE.", [("'88", "DATE"), ("4/97", "DATE"), ("KEELEY", "LOCATION")]),
        # a capitalized English word after a title is a name; a plural title with an apostrophe
        ("Orders signed by Dr. Art White. Drs' Ballou and Dutter pronounced.", [("Art White", "NAME"), ("Ballou", "NAME"), ("Dutter", "NAME")]),
        # a lower-case signature with an initial; a given name alone; a caregiver's name
        ("all is well at this time. s. roberto rrt", [("s. roberto", "NAME")]),
        ("PER DAVID, HE HAS BEEN ANXIOUS. RECOGNIZED HIS CAREGIVER, BARBARA. Maria is at bedside.", [("DAVID", "NAME"), ("BARBARA", "NAME"), ("Maria", "NAME")]),
        # a double given name is no compound eponym ("Jackson-Pratt" is)
        ("Mary-Anne is at bedside. A Jackson-Pratt drain.", [("Mary-Anne", "NAME")]),
        # short capitalized abbreviations that are also given names are no names
        ("PEG in place, HOB up 30, CON, GERD on PPI, BRADY to 50s, allegra given.", []),
        ("Seen on [**2101-10-20**] by [**Known lastname 1234**] at [**Hospital1 18**].", [("[**2101-10-20**]", "DATE"), ("[**Known lastname 1234**]", "NAME"), ("[**Hospital1 18**]", "HOSPITAL")]),
        # an employer after its cue, lower-case too; not "himself" or "home"
        # (lower-case words only in a lower-case note)
        ("she is employed by Acme Tool and Die. he works for himself; she works at home. at the sales counter.", [("Acme Tool", "ORGANIZATION")]),
        ("son here. he works for vista health. a: lg ami.", [("vista health", "ORGANIZATION")]),
        ("Son here. He is employed at the sales counter of a store. Off work for two weeks.", []),
        # a relative's town ("SON IN LAW" is no place); St without its period before a possessive
        ("SPOKE WITH SON IN PIKESVILLE. SON IN LAW CALLED. Wishes to return to St Mary's after weaning.", [("PIKESVILLE", "CITY"), ("St Mary's", "HOSPITAL")]),
        # a word hyphen-joined to a found place joins it
        ("pt transferred via ambulance to kessler-adventist rehab facility@ 13:10.", [("kessler-adventist", "HOSPITAL")]),
    ],
)
def test_phi_types(text, expected):
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "BP 120/80, 1/2 tab, PEEP 5/5, CPAP 10/5.",
        "Heparin 1100 units at 2000; drain put out 800-1000 cc.",
        "ST elevations in V2-V4, CT surgery following, MI ruled out.",
        "A 45 year old man with chest pain, given aspirin 325 mg.",
        "HR 90-110's ST. Stable Bp off neo. SR TO ST. HIGH PRESSURES RESOLVED. NSR to ST. No noted ectopy.",
        "ABG'S. MD AWARE. NEURO: PERLA 3 MM, BRISKLY REACTIVE.",
        "We primed the Ahmed valve; Steven scissors were used; a Wilson-Cooke sphincterotome.",
        # eponyms and acronyms in a mixed-case report; a word the note also writes in lower case
        "Normal Tanner I male. Down to Cooper's ligament; a #15 Bard-Parker; the Jackson spinal table; Lorenz plates. "
        "ELISA was negative. Cord was infiltrated with 5 mL of bupivacaine, then the spermatic cord was ligated.",
        # an eponym after a given name; usual words before a credential; settings, cardiac output, an ABG
        "US WITH FLUID IN DOUGLAS POUCH. LUNGS COARSE, RN TO SUCTION. AT TIMES MD AWARE. DNG MIN ANT BILOUS FLUID.",
        "remains on cpap/ps (10/5) c 40% fio2. CO/CI 5/3 FICK. abg 80/48/7.45.34.7. bleeding from Ct's.",
        # places after a cue that are a catheter, a unit, a name's title, a relative
        "Cultures drawn from Quinton cath. Stable for transfer to Cardiac floor. MDI from Pharmacy. A SISTER-IN-LAW CALLED.",
    ],
)
def test_no_phi_in_clinical_shorthand(text):
    assert found(text) == []


def test_component_tags_and_offsets(tagger):
    doc = tagger("Dr. John Smith saw him on 3/14. Call 410-555-1234.")
    assert doc._.deid_text == "Dr. [NAME] saw him on [DATE]. Call [PHONE]."
    assert [(s.text, s.label_) for s in doc.spans["medllm_deid"]] == [("John Smith", "NAME"), ("3/14", "DATE"), ("410-555-1234", "PHONE")]
    assert doc._.deid_offsets == [[4, 14, 4, 10, "NAME"], [26, 30, 22, 28, "DATE"], [37, 49, 35, 42, "PHONE"]]
    # the map holds offsets and types only: no original string
    assert not any(isinstance(v, str) and v not in ("NAME", "DATE", "PHONE") for row in doc._.deid_offsets for v in row)


def test_empty_doc(tagger):
    doc = tagger("")
    assert doc._.deid_text == ""
    assert doc._.deid_offsets == []
    assert list(doc.spans["medllm_deid"]) == []


def test_ner_entities_are_merged():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "LOCATION", "pattern": "GH"}, {"label": "DRUG", "pattern": "aspirin"}])
    nlp.add_pipe("medllm_deid", config={"replace": "tag"})
    doc = nlp("Transferred to GH on 7/22, given aspirin.")
    assert doc._.deid_text == "Transferred to [LOCATION] on [DATE], given aspirin."


def test_initials_join_the_name_found():
    """An initial before a name the NER found joins it; two names around an initial are one."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "NAME", "pattern": p} for p in ("WELSH", "barbara", "parrilli")])
    nlp.add_pipe("medllm_deid", config={"replace": "tag"})
    doc = nlp("INR 6.0. E. WELSH AWARE.\nbarbara j. parrilli bsn/rn")
    assert [(s.text, s.label_) for s in doc.spans["medllm_deid"]] == [("E. WELSH", "NAME"), ("barbara j. parrilli", "NAME")]
    # a letter glued to the word before is no initial ("vit.K. WELSH" keeps K out)
    assert widen_names("vitK. WELSH", [(6, 11, "NAME")]) == [(6, 11, "NAME")]
    # a capital initial without its period joins; "A" and "I" are words, not initials
    assert widen_names("SEEN BY J SMITH", [(10, 15, "NAME")]) == [(8, 15, "NAME")]
    assert widen_names("TOLD A SMITH", [(7, 12, "NAME")]) == [(7, 12, "NAME")]
    assert widen_names("LABS WNL SMITH", [(9, 14, "NAME")]) == [(9, 14, "NAME")]


def test_surrogates_consistent_within_document():
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_deid", config={"seed": 7})
    text = "Dr. Smith called. Later DR. SMITH and dr. smith agreed. Wife Mary visited; Mary left."
    doc = nlp(text)
    names = [doc._.deid_text[ns:ne] for _, _, ns, ne, label in doc._.deid_offsets if label == "NAME"]
    assert len(names) == 5
    assert names[0] == names[1].title() == names[2].title()
    assert names[1] == names[1].upper() and names[2] == names[2].lower()
    assert names[3] == names[4]
    assert "Smith" not in doc._.deid_text and "Mary" not in doc._.deid_text
    # seeded: the same text gives the same output in another pipeline
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("medllm_deid", config={"seed": 7})
    assert nlp2(text)._.deid_text == doc._.deid_text


def test_date_shift_keeps_intervals_and_format():
    dates = ["03/14/2087", "3/20/2087", "March 30th, 2087", "14-Apr-2087", "2087-05-01"]
    text = "; ".join(dates)
    parsed = [datetime.date(2087, 3, 14), datetime.date(2087, 3, 20), datetime.date(2087, 3, 30), datetime.date(2087, 4, 14), datetime.date(2087, 5, 1)]
    for seed in range(5):
        s = Surrogates(text, seed=seed, keep_weekday=True)
        assert s.shift != 0 and s.shift % 7 == 0
        out = [s.date(d) for d in dates]
        new = [
            datetime.datetime.strptime(out[0], "%m/%d/%Y").date(),
            datetime.datetime.strptime(out[1], "%m/%d/%Y").date(),
            datetime.datetime.strptime(re.sub(r"(\d)(st|nd|rd|th)", r"\1", out[2]), "%B %d, %Y").date(),
            datetime.datetime.strptime(out[3], "%d-%b-%Y").date(),
            datetime.datetime.strptime(out[4], "%Y-%m-%d").date(),
        ]
        assert [(b - a).days for a, b in zip(parsed, new)] == [s.shift] * 5
        assert [d.weekday() for d in new] == [d.weekday() for d in parsed]
        assert re.fullmatch(r"\d\d/\d\d/\d{4}", out[0]) and re.fullmatch(r"[A-Z][a-z]{2}", out[3][3:6])


def test_date_formats_round_trip():
    assert DateFormat.parse("3/14").shifted(1) == "3/15"
    assert DateFormat.parse("14-MAR-2087").shifted(18) == "01-APR-2087"
    assert DateFormat.parse("March 14th").shifted(8) == "March 22nd"
    assert DateFormat.parse("'92").shifted(366) == "'93"
    assert DateFormat.parse("1992").shifted(-366) == "1991"
    assert DateFormat.parse("12/31/99").shifted(1) == "1/1/00"
    assert DateFormat.parse("2/29").shifted(1) == "3/1"
    assert DateFormat.parse("10/95").shifted(40) == "11/95"


def test_age_and_numbers_surrogates():
    s = Surrogates("x", seed=1)
    assert s("AGE", "93") == "90" and s("AGE", "ninety-two") == "ninety"
    phone = s("PHONE", "(410) 555-1234 x45")
    assert re.fullmatch(r"\(\d{3}\) \d{3}-\d{4} x\d\d", phone) and phone != "(410) 555-1234 x45"
    assert s("PHONE", "(410) 555-1234 x45") == phone


def test_replace_and_map_offsets():
    text = "ab John cd 3/14 ef"
    new, offsets = replace_spans(text, [(3, 7, "NAME"), (11, 15, "DATE")], mode="tag")
    assert new == "ab [NAME] cd [DATE] ef"
    assert offsets == [[3, 7, 3, 9, "NAME"], [11, 15, 13, 19, "DATE"]]
    assert [map_offset(offsets, p, "start") for p in (0, 3, 5, 8, 11, 16)] == [0, 3, 3, 10, 13, 20]
    assert [map_offset(offsets, p, "end") for p in (2, 5, 7, 10, 15, 18)] == [2, 9, 9, 12, 19, 22]


def test_bad_config():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="E060"):
        nlp.add_pipe("medllm_deid", config={"replace": "mask"})


def test_serialization_round_trip(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_deid", config={"replace": "tag", "keep_weekday": True})
    nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("medllm_deid").keep_weekday is True
    text = "Dr. John Smith saw him on 3/14."
    assert loaded(text)._.deid_text == nlp(text)._.deid_text == "Dr. [NAME] saw him on [DATE]."
    assert spacy.blank("en").from_bytes(nlp.to_bytes()) is not None


def test_pipe_two_processes():
    nlp = spacy.blank("en")
    nlp.add_pipe("medllm_deid", config={"seed": 3})
    texts = ["Dr. John Smith saw him on 3/14.", "Wife MARY called 410-555-1234.", "No PHI here.", "Seen at Calvert Hospital in 1992."]
    single = [(d._.deid_text, d._.deid_offsets, [(s.text, s.label_) for s in d.spans["medllm_deid"]]) for d in map(nlp, texts)]
    multi = [(d._.deid_text, d._.deid_offsets, [(s.text, s.label_) for s in d.spans["medllm_deid"]]) for d in nlp.pipe(texts, n_process=2, batch_size=2)]
    assert [(t, [list(r) for r in o], s) for t, o, s in multi] == single


def test_tokens_split_at_phi_boundaries(tagger):
    doc = tagger("Seen by DR.GATEMAN on 8/23,AWAITING results; call 201-561-8910.")
    assert [(s.text, s.label_) for s in doc.spans["medllm_deid"]] == [("GATEMAN", "NAME"), ("8/23", "DATE"), ("201-561-8910", "PHONE")]
    assert doc._.deid_text == "Seen by DR.[NAME] on [DATE],AWAITING results; call [PHONE]."
    assert doc.text == "Seen by DR.GATEMAN on 8/23,AWAITING results; call 201-561-8910."


def test_peer_note_time_limit():
    """A peer that hangs on one note is stopped there, the note counts as nothing found,
    and the other notes are still scored."""
    import time as _time

    from spacy_medllm.deid.evaluate import run_with_timeout

    def factory():
        def system(text):
            if "HANG" in text:
                _time.sleep(30)
            return [(0, 4, "NAME")]

        return system, "a peer that hangs"

    preds, spent, timed_out = run_with_timeout(factory, ["John here", "HANG on", "Mary there"], timeout_s=1.0)
    assert timed_out == [1]
    assert preds == [[(0, 4, "NAME")], [], [(0, 4, "NAME")]]
    assert spent < 5
