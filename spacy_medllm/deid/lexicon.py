"""Word lists for PHI detection and surrogates.

Person names come from the name tables that the `faker` package ships (US, British, Irish,
New Zealand, Indian English, Italian, Spanish, German, French and Brazilian name lists; no
download), folded to ASCII. Nothing here is taken from a training corpus. The other lists
(states, titles, kinship words, hospital and street words, the words that are never names)
are written out below.
"""
import importlib
import unicodedata
from functools import lru_cache
from typing import FrozenSet, List, Tuple

NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "it_IT", "es_ES", "de_DE", "fr_FR", "pt_BR")

US_STATES = (
    "Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Hawaii "
    "Idaho Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan "
    "Minnesota Mississippi Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon Pennsylvania "
    "Tennessee Texas Utah Vermont Virginia Washington Wisconsin Wyoming"
).split() + [
    "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina", "North Dakota",
    "Rhode Island", "South Carolina", "South Dakota", "West Virginia", "District of Columbia", "Puerto Rico",
]
US_STATE_ABBR = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY "
    "NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR"
).split()

# cities large enough to be named in notes without a state; real places, public knowledge
US_CITIES = [
    "New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Philadelphia", "San Antonio", "San Diego",
    "Dallas", "San Jose", "Austin", "Jacksonville", "San Francisco", "Columbus", "Fort Worth", "Indianapolis",
    "Charlotte", "Seattle", "Denver", "El Paso", "Detroit", "Boston", "Memphis", "Nashville", "Portland",
    "Oklahoma City", "Las Vegas", "Baltimore", "Louisville", "Milwaukee", "Albuquerque", "Tucson", "Fresno",
    "Sacramento", "Kansas City", "Atlanta", "Miami", "Raleigh", "Omaha", "Minneapolis", "Tulsa", "Cleveland",
    "Wichita", "New Orleans", "Tampa", "Honolulu", "Pittsburgh", "Cincinnati", "St. Louis", "Saint Louis",
    "Orlando", "Buffalo", "Newark", "Rochester", "Richmond", "Baton Rouge", "Salt Lake City", "Hartford",
    "Providence", "Worcester", "Springfield", "Cambridge", "Annapolis", "Bethesda", "Towson", "Catonsville",
    "Silver Spring", "Rockville", "Frederick", "Columbia", "Brooklyn", "Bronx", "Queens", "Manhattan",
    "Anchorage", "Albany", "Syracuse", "New Haven", "Stamford", "Trenton", "Camden", "Wilmington", "Dover",
    "Norfolk", "Charleston", "Savannah", "Birmingham", "Montgomery", "Jackson", "Little Rock", "Des Moines",
    "Madison", "Lansing", "Ann Arbor", "Toledo", "Akron", "Dayton", "Lexington", "Knoxville", "Chattanooga",
    "Durham", "Greensboro", "Spokane", "Tacoma", "Boise", "Reno", "Santa Fe", "Cheyenne", "Billings",
    "Fargo", "Sioux Falls", "Burlington", "Manchester", "Concord", "Portsmouth", "Bangor", "Lowell",
    "Quincy", "Brockton", "Lynn", "Framingham", "Newton", "Somerville", "Waltham", "Medford", "Malden",
]
COUNTRIES = [
    "Afghanistan", "Albania", "Algeria", "Argentina", "Armenia", "Australia", "Austria", "Bangladesh",
    "Belgium", "Bolivia", "Brazil", "Bulgaria", "Cambodia", "Cameroon", "Canada", "Chile", "China",
    "Colombia", "Cuba", "Cyprus", "Denmark", "Dominican Republic", "Ecuador", "Egypt", "El Salvador",
    "England", "Ethiopia", "Finland", "France", "Germany", "Ghana", "Greece", "Guatemala", "Haiti",
    "Honduras", "Hungary", "Iceland", "India", "Indonesia", "Iran", "Iraq", "Ireland", "Israel", "Italy",
    "Jamaica", "Japan", "Jordan", "Kenya", "Korea", "Lebanon", "Liberia", "Libya", "Lithuania", "Mexico",
    "Morocco", "Nepal", "Netherlands", "Nicaragua", "Nigeria", "Norway", "Pakistan", "Panama", "Peru",
    "Philippines", "Poland", "Portugal", "Romania", "Russia", "Scotland", "Senegal", "Serbia", "Somalia",
    "Spain", "Sudan", "Sweden", "Switzerland", "Syria", "Taiwan", "Thailand", "Trinidad", "Turkey",
    "Uganda", "Ukraine", "Uruguay", "Venezuela", "Vietnam", "Wales", "Yemen", "Zimbabwe",
]

