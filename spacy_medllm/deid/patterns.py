"""Regular expressions and dictionary rules that find PHI in note text.

Each rule yields `(start, end, label)` character spans over the raw text; the component
aligns them to tokens. The rules are written for recall: a leak is the costly error.

Labels: NAME, DATE, AGE, PHONE, FAX, EMAIL, URL, IP, ID, STREET, CITY, STATE, ZIP, HOSPITAL,
ORGANIZATION, LOCATION (a place of no finer type, e.g. a country or a ward).
"""
import regex as re
from functools import lru_cache
from typing import Callable, Iterator, List, Optional, Pattern, Sequence, Tuple

from .lexicon import (
    common_words, dictionary_words, plain_word, usual_words, AMBIGUOUS_NAMES, CLINICAL_WORDS, CLINICIAN_TITLES, COMPANY_WORDS, COUNTRIES, CREDENTIALS, HOSPITAL_WORDS,
    KIN_WORDS, NAME_HEADERS, NOT_NAMES, PERSON_TITLES, STREET_WORDS, US_CITIES, US_STATE_ABBR,
    US_STATES, person_names,
)

Match = Tuple[int, int, str]

LABELS = (
    "NAME", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "URL", "IP", "ID", "STREET", "CITY", "STATE", "ZIP",
    "HOSPITAL", "ORGANIZATION", "LOCATION",
)
# how long-standing overlaps are resolved: earlier labels win over later ones at equal length
PRIORITY = {label: i for i, label in enumerate(("EMAIL", "URL", "IP", "DATE", "PHONE", "FAX", "ID", "AGE", "STREET", "ZIP", "HOSPITAL", "ORGANIZATION", "CITY", "STATE", "NAME", "LOCATION"))}

MONTHS_FULL = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december")
MONTHS_ABBR = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
_MON = r"(?:" + "|".join(MONTHS_FULL) + r"|" + "|".join(m for m in MONTHS_ABBR if m != "may") + r")\.?"
_MON_OR_MAY = r"(?:" + "|".join(MONTHS_FULL) + r"|" + "|".join(MONTHS_ABBR) + r")\.?"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MONTH_NUM = r"(?:0?[1-9]|1[0-2])"
_YEAR4 = r"(?:1[89]\d\d|20\d\d|21\d\d)"
_YEAR = r"(?:" + _YEAR4 + r"|'?\d\d)"
_ORD = r"(?:st|nd|rd|th)?"
I = re.IGNORECASE


def _words(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


# --- dates ------------------------------------------------------------------------------
_HISTORY_EVENTS = (
    "mi", "nqwmi", "imi", "ami", "stemi", "nstemi", "cabg", "redo cabg", "redo", "cva", "tia", "ptca", "pci", "stent", "stents",
    "avr", "mvr", "ppm", "pacer", "aicd", "icd", "ablation", "cath", "repair", "resection", "nephrectomy", "lobectomy",
    "cholecystectomy", "appendectomy", "turp", "tah/bso", "tah", "hysterectomy", "mastectomy", "colectomy", "amputation",
    "dx", "dx'd", "diagnosed",
)
DATE_PATTERNS: List[Pattern] = [
    # 2087-03-14, 2087/3/14, 2087.03.14
    re.compile(r"(?<![\d/.-])" + _YEAR4 + r"([-/.])" + _MONTH_NUM + r"\1" + _DAY + r"(?![\d/-])"),
    # 03/14/2087, 3-14-87, 3.14.2087
    re.compile(r"(?<![\dxX/])(?<![\d/.]-)(?<!\d\.)" + _MONTH_NUM + r"([-/.])" + _DAY + r"\1" + _YEAR + r"(?![\d/-])(?!\.\d)"),
    # 14/03/2087 (day first, when the first part cannot be a month)
    re.compile(r"(?<![\dxX/.-])(?:1[3-9]|2\d|3[01])([-/.])" + _MONTH_NUM + r"\1" + _YEAR + r"(?![\d/-])(?!\.\d)"),
    # 3/14, 03/14 (no year); not a common fraction, a vent setting or a ratio inside a longer number
    re.compile(
        r"(?<![\dxX/])(?<![\d/.:]-)(?<![\d/.:-]:)(?<!\d\.)(?<!\b(?:peep|ps|psv|cpap|bipap|ipap|epap|support|settings?|imv|simv|ac|ratio|bp|i:e|ie|vent)\s*)(?!(?:1/[2-8]|2/3|3/4|3/8|5/8|7/8)(?![\d/]))"
        + _MONTH_NUM + r"/" + _DAY + r"(?![\d/]|\.\d|\s*(?:tabs?|tablets?|strength|ns\b|inch|in\b|cm|mg|ml|cc|units?|dose|of\b|way|cup|bottle|liter))", I
    ),
    # 8/88, 8/1988 (month and year)
    re.compile(r"(?<![\dxX/])(?<![\d/.:]-)(?<![\d/.:-]:)(?<!\d\.)" + _MONTH_NUM + r"/(?:3[2-9]|[4-9]\d|" + _YEAR4 + r")(?![\d/]|\.\d)"),
    # 14-Mar-2087, 14 March 2087, 14 Mar 87, 14th of March, 14-MAR
    re.compile(r"(?<![\w.-])" + _DAY + _ORD + r"(?:[-\s/.]|\s+of\s+)" + _MON + r"(?:[-\s/.,]+" + _YEAR + r")?(?![a-z\d])", I),
    # March 14th, Mar 14, 2087, March 14 '87, May 14
    re.compile(r"\b" + _MON_OR_MAY + r"[-\s]?" + _DAY + _ORD + r"(?:,?[-\s]+" + _YEAR + r")?(?![\d:])", I),
    # March 2087, Mar-2087, March of 2087
    re.compile(r"\b" + _MON_OR_MAY + r"(?:[-\s,]+|\s+of\s+)" + _YEAR4 + r"\b", I),
    # a date run into a history abbreviation ("fx4/97", "hx:3/2/01", "dx 9/99" is above)
    re.compile(r"(?<=\b(?:fx|hx|dx|tx|sx|bx|cx|s/p)[:.-]?)" + _MONTH_NUM + r"/(?:" + _DAY + r"/" + _YEAR + r"|3[2-9]|[4-9]\d|" + _YEAR4 + r")(?![\d/]|\.\d)", I),
    # a year with an apostrophe after an abbreviation ("prostate CA'88", "MI'92")
    re.compile(r"(?<=\b[A-Z]{2,5})'\d\d\b(?!\s*(?:mg|ml|cc|kg|lb|%))"),
    # '92 (apostrophe year), the 1980s, 1990's
    re.compile(r"(?<![\w'])'\d\d\b(?!\s*(?:mg|ml|cc|kg|lb|%))", I),
    re.compile(r"\b(?:1[89]|20)\d0'?s\b", I),
    # a four-digit year 1900-2099 not followed by a unit and not a time ("at 2000", "@ 1900")
    re.compile(
        r"(?<![\d.,:/#$x=-])(?<!(?:@|~|\b(?:at|by|until|till|til|around|approx|approximately|about|due|q|x))\s*)"
        r"(?:19\d\d|20\d\d)(?![\d.,]\d|\s*(?:-|to)\s*\d{4}\s*(?:hrs?|h)\b|\s*(?:-|to)\s*(?:0\d|1[0-8]|2[1-4])\d\d\b|\s*(?:mg|mcg|ml|cc|units?|u\b|kg|g\b|gm|mmhg|hrs?\b|h\b|calories|kcal|cal\b|ml/|/|:|%|x\b|pm\b|am\b|hours|o'?clock))",
        I,
    ),
    # two-digit years of a history: after an event ("NQWMI 13.", "CABG 81, Redo CABG 84") or before one ("09 PTCA")
    re.compile(r"(?<=\b(?:" + _words(_HISTORY_EVENTS) + r") )'?\d\d'?(?=\s*[,.;)]|\s*$|\s+(?:and|&|c/b|w/|s/p)\b)", I),
    re.compile(r"(?<=\b(?:in|since|" + _words(_HISTORY_EVENTS) + r") )\d\d'(?![\w'])", I),
    re.compile(r"(?:(?<=[.,;:] )|(?<=^))'?\d\d(?= (?:" + _words(_HISTORY_EVENTS) + r")\b)", I | re.M),
    # two-digit year after a year cue ("in 92", "since 95", "class of 85")
    re.compile(r"(?<=\b(?:in|since|circa|dx|dx'd|diagnosed) )(?:19)?[3-9]\d(?=\s*[,.;)]|\s*$|\s+(?:and|or|with|s/p)\b)", I),
]
WEEKDAY_DATE = re.compile(r"\b(?:mon|tues?|wed|thur?s?|fri|sat|sun)(?:day)?,?\s+(?=" + _MON_OR_MAY + r")", I)
HOLIDAYS = re.compile(r"\b(?:christmas(?: eve| day)?|thanksgiving|easter|new year'?s(?: eve| day)?|independence day|memorial day|labor day|hanukkah|ramadan|halloween|valentine'?s day)\b", I)

# --- ages over 89 -----------------------------------------------------------------------
_UNITS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_AGE_WORDS = r"(?:ninety(?:[-\s](?:" + "|".join(_UNITS) + r"))?|one[-\s]hundred(?:(?:[-\s]and)?[-\s](?:" + "|".join(_UNITS + ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]) + r"))?|a hundred|hundred)"
_AGE_NUM = r"(?:9\d|1[01]\d|12[0-5])"
_AGE_UNIT = r"(?:-|\s)?(?:y\.?o\.?\b|y/o|yo\b|yrs?\b|years?\b|year-old|y\b|yr-old|yoa\b|y\.o\b)"
AGE_PATTERNS: List[Pattern] = [
    re.compile(r"(?<![\d.])" + _AGE_NUM + r"(?=" + _AGE_UNIT + r")", I),
    re.compile(r"(?<=\bage )" + _AGE_NUM + r"\b|(?<=\baged )" + _AGE_NUM + r"\b|(?<=\bage: )" + _AGE_NUM + r"\b|(?<=\bage of )" + _AGE_NUM + r"\b", I),
    re.compile(r"\b" + _AGE_WORDS + r"(?=(?:-|\s)(?:years?|yrs?|year-old)\b)", I),
    re.compile(r"(?<=\bin (?:her|his) )(?:90s|nineties)\b|\b(?:nonagenarian|centenarian)\b", I),
]

