"""Replacement text for PHI: typed tags or realistic surrogates that are consistent in a document.

One `Surrogates` object serves one document: the same name (word by word, case-blind) always
gets the same surrogate; every date is shifted by one offset in days, so intervals (and, with
`keep_weekday`, weekdays) are kept, and each date is written back in its own format (`3/14`,
`March 14th`, `14-MAR-2087`, `2087-03-14`, `'92`). Numbers keep their layout with new digits.
The draws come from a generator seeded from the seed and the text, so a seeded run gives the
same output in any process; without a seed they are drawn from the operating system.
"""
import datetime
import hashlib
import os
import random
import re
from typing import Dict, List, Optional, Tuple

from .lexicon import US_STATE_ABBR, US_STATES, person_names, surrogate_names, surrogate_places
from .patterns import MONTHS_ABBR, MONTHS_FULL, PLACEHOLDER

MONTH_NUMBER = {m: i + 1 for i, m in enumerate(MONTHS_FULL)}
MONTH_NUMBER.update({m: i + 1 for i, m in enumerate(m for m in MONTHS_ABBR if m != "sept")})
MONTH_NUMBER["sept"] = 9
ORDINAL = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}
HOSPITAL_SUFFIXES = ("Hospital", "Medical Center", "General Hospital", "Memorial Hospital", "Clinic")
HOLIDAY_NAMES = ("Thanksgiving", "Labor Day", "Memorial Day", "New Year's Day")
_PIECE = re.compile(r"\d+|[A-Za-z]+|[^\dA-Za-z]+")


def tag(label: str) -> str:
    """The typed tag that replaces a span in "tag" mode: `[NAME]`, `[DATE]`, ..."""
    return f"[{label}]"