# words before a name
PERSON_TITLES = ("dr", "dr's", "drs", "doctor", "mr", "mrs", "ms", "miss", "mx", "prof", "professor", "rev")
CLINICIAN_TITLES = ("nurse", "np", "rn", "pa", "attending", "resident", "fellow", "intern", "surgeon", "physician", "pcp", "ho", "cardiologist", "neurologist", "hospitalist")
KIN_WORDS = (
    "wife", "husband", "spouse", "partner", "son", "daughter", "mother", "father", "mom", "dad", "brother",
    "sister", "niece", "nephew", "aunt", "uncle", "cousin", "grandson", "granddaughter", "grandmother",
    "grandfather", "friend", "neighbor", "neighbour", "fiance", "fiancee", "boyfriend", "girlfriend",
    "sibling", "hcp", "proxy", "guardian", "stepson", "stepdaughter", "son-in-law", "daughter-in-law",
    "caregiver", "caretaker",
)
# headers whose value is a name
NAME_HEADERS = (
    "patient name", "pt name", "name", "attending", "attending physician", "resident", "surgeon",
    "assistant", "assistant surgeon", "dictated by", "signed by", "electronically signed by", "cc",
    "referring physician", "referring doctor", "primary care physician", "pcp", "anesthesiologist",
    "transcribed by", "provider", "physician", "nurse", "contact", "emergency contact",
)
# credentials after a name
CREDENTIALS = ("md", "m.d.", "d.o.", "rn", "r.n.", "np", "pa-c", "phd", "ph.d.", "fnp", "cnm", "crna", "lpn", "msw", "lcsw", "dds", "dpm", "facs", "facp", "bsn", "msn", "rn/bsn", "bsn/rn", "rrt")

HOSPITAL_WORDS = (
    "hospital", "hosp", "medical center", "med ctr", "medical centre", "health center", "health centre",
    "clinic", "infirmary", "hospice", "nursing home", "rehabilitation center", "rehab center",
    "rehab hospital", "health system", "healthcare", "medical group", "memorial", "va medical center",
    "vamc", "cancer center", "children's hospital", "surgery center", "care center", "nursing center",
)
STREET_WORDS = (
    "street", "st", "avenue", "ave", "road", "rd", "boulevard", "blvd", "lane", "ln", "drive", "dr", "court",
    "ct", "place", "pl", "way", "terrace", "ter", "circle", "cir", "highway", "hwy", "parkway", "pkwy",
    "square", "sq", "trail", "pike", "turnpike", "alley", "row",
)
COMPANY_WORDS = ("inc", "inc.", "corp", "corp.", "corporation", "llc", "ltd", "ltd.", "co.", "company", "associates", "group", "pharmacy")

# words that look like names after a title or a kinship word but are not ("dr aware", "wife at bedside")
NOT_NAMES = frozenset("""
a an the and or but of in on at to for from by with without into onto over under after before about
is was were are be been being am has have had do does did will would shall should can could may might
must not no yes none aware notified informed called paged came come comes visited visiting visit
visits here there this that these those who which what when where why how all any each every some
her his him he she they them their its it our we us you your my me i also just still now then
present bedside called updated spoke spoken talked discussed seen saw see sees evaluated examined
following follow follows f/u ordered orders order wrote note notes aware. made make makes said says
states stated report reports reported feels felt wants wanted asked asks agrees agreed
ok okay well very much more most less least same other another such only own so too again
team service staff on-call oncall covering cover rounds rounding plan plans per re regarding
in. at. to. home room floor unit icu ccu micu sicu ed er or pacu nicu ward
pt patient patients pts family members member dtr son. husband. wife. in-law in-laws
""".split())

# words of nursing and clinical shorthand that follow a title or kinship word, or stand capitalized
CLINICAL_WORDS = frozenset("""
line lines sat sats today tonight tomorrow yesterday catheter cath gi w w/ w/o wo needed readings admission
please doing review renal died unclear peep sbp dbp hr bp rr abg abgs cxr ct mri ekg ecg echo iv po pr prn
npo ngt ogt ett foley picc cvp svt vt af afib nsr st sb ivf ns lr d5w kcl mg ca k na bun cr wbc hct hgb plt
inr ptt pt/inr lopressor heparin lasix haldol ativan morphine dilaudid insulin coumadin levophed dopamine
neo pressors vent trach cpap bipap ps fio2 o2 nc nrb rn md np ho icu micu sicu ccu csru nicu ed er or pacu
cardiology surgery medicine neuro resp cv gu id heme onc social skin access plan assessment family
team aware notified called paged updated discussed spoke visited visiting bedside given held increased
decreased started stopped continued changed remains remained pain lungs abd extremities monitor
""".split())

# common words that also occur as given names; a dictionary match on them needs a second cue
AMBIGUOUS_NAMES = frozenset("""
will may june april august mark bill rose grace hope faith joy art pat sue don ray rich
max jack frank gene dawn summer autumn iris ruby pearl amber crystal page chase lance wade
hunter mason carter tucker cash brandy chance christian constance destiny harmony melody
penny sandy sky star sunny lily daisy heather holly ivy violet jasmine jade mercedes porsche
ali al ed ben dean drew earl glen guy hal ira jan jay jean joe king lee les lou mac mae
mo ned norm rod ron roy sal sam ted tom val van von
young white black brown green gray grey long short small little strong hill hall wood woods
price rice bell bush page north south east west love moody sharp wise ward street
aline till cal meg eve om dev reuben mallory tanish rusty pink sig reg bo ced pleasant relief asa
sharp mae ant
""".split())