# --- contact ----------------------------------------------------------------------------
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|io|us|info|biz)(?:/[^\s<>\"')\]]*)?\b", I)
IP = re.compile(r"(?<![\d.])(?<!\d/)(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.]\d)")
_EXT = r"(?:\s*(?:x|ext\.?|extension|#)\s*\d{1,6})?"
PHONE_PATTERNS: List[Pattern] = [
    # (410) 555-1234, 410-555-1234, 410.555.1234, 410/555/1234, +1 410 555 1234, 1-800-555-1234
    re.compile(r"(?<!\d)(?<!\d-)(?:\+?1[-.\s]?)?(?:\(\d{3}\)\s?|\d{3}(?:[-./]\s?|\s))\d{3}(?:[-./]\s?|\s)\d{4}(?!\d)" + _EXT, I),
    # 240444-1243: ten digits, the area code run into the exchange
    re.compile(r"(?<![\d/.-])\d{6}-\d{4}(?![\d-])" + _EXT, I),
    # 555-1234 (seven digits)
    re.compile(r"(?<![\d/.-])\d{3}-\d{4}(?![\d-])(?!\s*(?:cc|ccs|ml|mls|mg|units?|u\b|mcg|hrs?|kcal|cal|gm?\b|kg|%))" + _EXT, I),
    # extensions, pagers and beepers: "x45", "ext 1234", "pager 12345", "beeper #54321"
    re.compile(r"(?<=\bext\.? )\d{2,6}\b|(?<=\bext)\d{2,6}\b|(?<=\bextension )\d{2,6}\b", I),
    # 410 555 1234 and 202 2671093 (spaces only, after a phone cue or in parentheses)
    re.compile(r"(?:(?<=\b(?:at|phone|tel|cell|call|reached|number)\s*)|(?<=[#(]\s*))\d{3}[\s-]\d{3}[\s-]?\d{4,5}(?!\d)", I),
    re.compile(r"(?<=\b(?:pager|beeper|beep|pgr|pg|page|cell|phone|tel|telephone|mobile|fax|call|ph|contact|number|no|#)[ :#.])\s*#?\s*\d{3,6}(?:[-\s]\d{3,5})?\b", I),
    re.compile(r"(?<=\b(?:pager|beeper|beep|pgr|pg|page|cell|phone|tel|telephone|mobile|fax|call|ph)[ :#.]{2})\s*\d{3,6}\b", I),
]
FAX_CUE = re.compile(r"\bfax\b[\s:#.]*$", I)

# --- identifiers ------------------------------------------------------------------------
SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_ID_CUES = [
    "mrn", "mr#", "mr #", "mr no", "medical record number", "medical record no", "medical record #", "medical record",
    "record number", "record no", "record #", "unit no", "unit number", "acct", "acct#", "account", "account number",
    "account no", "ssn", "social security", "social security number", "ss#", "license", "licence", "license number",
    "lic", "lic#", "dea", "dea#", "npi", "upin", "serial", "serial number", "serial no", "sn", "s/n", "device",
    "device id", "model", "lot", "policy", "policy number", "member id", "member #", "insurance id", "group number",
    "id", "id#", "id number", "pt id", "patient id", "case number", "case #", "case no", "accession", "accession number",
    "specimen", "specimen number", "job", "job number", "job #", "order number", "claim", "claim number",
    "plate", "plate number", "vin", "passport", "badge",
]
ID_CUED = re.compile(r"(?<![\w])(?:" + _words(_ID_CUES) + r")\s*(?:number|no\.?|num|#|nbr)?\s*[:#=]?\s*(?:is\s+)?([A-Z]{0,4}[-#]?\d[\d-]{2,}[A-Z0-9-]*)(?![.,]\d)(?!\w)", I)
LONG_NUMBER = re.compile(r"(?<![\w.,/-])(?:[A-Z]{1,3}-?)?\d{6,}(?:-\d+)?(?![\w.,/]\d|\w)")
MIXED_ID = re.compile(r"(?<![\w-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z]{1,4}-?\d{4,}[A-Z0-9]*(?![\w-])")

# --- places -----------------------------------------------------------------------------
_CAP = r"(?:[A-Z][a-zA-Z'.&-]*|St\.|Mt\.)"
_TITLE_WORD = r"(?:[A-Z][a-z][a-zA-Z'.-]*|St\.|Mt\.)"
_STREET = _words(STREET_WORDS)
STREET_PATTERNS: List[Pattern] = [
    re.compile(r"(?<![#\w])\d{1,6}[A-Z]?\s+(?:[NSEW]\.?\s+|North\s+|South\s+|East\s+|West\s+)?(?:(?:[A-Z][a-z][\w'.-]*|\d+(?:st|nd|rd|th))\s+){1,3}(?:" + _words([w.title() for w in STREET_WORDS]) + r")\b\.?(?:\s*,?\s*(?i:apt|apartment|suite|ste|unit|#|fl|floor)\.?\s*#?\s*[\w-]+)?"),
    re.compile(r"\bp\.?\s?o\.?\s+box\s+\d+\b", I),
]
ZIP_PATTERNS: List[Pattern] = [
    re.compile(r"(?<=\b(?:" + "|".join(US_STATE_ABBR) + r"))[\s,]+\d{5}(?:-\d{4})?\b"),
    re.compile(r"(?<=\b(?:" + _words([s.lower() for s in US_STATES]) + r"))[\s,]+\d{5}(?:-\d{4})?\b", I),
    re.compile(r"(?<=\bzip)(?:\s*code)?[\s:#]*\d{5}(?:-\d{4})?\b", I),
    re.compile(r"(?<![\d-])\d{5}-\d{4}(?![\d-])"),
]
STATE_NAME = re.compile(r"\b(?:" + _words(US_STATES) + r")\b", I)
# "Baltimore, MD", "Towson MD 21204": a state code only after a capitalized word and a comma or before a ZIP
STATE_ABBR = re.compile(r"(?<=\b[A-Z][a-z]+), (?:" + "|".join(US_STATE_ABBR) + r")(?=\s*(?:[.,;)\n]|$|\d{5}))|(?<=[A-Za-z] )(?:" + "|".join(US_STATE_ABBR) + r")(?=,?\s+\d{5}\b)")
CITY_BEFORE_STATE = re.compile(
    r"\b((?:" + _TITLE_WORD + r"\s){0,2}" + _TITLE_WORD + r")(?:,\s*(?P<abbr>" + "|".join(US_STATE_ABBR) + r")\b(?![a-z]|\s*:)|,?\s+(?:" + _words(US_STATES) + r")\b)"
)
# "Pierce County", "Anne Arundel County": a county is a geographic subdivision smaller than a state
COUNTY = re.compile(r"\b((?:" + _TITLE_WORD + r"\s){1,3})(?:County|COUNTY|Parish|PARISH)\b")
CITY_NAME = re.compile(r"\b(?:" + _words(US_CITIES) + r")\b", I)
# "THE KEELEY HOUSE", "Ronald McDonald House": a named residence
NAMED_HOUSE = re.compile(r"\b([A-Z][a-z][A-Za-z'-]+|[A-Z]{3,})\s+(?:House|HOUSE)\b")
# "on mackerer campus", "the Bayview Campus": a hospital's site
CAMPUS = re.compile(r"\b([A-Za-z][A-Za-z'-]{2,})\s+(?:campus|CAMPUS|Campus)\b")
COUNTRY = re.compile(r"\b(?:" + _words(COUNTRIES) + r")\b")
_LOWER_PLACE_CUE = re.compile(r"(?<=\b(?:lives|living|resides|lives alone|lives nearby|lives close by|moved|grew up|born)(?: alone| nearby| close by)? (?:in|to|near) )([a-z][a-z'-]+(?: [a-z][a-z'-]+)?)")
PLACE_CUE = re.compile(
    r"(?<=\b(?:works in|working in|work in|job in|lives in|living in|resides in|lives at|living at|resides at|home in|home at|resident of|moved to|moved from|native of|born in|from|transferred from|transfer from|transferred to|transfer to|tx from|tx to|trans to|trans from|visiting from|vacation in|vacationing in|returned from|travel to|traveled to|trip to|grew up in|located in|discharged to|d/c to|dc to|admitted to|admitted from|seen at|sent to|sent from|followed at|f/u at|care at|arrived from) )"
    r"((?:" + _TITLE_WORD + r")(?:\s(?:" + _TITLE_WORD + r"|of)){0,4})",
)
_HOSP = _words([w.title() for w in HOSPITAL_WORDS] + [w.upper() for w in HOSPITAL_WORDS] + list(HOSPITAL_WORDS))
HOSPITAL_PATTERNS: List[Pattern] = [
    # "Calvert Hospital", "St. Mary's Medical Center", "CALVERT HOSPITAL", "Sacred Heart"
    re.compile(r"\b((?:(?:St\.?|Saint|Mt\.?|Mount|Our Lady of|(?i:university of)|U\.?\s?of)\s+)?(?:" + _CAP + r"\s+){1,4})(?:" + _HOSP + r")\b(?:\s+(?:Hospital|Center|Centre|HOSPITAL|CENTER))?"),
    re.compile(r"\b(?:university|univ\.?|u) of [a-z]+(?: [a-z]+)?(?: medical)? (?:hospital|medical center|medical ctr|med center|med ctr|medical|hosp)\b", I),
    re.compile(r"\b(?:U|Univ\.?|UNIV\.?)(?: of| OF)? (?:[A-Z][a-z]+|[A-Z]{2,})(?= (?:ER|ED|Hospital|HOSPITAL|Medical|MEDICAL|Med|MED|Hosp|HOSP|MC)\b)"),
    # "Hospital of the University of X", "Clinic of X"
    re.compile(r"\b(?:Hospital|Clinic|Infirmary|Medical Center) (?:of|for) (?:the )?(?:" + _CAP + r"\s?){1,5}"),
    re.compile(r"\b(?:St\.|St(?=\s+[A-Z][a-z]+'s\b)|Saint|Mt\.|Mount|ST\.|SAINT)\s*(?:[A-Z][a-z]+|[A-Z]{3,})(?:'s|'S)?(?:\s+(?:[A-Z][a-z]+|[A-Z]{3,}))?"),
    re.compile(r"\b(?:Sacred Heart|Holy Cross|Good Samaritan|Beth Israel|Mass General|Mayo|Johns Hopkins|Cleveland Clinic|Kaiser|Brigham|Mercy|Presbyterian|Methodist|Baptist|Lutheran|Adventist|Shriners)\b(?!\s+(?:scissors|stand|clamps?|retractors?|forceps|needles?|tray|sutures?)\b)", I),
    re.compile(r"\b(?:VAMC|VA hospital|V\.A\.)\b"),
]
ORG_PATTERN = re.compile(r"\b(?:" + _TITLE_WORD + r"\s+){1,4}(?:" + _words([w.title() for w in COMPANY_WORDS]) + r")(?![\w])")
# words that a capitalized-sequence rule must not take as part of a place or hospital name
_LEAD_STOP = frozenset(
    "the a an to at from in of for this our same outside local another other his her their that which and or "
    "was is were been by with on as per s/p admitted transferred transfer seen sent taken via home called "
    "previous prior current new osh ed er icu ccu micu ct mri cxr or".split()
)

# --- names ------------------------------------------------------------------------------
_NAME_TOKEN = r"[A-Za-z][A-Za-z'’-]*[A-Za-z]|[A-Z]\.?"
_NAME_WORDS = r"((?:" + _NAME_TOKEN + r")(?:\s+(?:and\s+|&\s+)?(?:" + _NAME_TOKEN + r")){0,3})"
# strong titles: what follows is a name even in lower case ("dr healey", "mr.renzi")
TITLE_NAME = re.compile(r"\b(?:" + _words(PERSON_TITLES) + r")['’]?(?:\.\s*|\s+)" + _NAME_WORDS, I)
# weaker cues: what follows is a name when capitalized or in the name lists
ROLE_NAME = re.compile(r"\b(?:" + _words(CLINICIAN_TITLES) + r")\s+" + _NAME_WORDS, I)
KIN_NAME = re.compile(
    r"\b(?:" + _words(KIN_WORDS) + r")s?\b\s*(?:,|\(|named|name is|is|-|:|was|called)?\s*(?:\()?" + _NAME_WORDS, I
)
HEADER_NAME = re.compile(r"(?:^|\n|\s)(?:" + _words(NAME_HEADERS) + r")\s*:\s*" + _NAME_WORDS, I)
CREDENTIAL_NAME = re.compile(
    r"\b((?:[A-Z][A-Za-z'’-]+|[A-Z]\.)(?:\s+(?:[A-Z][A-Za-z'’-]+|[A-Z]\.)){0,3}),?\s+(?:" + _words([c.upper() for c in CREDENTIALS] + list(CREDENTIALS) + ["MD", "M.D.", "D.O.", "PhD", "PA-C"]) + r")(?![\w])"
)
LOWER_SIGNATURE = re.compile(r"(?m)(?:^|(?<=[.!?] ))\s*((?:[a-z][a-z'-]+|[a-z]\.)(?:\s+[a-z]\.?)?\s+[a-z][a-z'-]+)\s*,?\s*(?:rn|bsn|bsn/rn|rn/bsn|rn,\s*bsn|md|np|rrt|sn)\s*$")
CAP_SEQUENCE = re.compile(r"\b[A-Z][a-zA-Z'’-]+(?:\s+(?:[A-Z]\.\s+)?[A-Z][a-zA-Z'’-]+){1,2}\b")
LAST_FIRST = re.compile(r"\b([A-Z][a-zA-Z'’-]+),\s+([A-Z][a-zA-Z'’-]+)(?:\s+[A-Z]\.?)?\b")
FIRST_THEN_CUE = re.compile(
    r"\b([A-Za-z][a-z'-]+|[A-Z][A-Z'-]+)(?:\s+([A-Za-z][a-z'-]+|[A-Z][A-Z'-]+))?(?=\s+(?:called|phoned|visited|aware|notified|updated|at bedside|in to visit|came in|spoke|here|was here|left|wants|states|asked|is aware)\b)",
    I,
)
INITIAL_SURNAME = re.compile(r"(?<![/>&<\w])(?<!& )(?<!\bD )[A-Z]\.\s?([A-Z][a-z][A-Za-z'’-]+)\b")
_GENUS_SPECIES = frozenset("coli aureus difficile pneumoniae faecalis faecium influenzae epidermidis albicans cerevisiae pyogenes agalactiae aeruginosa".split())
# four letters or more capitalized, five or more in capitals: shorter ones are as often
# abbreviations ("CON", "PEG", "HOB", "GERD")
FIRST_NAME_ALONE = re.compile(r"\b(?:[A-Z][a-z]{3,}|[A-Z]{5,})\b")
# what makes a name an eponym: an instrument, a device, a disease or a sign named after a person
_EPONYM_AFTER = re.compile(
    r"-[A-Z]|/[A-Z]|\s+(?:I|II|III|IV|V)\b|(?:['’]s)?\s+[a-z]+(?:ectomy|otomy|ostomy|plasty|pexy|rrhaphy|scopy|osis)\b|"
    r"(?:['’]s?)?\s+(?:law|triad|chest|spinal|titanium|anastomosis|valve|scissors|clamps?|forceps|retractors?|catheters?|cath|tubes?|needles?|stents?|shunts?|syndrome|disease|sign|"
    r"test|maneuver|manoeuvre|procedure|operation|incision|classification|score|scale|criteria|fracture|splint|"
    r"dressing|drains?|elevators?|blades?|knife|hooks?|sphincterotome|implants?|device|pump|bag|mask|sutures?|"
    r"technique|repair|reflex|position|stitch|approach|method|bur|burr|pins?|plates?|nails?|screws?|frame|tongs|speculum|"
    r"dilators?|table|ligaments?|scalpel|protocol|esophagus|plating|system|cannula|arch|bars?|attachment|stirrups|"
    r"vacuum|silk|pressures?|mechanical|knot|dog|ulcer|cyst|node|space|line|gland|duct|canal|fascia|pouch|stage|"
    r"staging|grade|grading|type|index|number|dilation|filter|drape|sponge)\b",
    I,
)
_HYPHEN_NAME = re.compile(r"-([A-Z][a-z]+|[A-Z]{3,})\b")
# given names of the lists that are, in notes, a drug, a rhythm or an exclamation
_NOT_GIVEN_NAMES = frozenset("brady allegra ginger jesus gerd ally kill perla german".split())
FIRST_LAST_ANY = re.compile(r"\b([A-Za-z][a-z'-]+|[A-Z][A-Z'-]+)\s+([A-Za-z][a-z'-]+|[A-Z][A-Z'-]+)\b")

# --- MIMIC placeholders -----------------------------------------------------------------
PLACEHOLDER = re.compile(r"\[\*\*(.*?)\*\*\]", re.DOTALL)
_PLACEHOLDER_TYPES = [
    (re.compile(r"e-?mail", I), "EMAIL"),
    (re.compile(r"\burl\b|web", I), "URL"),
    (re.compile(r"\bip\b", I), "IP"),
    (re.compile(r"fax", I), "FAX"),
    (re.compile(r"telephone|phone|pager|beeper", I), "PHONE"),
    (re.compile(r"age over 90|age over 89", I), "AGE"),
    (re.compile(r"street|apartment|address", I), "STREET"),
    (re.compile(r"hospital|wardname|ward name|clinic", I), "HOSPITAL"),
    (re.compile(r"company|university|college|organization", I), "ORGANIZATION"),
    (re.compile(r"\bstate\b", I), "STATE"),
    (re.compile(r"zip|postal", I), "ZIP"),
    (re.compile(r"\bcity\b|town", I), "CITY"),
    (re.compile(r"country|location|\bplace\b", I), "LOCATION"),
    (re.compile(r"number|\bno\b|\bid\b|serial|medical record|social security|ssn|account|license|clip|job|unit|provider|md number|dictator", I), "ID"),
    (re.compile(r"name|doctor|initials|first|last|known", I), "NAME"),
    (re.compile(r"date|month|year|day|holiday|season|\d{4}-\d{1,2}|\d{1,2}-\d{1,2}|\d{1,2}/\d{1,4}|^\s*\d{4}\s*$", I), "DATE"),
]


def placeholder_label(content: str) -> str:
    """The PHI type of a MIMIC `[** ... **]` placeholder, from its content."""
    for pattern, label in _PLACEHOLDER_TYPES:
        if pattern.search(content):
            return label
    return "ID" if re.search(r"\d", content) else "NAME"


@lru_cache(maxsize=1)
def _name_sets():
    first, last = person_names()
    return first, last, first | last


def _name_like(word: str, strong: bool) -> bool:
    """Whether `word` may be (part of) a name after a cue. After a strong cue (a title) any
    word that is not a common or clinical word will do; after a weak one it must also be
    capitalized or in the name lists."""
    w = word.strip(".,'’-")
    low = w.lower()
    if not w:
        return False
    if len(w) == 1:
        return w.isupper()
    first, last, both = _name_sets()
    # after a title, a capitalized word in mixed case is a name even when it is an English
    # word ("Dr. Art White", "Dr. Green"); in capitals or lower case it must not be one
    titled = strong and w[0].isupper() and not w.isupper()
    if low in common_words() and low not in both and not titled:
        return False
    if low in NOT_NAMES or low in _LEAD_STOP or low in PERSON_TITLES or low in KIN_WORDS or low in CLINICIAN_TITLES:
        return False
    if strong:
        return True
    # after a weak cue an ordinary English word is no name ("WIFE REQUESTING", "SON SEEMS"),
    # and in capitals, no usual word is ("NP STOOL", "NP COUGH")
    if plain_word(low):
        return False
    if w.isupper() and len(w) > 1:
        return low in both or low not in usual_words()
    return w[0].isupper() or low in both


def _name_run(text: str, start: int, end: int, strong: bool) -> List[Tuple[int, int]]:
    """The leading run of name words of text[start:end] ("and" may join two), as one span."""
    run: List[Tuple[int, int]] = []
    pending_and = False
    for m in re.finditer(r"[A-Za-z][A-Za-z'’.]*(?:-[A-Za-z][A-Za-z'’.]*)*|&", text[start:end]):
        word = m.group(0)
        # a hyphen joins a name to the next word only when that word is no English word
        # ("williams-nuzzo", "Smith-Jones"; "Rob-who" is Rob)
        parts = word.split("-")
        keep = 1
        while keep < len(parts) and parts[keep] and not plain_word(parts[keep].lower().rstrip(".")):
            keep += 1
        word = "-".join(parts[:keep])
        if word.endswith(("'s", "'S", "’s")):
            word = word[:-2]
        if word.lower() in ("and", "&") and run and not pending_and:
            pending_and = True
            continue
        bare = word.rstrip(".")
        # "A" and "I" without a period are the article and the pronoun ("WIFE IS A NURSE");
        # after a weak cue any lone letter needs its period ("GIVEN MOM X1")
        if len(bare) == 1 and not word.endswith(".") and (bare in ("A", "I") or not strong):
            break
        # a strong cue vouches for the first word; later lower-case words must be in the name lists
        first_word = not run
        if not _name_like(bare, strong and first_word):
            break
        if not first_word and bare.islower() and len(bare) > 1 and bare.lower() not in _name_sets()[2]:
            break
        s = start + m.start()
        e = s + (len(word) if len(bare) == 1 and word.endswith(".") else len(bare))
        run.append((s, e))
        pending_and = False
    return run


def _spans_of_run(run: List[Tuple[int, int]], text: str) -> List[Tuple[int, int]]:
    """Contiguous pieces of a run (two names joined by "and" give two spans)."""
    out: List[Tuple[int, int]] = []
    for s, e in run:
        if out and re.fullmatch(r"[\s.]*", text[out[-1][1] : s]):
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def find_names(text: str) -> Iterator[Match]:
    """Names by context (titles, credentials, kinship words, headers) and by the name lists."""
    first, last, both = _name_sets()
    common = common_words()
    for pattern, strong in ((TITLE_NAME, True), (ROLE_NAME, False), (KIN_NAME, False), (HEADER_NAME, False)):
        for m in pattern.finditer(text, overlapped=True):
            # "MS" or "ms" without a period is as often mental status as a title
            cue_strong = strong and m.group(0)[:3].rstrip(". ") not in ("MS", "ms")
            for s, e in _spans_of_run(_name_run(text, m.start(1), m.end(1), cue_strong), text):
                yield s, e, "NAME"
    for pattern in (CREDENTIAL_NAME, LOWER_SIGNATURE):
        for m in pattern.finditer(text):
            words = list(re.finditer(r"[A-Za-z][A-Za-z'’.-]*", m.group(1)))
            # the trailing words that are not common words ("seen by Smith MD" -> Smith)
            keep = []
            for w in reversed(words):
                bare = w.group(0).rstrip(".")
                if not _name_like(bare, strong=True):
                    break
                # in capitals a usual English word is no name ("LUNGS COARSE, RN", "AT TIMES MD AWARE")
                if bare.isupper() and len(bare) > 1 and bare.lower() not in both and bare.lower() in usual_words():
                    break
                keep.append(w)
            # an initial alone before a credential is no name ("ABG'S. MD AWARE")
            if keep and any(len(w.group(0).rstrip(".")) > 1 for w in keep):
                yield m.start(1) + keep[-1].start(), m.start(1) + keep[0].end(), "NAME"
    for m in LAST_FIRST.finditer(text, overlapped=True):
        a, b = m.group(1).lower(), m.group(2).lower()
        if a in last and b in first and a not in common and b not in common:
            yield m.start(), m.end(), "NAME"
    for m in CAP_SEQUENCE.finditer(text, overlapped=True):
        words = m.group(0).split()
        w0, wn = words[0].lower(), words[-1].lower()
        if w0 in first and w0 not in AMBIGUOUS_NAMES and w0 not in common and not plain_word(wn) and (wn in last or len(words) == 2):
            if len(words) == 2 and _EPONYM_AFTER.match(text, m.start() + len(words[0])):
                continue  # "DOUGLAS POUCH", "Jackson Table"
            yield m.start(), m.end(), "NAME"
    # an initial and a surname ("Reported to D. Phyl.")
    for m in INITIAL_SURNAME.finditer(text):
        low = m.group(1).lower()
        if low not in _GENUS_SPECIES and (low in both or low not in dictionary_words()):
            yield m.start(), m.end(), "NAME"
    # a given name from the lists and a word that is no common word ("patty hoeller", "GERRY MASCI")
    for m in FIRST_LAST_ANY.finditer(text, overlapped=True):
        a, b = m.group(1).lower(), m.group(2).lower()
        if a in first and a not in AMBIGUOUS_NAMES and a not in common and not plain_word(b) and (b in last or len(b) > 3) and m.group(2)[0].isalpha():
            if (m.group(1).islower() == m.group(2).islower()) and not b.endswith(("ing", "ed", "ly", "tion")) and not _EPONYM_AFTER.match(text, m.end(1)):
                yield m.start(), m.end(), "NAME"
    # a given name alone, capitalized or in capitals ("PER DAVID, HE HAS", "Maria is at bedside"):
    # only names that are no English word and no clinical word
    # a word the same note also writes in lower case is an ordinary word there ("Cord was
    # infiltrated ... the spermatic cord")
    lower_words = set(re.findall(r"\b[a-z]{4,}\b", text))
    # in a note written in mixed case, a word in capitals is an acronym ("ELISA"), not a name
    mixed_case = sum(ch.islower() for ch in text) > sum(ch.isupper() for ch in text)
    for m in FIRST_NAME_ALONE.finditer(text):
        word = m.group(0)
        low = word.lower()
        double = _HYPHEN_NAME.match(text, m.end())
        if double and double.group(1).lower() in first and low in first:
            yield m.start(), double.end(), "NAME"  # "Mary-Anne", "Jean-Pierre": not an eponym
            continue
        if _EPONYM_AFTER.match(text, m.end()) or low in lower_words or (mixed_case and word.isupper()):
            continue  # "Ahmed valve", "Steven scissors", "Wilson-Cooke sphincterotome"
        if m.start() >= 2 and text[m.start() - 1] in "-/" and text[m.start() - 2].isalpha():
            continue  # "Bard-Parker", "Austin/Youngswick"
        if low in first and low not in AMBIGUOUS_NAMES and low not in common and not plain_word(low) and low not in CLINICAL_WORDS and low not in NOT_NAMES and low not in _NOT_GIVEN_NAMES:
            yield m.start(), m.end(), "NAME"
    # a given name before "called", "visited", "aware" ... ("bill called", "george called")
    for m in FIRST_THEN_CUE.finditer(text, overlapped=True):
        a = m.group(1).lower()
        b = (m.group(2) or "").lower()
        if b and b in both and b not in common:
            if a in first and a not in common - {"bill"}:
                yield m.start(1), m.end(2), "NAME"
            else:
                yield m.start(2), m.end(2), "NAME"
        elif not b and a in first and (a not in common or a == "bill"):
            yield m.start(1), m.end(1), "NAME"
        elif b and a in first and b not in common:
            yield m.start(1), m.end(2), "NAME"
        elif b and a in first and a not in common and b in common:
            yield m.start(1), m.end(1), "NAME"


def _trim_lead(text: str, start: int, end: int) -> int:
    """Move `start` past leading words that cannot begin a proper name ("the", "to", ...)."""
    for m in re.finditer(r"\S+", text[start:end]):
        if m.group(0).lower().strip(".,") in _LEAD_STOP:
            continue
        return start + m.start()
    return end


_GENERIC_TAIL = re.compile(
    r"(?:\s+(?:hospital|hosp|medical cent(?:er|re)|med ctr|medical|health cent(?:er|re)|cent(?:er|re)|clinic|infirmary|house|assisted(?: living)?|nursing(?: home)?|facility))+\.?$", I
)
_CUT_WORDS = _LEAD_STOP - {"of"}
_SENTENCE_END = re.compile(r"(?<!\b(?:St|Mt|Ft|Jr|Sr|ST|MT|FT|JR|SR|[A-Z]))\.(?=\s)")
_VERBS_BEFORE_PLACES = frozenset("leave left go going come coming back get got return stay be being in out".split())
# "transferred from Labor And Delivery Room": a unit of the same hospital, not a place
_UNIT_WORDS = frozenset("room unit floor ward department dept bay suite service area lab laboratory icu er ed or pacu pharmacy".split())
_GENERIC_WORDS = frozenset("hospital hosp center centre medical clinic infirmary hospice healthcare rehab".split())


def _hospital_name(text: str, start: int, end: int) -> Optional[Tuple[int, int]]:
    """The name in a hospital match: without the words before it that cannot be part of a
    name ("CONTINUED HYPOTENSION AT CALVERT HOSPITAL" -> "CALVERT"), and without the generic
    words after it ("Harbor Hosp" -> "Harbor"; a hospital word alone is no PHI)."""
    start = _trim_lead(text, start, end)
    words = list(re.finditer(r"\S+", text[start:end]))
    cut = [w for w in words[:-1] if w.group(0).lower().strip(".,") in _CUT_WORDS]
    if cut:
        start += cut[-1].end()
        start = _trim_lead(text, start, end)
    if start >= end:
        return None
    tail = _GENERIC_TAIL.search(text[start:end])
    if tail and tail.start() > 0:
        end = start + tail.start()
    name = text[start:end].split()
    if not name or (len(name) == 1 and name[0].lower().strip(".") in _GENERIC_WORDS):
        return None
    first = name[0].lower().strip(".,")
    if first in _VERBS_BEFORE_PLACES or (first.endswith("ing") and plain_word(first)):
        return None  # "WANTED TO LEAVE HOSPITAL", "FOUND WANDERING HOSPITAL"
    return start, end


# the state codes that are also credentials after a name
_CREDENTIAL_STATES = frozenset({"MD", "PA"})


def _credential_after_name(text: str, start: int, end: int) -> bool:
    """Whether the state code text[start:end] ("MD", "PA") is a credential after a person's
    name: "Rebecca Richardson, MD" (a given name, then a capitalized word), not "Baltimore, MD"."""
    if text[start:end] not in _CREDENTIAL_STATES:
        return False
    words = re.findall(r"[A-Za-z][A-Za-z'.-]*", text[max(0, start - 60) : start])[-3:]
    first, _ = person_names()
    return len(words) >= 2 and any(w.lower().strip(".") in first for w in words[:-1]) and words[-1][:1].isupper()


_SAINT_WORD = re.compile(r"(?:ST|St|MT|Mt)\.\s*([A-Za-z]+)")


def _saint_of_common_word(name: str) -> bool:
    """Whether a "St."/"Mt." name is an abbreviation and an ordinary word: "ST. No noted
    ectopy", "ST. Stable Bp" (a saint's or a mountain's name is no English word)."""
    m = _SAINT_WORD.match(name)
    if not m:
        return False
    low = m.group(1).lower()
    return (low in common_words() or plain_word(low)) and low not in _name_sets()[2] or low in NOT_NAMES


def find_places(text: str) -> Iterator[Match]:
    for pattern in STREET_PATTERNS:
        for m in pattern.finditer(text):
            yield m.start(), m.end(), "STREET"
    for pattern in ZIP_PATTERNS:
        for m in pattern.finditer(text):
            s = m.start() + len(m.group(0)) - len(m.group(0).lstrip(" ,:#zipcodeZIPCODE"))
            yield s, m.end(), "ZIP"
    for pattern in HOSPITAL_PATTERNS:
        for m in pattern.finditer(text):
            span = _hospital_name(text, m.start(), m.end())
            if span is not None and _saint_of_common_word(text[span[0] : span[1]]):
                continue  # "SR TO ST. HIGH PRESSURES": sinus tachycardia and a new sentence
            if span is not None:
                yield span[0], span[1], "HOSPITAL"
    for m in ORG_PATTERN.finditer(text):
        s = _trim_lead(text, m.start(), m.end())
        if s < m.end() and len(text[s : m.end()].split()) > 1:
            yield s, m.end(), "ORGANIZATION"
    for m in STATE_NAME.finditer(text):
        yield m.start(), m.end(), "STATE"
    for m in STATE_ABBR.finditer(text):
        s = m.start() + len(m.group(0)) - len(m.group(0).lstrip(", "))
        if not _credential_after_name(text, s, m.end()):
            yield s, m.end(), "STATE"
    for m in CITY_BEFORE_STATE.finditer(text):
        s = _trim_lead(text, m.start(1), m.end(1))
        if s < m.end(1):
            if m.group("abbr") and _credential_after_name(text, m.start("abbr"), m.end("abbr")):
                yield s, m.end(1), "NAME"
            else:
                yield s, m.end(1), "CITY"
    for m in CITY_NAME.finditer(text):
        if not _EPONYM_AFTER.match(text, m.end()):  # "the Jackson spinal table"
            yield m.start(), m.end(), "CITY"
    for m in COUNTY.finditer(text):
        s = _trim_lead(text, m.start(1), m.end(1))
        if s < m.end(1):
            yield s, m.end(), "LOCATION"
    for m in COUNTRY.finditer(text):
        yield m.start(), m.end(), "LOCATION"
    for m in PLACE_CUE.finditer(text):
        s = _trim_lead(text, m.start(1), m.end(1))
        if s < m.end(1) and text[s : m.end(1)].lower() not in common_words():
            e = m.end(1)
            stop = _SENTENCE_END.search(text, s, e)
            if stop:
                e = stop.start()  # a place name ends with its sentence ("home in Hagerstown. Bed")
            tail = _GENERIC_TAIL.search(text[s:e])
            e = s + tail.start() if tail and tail.start() > 0 else e
            if text[e - 1] == "." and text[s:e].split()[-1][:-1].lower() not in ("st", "mt", "ft", "jr", "sr") and len(text[s:e].split()[-1]) > 2:
                e -= 1  # a sentence's period, not an abbreviation's ("St.")
            place = text[s:e].lower()
            if re.sub(r"['’]s$", "", place) in CLINICAL_WORDS or place.split()[0].rstrip(".") in PERSON_TITLES:
                continue  # "bleeding from Ct's": chest tubes; "from Dr. Vasquez": a name
            after = re.match(r"\s+([A-Za-z]+)", text[e : e + 20])
            if _EPONYM_AFTER.match(text, e) or (after and after.group(1).lower() in _UNIT_WORDS):
                continue  # "from Quinton cath", "transfer to Cardiac floor"
            if not _ordinary_after_home_cue(place) and place.split()[-1].strip(".,") not in _UNIT_WORDS:
                yield s, e, "LOCATION"
    for pattern, ordinary in ((_CAPS_HOME_CUE, _ordinary_after_home_cue), (_CAPS_WARD_CUE, dictionary_words().__contains__)):
        for m in pattern.finditer(text):
            word = m.group(1).rstrip("0123456789").lower()
            if not ordinary(word) and word not in _LEAD_STOP and word not in CLINICAL_WORDS:
                yield m.start(1), m.end(1), "LOCATION"
    for m in NAMED_HOUSE.finditer(text):
        word = m.group(1).lower()
        if word not in common_words() and not plain_word(word) and word not in _LEAD_STOP:
            yield m.start(1), m.end(1), "LOCATION"
    for m in CAMPUS.finditer(text):
        word = m.group(1).lower()
        if word not in common_words() and word not in _LEAD_STOP and word not in CLINICAL_WORDS:
            yield m.start(1), m.end(1), "LOCATION"
    lower_note = None
    for m in EMPLOYER.finditer(text):
        words = []
        for w in m.group(1).split():
            if w.lower().strip(".") in _EMPLOYER_STOP:
                break
            words.append(w)
        if not words or all(w.lower() in common_words() for w in words):
            continue
        if words[0].islower():
            if lower_note is None:
                letters = [c for c in text if c.isalpha()]
                lower_note = sum(c.isupper() for c in letters) < 0.03 * max(1, len(letters))
            if not lower_note:
                continue
        yield m.start(1), m.start(1) + len(" ".join(words)), "ORGANIZATION"
    for m in KIN_PLACE.finditer(text):
        word = m.group(1).lower()
        if not plain_word(word) and word not in _LEAD_STOP and word not in CLINICAL_WORDS:
            yield m.start(1), m.end(1), "CITY"
    for m in _LOWER_PLACE_CUE.finditer(text):
        words = m.group(1).split()
        keep = []
        for w in words:
            if _ordinary_after_home_cue(w):
                break
            keep.append(w)
        if keep:
            yield m.start(1), m.start(1) + len(" ".join(keep)), "LOCATION"


# numbers written like a date that are a ventilator setting ("PSV 10/5", "CPAP/PS 16/5/40%",
# "cpap/ps (10/5)") or cardiac output / index ("CO/CI 5/3")
# or a pain score ("CP 5/10", "pain #9/10")
_SETTING_GAP = r"(?:[\s\d%/.,:=x+(-]|\b(?:of|to|on|at|with|and|peep|ps|fio2|rate|overnight|now|currently|initially|mode|increased|decreased|weaned|down|up|back)\b){0,30}$"
_VENT_CUE = re.compile(
    r"\b(?:co/ci|peep|ps|psv|cpap|bipap|bi-pap|ipap|epap|nippv|niv|pressure support|settings?|imv|simv|a/?c|vent|"
    r"ventilation|flowby|fio2|c ?pap|trial(?:ed)?|tried on|placed on|back on|remain(?:s|ed)? on|extubated from|"
    r"wean(?:ed|ing)? (?:down |back )?(?:to|on)|change(?:d)?(?: over)? to)\b" + _SETTING_GAP, I,
)
_PAIN_CUE = re.compile(r"(?:\b(?:pain|cp|discomfort|scale|rated?|rates|c/o|h/a|headache|angina)\b|#)[\s:=#,-]*(?:\b(?:of|at|to|is|was|now|down to|up to)\b)?[\s:=#-]*$", I)
_SETTING_AFTER = re.compile(r"\s*(?:peep|ps\b|psv|cpap|bipap|fio2|ips\b|x\s?\d)", I)
_PAIN_AFTER = re.compile(r"\s*(?:cp\b|pain|chest pain|angina|discomfort|on (?:the )?pain scale|pain scale|h/a|ha\b|headache)", I)
_SLASH_NUMBERS = re.compile(r"\d{1,2}(?:/\d{1,2}){1,2}")


# an employer: "works for vista health", "employed by Acme Tool"
# (not "off work for two weeks", "employed with due caution"); lower-case words only in a
# lower-case note ("he is employed at the sales counter of a local store" is no name)
_EMPLOYER_CUE = r"\b(?:works|worked|working) (?:for|at)|\bemployed (?:by|at)|\bemployee of"
EMPLOYER = re.compile(r"(?:" + _EMPLOYER_CUE + r") (?:(?i:the) )?([A-Za-z][A-Za-z&'-]*(?: [A-Za-z][A-Za-z&'-]*){0,2})")
_EMPLOYER_STOP = frozenset(
    "and as in on of for since until but with while when because so now then here there too doing "
    "home hospital him her them us me himself herself themselves a an his their its this that some "
    "years months weeks days".split()
) | frozenset(PERSON_TITLES)
# a place where a relative is: "SON IN PIKESVILLE", "daughter in Towson" (not "SON IN LAW")
KIN_PLACE = re.compile(r"\b(?i:son|daughter|wife|husband|brother|sister|mother|father|parents|family|niece|nephew|cousin|aunt|uncle)(?: (?i:who )?(?i:lives|living))? (?i:in) ([A-Z][A-Za-z'-]{3,})\b")


# an all-caps word after a residence cue is a place unless it is an ordinary word ("LIVES IN
# ROME"); after a transfer cue, unless it is any dictionary word ("SENT TO REHAB"): wards and
# hospitals that are dictionary words are left to the hospital patterns
_CAPS_HOME_CUE = re.compile(r"(?<=\b(?:LIVES IN|LIVING IN|RESIDES IN|LIVES AT|LIVING AT|RESIDES AT|HOME IN|MOVED TO|BORN IN) )([A-Z][A-Z'-]{3,})\b")
_CAPS_WARD_CUE = re.compile(
    r"(?<=\b(?:ADMITTED TO|TRANSFERRED TO|TRANSFERRED FROM|TRANSFER TO|TRANSFER FROM|TX TO|TX FROM|TX'D TO|TX'D FROM|SENT TO|ARRIVED FROM|DISCHARGED TO|ADMITTED FROM) )([A-Z][A-Z'-]{3,}\d{0,2})\b"
)


def _ordinary_after_home_cue(low: str) -> bool:
    # "LIVES IN ROME", "lives in white marsh" but "LIVES IN FEAR", "LIVING IN ASSISTED ..."
    if low in _name_sets()[2]:
        return False
    return low in common_words() or (low.endswith(("ing", "ed", "ly", "tion", "ness", "ment")) and low in dictionary_words())


def _setting_not_date(text: str, start: int, end: int) -> bool:
    value = text[start:end]
    if not _SLASH_NUMBERS.fullmatch(value):
        return False
    parts = [int(p) for p in value.split("/")]
    if re.match(r"\s*%", text[end : end + 3]):
        return True
    before, after = text[max(0, start - 60) : start], text[end : end + 25]
    if len(parts) == 2 and parts[1] == 10 and parts[0] <= 10 and (_PAIN_CUE.search(before) or _PAIN_AFTER.match(after)):
        return True
    return all(p <= 30 for p in parts[:2]) and bool(_VENT_CUE.search(before) or _SETTING_AFTER.match(after))


_DAY_RANGE_LEAD = re.compile(r"(?<![\d/.-])" + _DAY + r"\s*(?:->|-|–|to|&)\s*$")


def find_dates(text: str) -> Iterator[Match]:
    for pattern in DATE_PATTERNS:
        for m in pattern.finditer(text):
            if not _setting_not_date(text, m.start(), m.end()):
                start = m.start()
                # the first day of a range of days ("1->2 nov, 96", "3-4 March")
                if text[start : start + 1].isdigit():
                    lead = _DAY_RANGE_LEAD.search(text[max(0, start - 8) : start])
                    if lead:
                        start -= len(lead.group(0))
                yield start, m.end(), "DATE"
    for m in HOLIDAYS.finditer(text):
        yield m.start(), m.end(), "DATE"


def find_ages(text: str) -> Iterator[Match]:
    for pattern in AGE_PATTERNS:
        for m in pattern.finditer(text):
            yield m.start(), m.end(), "AGE"


_RANGE_CUE = re.compile(r"\b(?:tv|vt|vts|volumes?|svr|pvr|sbp|dbp|hr|rr|from|between|range|ranging|approx|about)\b[\s:=]*(?:of\s+)?$", I)


def _range_not_phone(text: str, start: int, end: int) -> bool:
    """A seven-digit "ddd-dddd" that is a range: of times ("900-1000") or after a measure
    ("TV 500-1000", "SVR 954-1183")."""
    m = re.fullmatch(r"(\d{3})-(\d{4})", text[start:end])
    if not m:
        return False
    if _RANGE_CUE.search(text[max(0, start - 20) : start]):
        return True
    a, b = int(m.group(1)), int(m.group(2))
    is_time = lambda t: t // 100 <= 24 and t % 100 < 60 and t % 5 == 0
    return is_time(a) and is_time(b) and a < b


def find_contacts(text: str) -> Iterator[Match]:
    for m in EMAIL.finditer(text):
        yield m.start(), m.end(), "EMAIL"
    for m in URL.finditer(text):
        yield m.start(), m.end(), "URL"
    for m in IP.finditer(text):
        yield m.start(), m.end(), "IP"
    for pattern in PHONE_PATTERNS:
        for m in pattern.finditer(text):
            s = m.start() + len(m.group(0)) - len(m.group(0).lstrip(" #"))
            if _range_not_phone(text, s, m.end()):
                continue
            label = "FAX" if FAX_CUE.search(text[max(0, s - 12) : s]) else "PHONE"
            yield s, m.end(), label


def find_ids(text: str) -> Iterator[Match]:
    for m in SSN.finditer(text):
        yield m.start(), m.end(), "ID"
    for m in ID_CUED.finditer(text):
        yield m.start(1), m.end(1), "ID"
    for m in LONG_NUMBER.finditer(text):
        yield m.start(), m.end(), "ID"
    for m in MIXED_ID.finditer(text):
        yield m.start(), m.end(), "ID"


def find_placeholders(text: str) -> Iterator[Match]:
    for m in PLACEHOLDER.finditer(text):
        yield m.start(), m.end(), placeholder_label(m.group(1))


FINDERS: Tuple[Callable[[str], Iterator[Match]], ...] = (
    find_placeholders, find_contacts, find_ids, find_dates, find_ages, find_places, find_names,
)


def find_phi(text: str) -> List[Match]:
    """All PHI candidates of `text` as (start, end, label), before overlaps are resolved."""
    out: List[Match] = []
    for finder in FINDERS:
        for s, e, label in finder(text):
            # never end on whitespace or trailing punctuation other than an initial's period
            while e > s and (text[e - 1].isspace() or text[e - 1] in ",;:"):
                e -= 1
            while s < e and text[s].isspace():
                s += 1
            if e > s:
                out.append((s, e, label))
    return out


_MIDDLE_INITIAL = re.compile(r"\s+(?:[A-Za-z]\.?\s+)?|\s*[A-Za-z]\.\s*")


def _initial_before(text: str, start: int, name_lower: bool) -> int:
    """The start of an initial just before a name ("E. WELSH", "q. lander", "J SMITH"), or `start`."""
    j = start - 1 if start > 0 and text[start - 1] == " " else start
    if j >= 2 and text[j - 1] == "." and text[j - 2].isalpha() and (j == 2 or text[j - 3].isspace() or text[j - 3] in "(,;:"):
        letter = text[j - 2]
        if letter.isupper() or name_lower:
            return j - 2
    # a capital initial without its period ("J SMITH"); not "A" or "I", which are words
    if j == start - 1 and j >= 1 and text[j - 1].isupper() and text[j - 1] not in "AI" and (j == 1 or text[j - 2].isspace() or text[j - 2] in "(,;:"):
        return j - 1
    return start


# labels whose span is whole words: a word joined by a hyphen belongs to the name
_WORD_LABELS = frozenset({"NAME", "HOSPITAL", "ORGANIZATION", "CITY", "LOCATION"})
_HYPHEN_BEFORE = re.compile(r"[A-Za-z]+-$")
_HYPHEN_AFTER = re.compile(r"-[A-Za-z]+(?![\w-])")


def _hyphen_joined(text: str, start: int, end: int) -> Tuple[int, int]:
    """The span with the words hyphen-joined to it ("kessler-adventist" when "adventist" was
    found, "Smith-Jones" when "Smith" was), unless they are ordinary words ("Rob-who")."""
    before = _HYPHEN_BEFORE.search(text, max(0, start - 40), start)
    if before and (before.start() == 0 or not text[before.start() - 1].isalnum()) and not plain_word(before.group(0)[:-1].lower()):
        start = before.start()
    after = _HYPHEN_AFTER.match(text, end)
    if after and not plain_word(after.group(0)[1:].lower()):  # not "Rob-who"
        end = after.end()
    return start, end


def widen_names(text: str, spans: Sequence[Match]) -> List[Match]:
    """Names with their initials: an initial and a period just before a found name joins it
    ("Z. MILLER" when MILLER was found), and two names with one initial between them are one
    ("barbara j. parrilli"); a word hyphen-joined to a name or place joins it
    ("kessler-adventist"). Input and output are sorted, non-overlapping spans."""
    spans = resolve([_hyphen_joined(text, s, e) + (label,) if label in _WORD_LABELS else (s, e, label) for s, e, label in spans])
    out: List[Match] = []
    for s, e, label in spans:
        if label == "NAME":
            lower_limit = out[-1][1] if out else 0
            s2 = _initial_before(text, s, text[s:e].islower())
            if s2 >= lower_limit:
                s = s2
            if out and out[-1][2] == "NAME" and _MIDDLE_INITIAL.fullmatch(text[out[-1][1] : s]):
                prev = out.pop()
                s = prev[0]
        out.append((s, e, label))
    return out


def resolve(matches: Sequence[Match]) -> List[Match]:
    """Non-overlapping spans: overlapping candidates merge into their union, labelled by the
    longest candidate (ties by `PRIORITY`), so no character of any candidate is left out."""
    if not matches:
        return []
    ordered = sorted(matches, key=lambda m: (m[0], -m[1]))
    groups: List[List[Match]] = [[ordered[0]]]
    end = ordered[0][1]
    for m in ordered[1:]:
        if m[0] < end:
            groups[-1].append(m)
            end = max(end, m[1])
        else:
            groups.append([m])
            end = m[1]
    out = []
    for g in groups:
        best = min(g, key=lambda m: (-(m[1] - m[0]), PRIORITY.get(m[2], 99)))
        out.append((min(m[0] for m in g), max(m[1] for m in g), best[2]))
    return out