def _case_like(surrogate: str, original: str) -> str:
    letters = [c for c in original if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and len(letters) > 1:
        return surrogate.upper()
    if letters and all(c.islower() for c in letters):
        return surrogate.lower()
    return surrogate


class DateFormat:
    """A date string cut into literal pieces and fields, so a shifted date can be written back
    in the same format. Fields: Y4, Y2, M (number), MON (name), D, ORD (ordinal suffix)."""

    def __init__(self, pieces: List[Tuple[str, str]], year: Optional[int], month: Optional[int], day: Optional[int]):
        self.pieces = pieces
        self.year, self.month, self.day = year, month, day

    @classmethod
    def parse(cls, text: str) -> Optional["DateFormat"]:
        raw = _PIECE.findall(text)
        pieces: List[Tuple[str, str]] = []
        month = None
        numbers = []  # (index in pieces, digits, preceded by an apostrophe)
        for i, p in enumerate(raw):
            low = p.lower()
            if p.isalpha():
                if low in MONTH_NUMBER and month is None:
                    month = MONTH_NUMBER[low]
                    pieces.append(("MON", p))
                elif low in ("st", "nd", "rd", "th") and pieces and pieces[-1][0] == "NUM":
                    pieces.append(("ORD", p))
                else:
                    pieces.append(("LIT", p))
            elif p.isdigit():
                numbers.append((len(pieces), p, bool(pieces) and pieces[-1][1].endswith("'")))
                pieces.append(("NUM", p))
            else:
                pieces.append(("LIT", p))
        if not numbers:
            return None
        year = day = None
        assign: Dict[int, str] = {}
        if month is not None:
            for idx, digits, apos in numbers:
                v = int(digits)
                if len(digits) == 4 and year is None:
                    year, assign[idx] = v, "Y4"
                elif day is None and not apos and 1 <= v <= 31 and len(digits) <= 2:
                    day, assign[idx] = v, "D"
                elif year is None and len(digits) == 2:
                    year, assign[idx] = 1900 + v if v > 30 else 2000 + v, "Y2"
                else:
                    return None
        else:
            vals = [(idx, d, int(d), apos) for idx, d, apos in numbers]
            if len(vals) == 3:
                (i1, d1, v1, _), (i2, d2, v2, _), (i3, d3, v3, _) = vals
                if len(d1) == 4:
                    year, month, day = v1, v2, v3
                    assign = {i1: "Y4", i2: "M", i3: "D"}
                else:
                    if v1 > 12:
                        day, month = v1, v2
                        assign = {i1: "D", i2: "M"}
                    else:
                        month, day = v1, v2
                        assign = {i1: "M", i2: "D"}
                    year = v3 if len(d3) == 4 else (1900 + v3 if v3 > 30 else 2000 + v3)
                    assign[i3] = "Y4" if len(d3) == 4 else "Y2"
            elif len(vals) == 2:
                (i1, d1, v1, _), (i2, d2, v2, _) = vals
                if len(d2) == 4 and 1 <= v1 <= 12:
                    month, year = v1, v2
                    assign = {i1: "M", i2: "Y4"}
                elif len(d2) == 2 and v2 > 31 and 1 <= v1 <= 12:  # 10/95: month and two-digit year
                    month, year = v1, (1900 + v2 if v2 > 30 else 2000 + v2)
                    assign = {i1: "M", i2: "Y2"}
                else:
                    month, day = v1, v2
                    assign = {i1: "M", i2: "D"}
            elif len(vals) == 1:
                i1, d1, v1, apos = vals[0]
                if len(d1) == 4:
                    year, assign = v1, {i1: "Y4"}
                elif len(d1) == 2:
                    year, assign = (1900 + v1 if v1 > 30 else 2000 + v1), {i1: "Y2"}
                else:
                    return None
            else:
                return None
        if month is not None and not 1 <= month <= 12:
            return None
        if day is not None and not 1 <= day <= 31:
            return None
        if year is not None and not 1000 <= year <= 9000:
            return None
        pieces = [(assign.get(i, kind) if kind == "NUM" else kind, p) for i, (kind, p) in enumerate(pieces)]
        if any(kind == "NUM" for kind, _ in pieces):
            return None
        return cls(pieces, year, month, day)

    def shifted(self, days: int) -> str:
        """The date moved by `days`, written in this format."""
        y, m, d = self.year, self.month, self.day
        if m is not None and d is not None:
            # without a year: a common year, so month/day dates shift like the dated ones of most
            # notes; 2000 (a leap year) only for 2/29
            base_year = y if y is not None else (2000 if (m, d) == (2, 29) else 2001)
            try:
                new = datetime.date(base_year, m, d) + datetime.timedelta(days=days)
            except ValueError:
                new = datetime.date(base_year, m, min(d, 28)) + datetime.timedelta(days=days)
            y2, m2, d2 = (new.year if y is not None else None), new.month, new.day
        elif m is not None:
            new = datetime.date(y if y is not None else 2000, m, 15) + datetime.timedelta(days=days)
            y2, m2, d2 = (new.year if y is not None else None), new.month, None
        else:
            new = datetime.date(y, 7, 1) + datetime.timedelta(days=days)
            y2, m2, d2 = new.year, None, None
        # zero padding: a two-digit field is padded when any field of the date was ("03/14"),
        # or when the day stands before a month name ("14-MAR-2087")
        kinds = [k for k, _ in self.pieces]
        any_zero = any(k in ("M", "D") and len(p) == 2 and p.startswith("0") for k, p in self.pieces)
        day_first = "D" in kinds and "MON" in kinds and kinds.index("D") < kinds.index("MON")

        def pad(kind: str, p: str, value: int) -> str:
            if len(p) == 2 and (p.startswith("0") or any_zero or (kind == "D" and day_first)):
                return f"{value:02d}"
            return str(value)

        out = []
        for kind, p in self.pieces:
            if kind == "Y4":
                out.append(f"{y2:04d}")
            elif kind == "Y2":
                out.append(f"{y2 % 100:02d}")
            elif kind == "M":
                out.append(pad(kind, p, m2))
            elif kind == "D":
                out.append(pad(kind, p, d2))
            elif kind == "ORD":
                out.append(_case_like(ORDINAL.get(d2, "th"), p))
            elif kind == "MON":
                name = MONTHS_FULL[m2 - 1] if len(p) > 4 or p.lower() in ("june", "july") else MONTHS_ABBR[[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12][m2 - 1]]
                if p.lower() == "sept" and m2 != 9:
                    name = MONTHS_ABBR[[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12][m2 - 1]]
                out.append(name.upper() if p.isupper() and len(p) > 1 else (name.title() if p[0].isupper() else name))
            else:
                out.append(p)
        return "".join(out)


class Surrogates:
    """Consistent surrogate values for the PHI of one document.

    seed (Optional[int]): with a seed, the draws are a function of (seed, text); None draws them
        from the operating system's randomness.
    shift_days (Tuple[int, int]): the date offset is drawn from this range (0 excluded).
    keep_weekday (bool): round the offset to whole weeks, so weekdays stay.
    """

    def __init__(self, text: str, seed: Optional[int] = None, shift_days: Tuple[int, int] = (-1095, 1095), keep_weekday: bool = False):
        if seed is None:
            self.rng = random.Random(os.urandom(16))
        else:
            self.rng = random.Random(hashlib.sha256(f"{seed}\x00{text}".encode("utf8")).digest())
        lo, hi = shift_days
        offset = 0
        while offset == 0:
            offset = self.rng.randint(lo, hi)
            if keep_weekday:
                offset = 7 * round(offset / 7)
        self.shift = offset
        self.cache: Dict[Tuple[str, str], str] = {}

    def _cached(self, label: str, key: str, make) -> str:
        k = (label, key)
        if k not in self.cache:
            used = set(self.cache.values())
            value = make()
            for _ in range(20):
                if value.lower() != key and value not in used:
                    break
                value = make()
            self.cache[k] = value
        return self.cache[k]

    def _digits(self, original: str, letters: bool = True) -> str:
        def draw() -> str:
            out = []
            for c in original:
                if c.isdigit():
                    out.append(str(self.rng.randint(1 if not out or not out[-1].isdigit() else 0, 9)))
                elif c.isalpha() and letters:
                    letter = chr(ord("A") + self.rng.randrange(26))
                    out.append(letter if c.isupper() else letter.lower())
                else:
                    out.append(c)
            return "".join(out)

        return self._cached("NUMBER" if letters else "PHONE", original.lower(), draw)

    def name(self, original: str) -> str:
        first_set, _ = person_names()
        first, last = surrogate_names()
        out = []
        for piece in re.findall(r"[A-Za-z'’-]+|[^A-Za-z'’-]+", original):
            if not piece[0].isalpha():
                out.append(piece)
                continue
            key = piece.lower()
            if len(piece) == 1:
                value = self._cached("INITIAL", key, lambda: chr(ord("A") + self.rng.randrange(26)))
            elif key in first_set:
                value = self._cached("FIRST", key, lambda: self.rng.choice(first))
            else:
                value = self._cached("LAST", key, lambda: self.rng.choice(last))
            out.append(_case_like(value, piece) if len(piece) > 1 else (value if piece.isupper() else value.lower()))
        return "".join(out)

    def date(self, original: str) -> str:
        if re.fullmatch(r"(?:1[89]|20)\d0'?s", original, re.IGNORECASE):
            return original  # a decade is not PHI under Safe Harbor (only full dates and ages are)
        fmt = DateFormat.parse(original)
        if fmt is not None:
            try:
                return fmt.shifted(self.shift)
            except (ValueError, OverflowError):  # a day the month does not have, after a shift
                pass
        if not re.search(r"\d", original):
            return _case_like(self._cached("HOLIDAY", original.lower(), lambda: self.rng.choice(HOLIDAY_NAMES)), original)
        return self._digits(original)

    def age(self, original: str) -> str:
        # Safe Harbor: ages over 89 are aggregated into one category
        return "90" if any(c.isdigit() for c in original) else _case_like("ninety", original)

    def place(self, label: str, original: str) -> str:
        streets, cities = surrogate_places()
        key = original.lower()
        if label == "STATE":
            if len(original) <= 3:
                return self._cached("STATE_ABBR", key, lambda: self.rng.choice(US_STATE_ABBR))
            return _case_like(self._cached("STATE", key, lambda: self.rng.choice(US_STATES)), original)
        if label == "ZIP":
            return self._digits(original)
        if label == "STREET":
            number = re.match(r"\d+", original)
            street = self._cached("STREET", key, lambda: self.rng.choice(streets))
            return _case_like((self._digits(number.group(0)) + " " if number else "") + street, original)
        if label == "HOSPITAL":
            _, last = surrogate_names()
            suffix = next((s for s in HOSPITAL_SUFFIXES if s.lower() in key), "Hospital")
            return _case_like(self._cached("HOSPITAL", key, lambda: f"{self.rng.choice(last)} {suffix}"), original)
        if label == "ORGANIZATION":
            _, last = surrogate_names()
            return _case_like(self._cached("ORGANIZATION", key, lambda: f"{self.rng.choice(last)} Associates"), original)
        return _case_like(self._cached("CITY", key, lambda: self.rng.choice(cities)), original)

    def contact(self, label: str, original: str) -> str:
        first, last = surrogate_names()
        key = original.lower()
        if label == "EMAIL":
            return self._cached("EMAIL", key, lambda: f"{self.rng.choice(first)}.{self.rng.choice(last)}@example.org".lower())
        if label == "URL":
            return self._cached("URL", key, lambda: f"www.example-{self.rng.randrange(1000)}.org")
        if label == "IP":
            return self._cached("IP", key, lambda: f"192.0.2.{self.rng.randrange(1, 255)}")
        return self._digits(original, letters=label == "ID")

    def placeholder(self, label: str, content: str) -> str:
        """A surrogate for a MIMIC `[** ... **]` placeholder of type `label`."""
        content = content.strip()
        key = content.lower()
        if label == "DATE":
            fmt = DateFormat.parse(content)
            if fmt is not None:
                return fmt.shifted(self.shift)
            if re.search(r"month", key):
                return MONTHS_FULL[self.rng.randrange(12)].title()
            if re.search(r"year", key):
                return str(2000 + self.rng.randrange(20))
            return self._cached("HOLIDAY", key, lambda: self.rng.choice(HOLIDAY_NAMES))
        first, last = surrogate_names()
        if label == "NAME":
            if re.search(r"initial", key):
                return self._cached("INITIALS", key, lambda: chr(ord("A") + self.rng.randrange(26)) + chr(ord("A") + self.rng.randrange(26)))
            if re.search(r"first", key):
                return self._cached("FIRST", key, lambda: self.rng.choice(first))
            return self._cached("LAST", key, lambda: self.rng.choice(last))
        if label == "AGE":
            return "90"
        if label in ("PHONE", "FAX"):
            return self._cached("PHONE", key, lambda: f"({self.rng.randint(201, 989)}) {self.rng.randint(200, 999)}-{self.rng.randint(0, 9999):04d}")
        if label in ("ID", "ZIP"):
            digits = 5 if label == "ZIP" else 7
            return self._cached(label, key, lambda: "".join(str(self.rng.randint(1 if i == 0 else 0, 9)) for i in range(digits)))
        if label == "STREET":
            streets, _ = surrogate_places()
            return self._cached("STREET", key, lambda: f"{self.rng.randint(1, 9999)} {self.rng.choice(streets)}")
        if label in ("EMAIL", "URL", "IP"):
            return self.contact(label, key)
        return self.place(label, key.title() if label != "STATE" else "Xxxx")

    def __call__(self, label: str, original: str) -> str:
        """The surrogate for the PHI `original` of type `label` (consistent within the document)."""
        m = PLACEHOLDER.fullmatch(original)
        if m:
            return self.placeholder(label, m.group(1))
        if label == "NAME":
            return self.name(original)
        if label == "DATE":
            return self.date(original)
        if label == "AGE":
            return self.age(original)
        if label in ("PHONE", "FAX", "ID", "EMAIL", "URL", "IP"):
            return self.contact(label, original)
        return self.place(label, original)


def replace_spans(
    text: str,
    spans: List[Tuple[int, int, str]],
    mode: str = "surrogate",
    surrogates: Optional[Surrogates] = None,
) -> Tuple[str, List[List[object]]]:
    """Replace sorted, non-overlapping (start, end, label) spans of `text`.

    mode (str): "tag" (`[NAME]`) or "surrogate" (needs `surrogates`).
    RETURNS (Tuple[str, List[list]]): the new text and the offset map, one
        `[start, end, new_start, new_end, label]` row per span (offsets only: the map never
        holds the original strings).
    """
    out: List[str] = []
    offsets: List[List[object]] = []
    pos = 0
    shift = 0
    for start, end, label in spans:
        out.append(text[pos:start])
        new = tag(label) if mode == "tag" else surrogates(label, text[start:end])  # type: ignore[misc]
        ns = start + shift
        out.append(new)
        offsets.append([start, end, ns, ns + len(new), label])
        shift += len(new) - (end - start)
        pos = end
    out.append(text[pos:])
    return "".join(out), offsets


def map_offset(offsets: List[List[object]], pos: int, side: str) -> int:
    """Where character offset `pos` of the original text lies in the replaced text.

    side (str): "start" or "end": an offset inside a replaced span moves to the start of its
        replacement for "start" and to its end for "end", so a span that touches PHI covers
        the whole replacement.
    """
    shift = 0
    for start, end, _, new_end, _label in offsets:
        if side == "start":
            if pos < start:
                break
            if pos < end:
                return start + shift
        else:
            if pos <= start:
                break
            if pos <= end:
                return new_end  # type: ignore[return-value]
        shift = new_end - end  # type: ignore[operator]
    return pos + shift