# wordfreq's most frequent English words: the first DICTIONARY_SIZE are dictionary words
# (down to a Zipf frequency of about 1.9: "sputum" and "hematoma" are in, "masci" is not), the
# first FREQUENT_SIZE (Zipf >= ~4.2: "hoping", "friends") are too frequent to be a name that
# the name lists lack. wordfreq counts names as words, so the listed names are taken out.
DICTIONARY_SIZE = 100_000
USUAL_SIZE = 20_000
FREQUENT_SIZE = 5_000
_NON_NAME_SUFFIXES = ("ing", "ed", "ly", "ies", "tion", "sion", "ment", "ness", "ity", "ous", "ive", "able", "ible", "ful", "less", "ize", "ise")


@lru_cache(maxsize=1)
def _wordfreq_sets() -> Tuple[FrozenSet[str], FrozenSet[str], FrozenSet[str]]:
    from wordfreq import top_n_list

    first, last = person_names()
    names = first | last
    ranked = top_n_list("en", DICTIONARY_SIZE)
    keep = [w for w in ranked if w.isalpha() and w not in names]
    usual, frequent = set(ranked[:USUAL_SIZE]), set(ranked[:FREQUENT_SIZE])
    return frozenset(keep), frozenset(w for w in keep if w in frequent), frozenset(w for w in keep if w in usual)


@lru_cache(maxsize=1)
def usual_words() -> FrozenSet[str]:
    """The `USUAL_SIZE` most frequent English words that are not listed names, plus `common_words()`."""
    return _wordfreq_sets()[2] | common_words()


@lru_cache(maxsize=1)
def dictionary_words() -> FrozenSet[str]:
    """English words that are not in the name lists (wordfreq's `DICTIONARY_SIZE` most
    frequent, less the listed names) plus `common_words()`."""
    return _wordfreq_sets()[0] | common_words()


@lru_cache(maxsize=200_000)
def plain_word(low: str) -> bool:
    """Whether a lower-case word is an ordinary English word rather than a name the name
    lists lack: a common or clinical word, one of the most frequent English words, or a
    dictionary word with the ending of a verb form, an adverb or a derived noun or adjective
    ("requesting", "appropriately", "unsuccessful"), or the plural of a dictionary word."""
    first, last = person_names()
    if low in first or low in last:
        return False
    if low in common_words():
        return True
    dictionary, frequent, _ = _wordfreq_sets()
    if low in frequent:
        return True
    if low not in dictionary:
        return False
    if low.endswith(_NON_NAME_SUFFIXES):
        return True
    return low.endswith("s") and (low[:-1] in dictionary or low[:-1] in common_words())


@lru_cache(maxsize=1)
def common_words() -> FrozenSet[str]:
    """Words that are not names: faker's English word list (971 common words), the clinical
    shorthand above and `NOT_NAMES`."""
    provider = importlib.import_module("faker.providers.lorem.en_US").Provider
    return frozenset(w.lower() for w in provider.word_list) | CLINICAL_WORDS | NOT_NAMES


def ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@lru_cache(maxsize=1)
def person_names() -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """(first names, last names), lowercased ASCII, from faker's name tables."""
    first, last = set(), set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr, target in (("first_names", first), ("first_names_male", first), ("first_names_female", first), ("last_names", last)):
            for name in getattr(provider, attr, None) or ():
                folded = ascii_fold(name).strip().lower()
                if len(folded) > 1 and folded.replace("-", "").replace("'", "").replace(" ", "").isalpha():
                    target.add(folded)
    # the given names and nicknames of the `nicknames` package ("rob", "phyl", "vinny")
    common = common_words()
    for name in _nicknames():
        if len(name) > 1 and name.isalpha() and name not in common:
            first.add(name)
    return frozenset(first), frozenset(last)


def _nicknames() -> List[str]:
    import csv
    import importlib.resources

    out = []
    with importlib.resources.files("nicknames").joinpath("names.csv").open(encoding="utf8") as f:
        for row in csv.DictReader(f):
            out += [row["name1"].strip().lower(), row["name2"].strip().lower()]
    return out


@lru_cache(maxsize=1)
def surrogate_names() -> Tuple[List[str], List[str]]:
    """(first names, last names) to draw surrogates from: the US lists, sorted (stable draws)."""
    provider = importlib.import_module("faker.providers.person.en_US").Provider
    first = sorted(set(provider.first_names_male) | set(provider.first_names_female))
    last = sorted(set(provider.last_names))
    return first, last


@lru_cache(maxsize=1)
def surrogate_places() -> Tuple[List[str], List[str]]:
    """(street names, city names) to draw surrogates from, made from faker's US tables."""
    provider = importlib.import_module("faker.providers.address.en_US").Provider
    _, last = surrogate_names()
    cities = sorted({f"{p} {c}" for p in provider.city_prefixes for c in last[:40]} | {f"{c}{s}" for c in last[:60] for s in provider.city_suffixes})
    streets = sorted({f"{n} {s}" for n in last[40:120] for s in provider.street_suffixes[:20]})
    return streets, cities
