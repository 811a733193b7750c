"""HIPAA Safe Harbor identifiers (45 CFR 164.514(b)(2)(i)) in the events' free text and names.

One rule per identifier kind that can appear in text: its pattern is one compiled alternation, run
over the text fields the rule scans (``fhir.text_fields``: every FHIR string of the catalog's schemas,
names apart from free text). Names belong in name fields, so the name rule scans free text only;
every other rule scans both.

The patterns are written against the realistic false positives of clinical text: medication strengths
("1200000 UNT/ML"), LOINC and RxNorm displays ("Hemoglobin [Mass/volume] in Blood"), blood pressures
("120/80"), eponyms and words that are also given names (left out of the names table). A rule's matches
never leave it: ``scan`` says which rows and, for those, which field paths.

``other-unique-number`` (a long run of digits) is the catch-all of Safe Harbor's item (R): it yields to
the labelled kinds, so an "Acct 12345678" is an account number, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from event_broker_rollout import paths
from event_broker_rollout.integration.fhir import DATA_FIELD, TextKind, text_fields

GIVEN_NAMES_TABLE = paths.INCLUDE_DIR / "reference" / "given_names.txt"
FIELD_SEPARATOR = "\x00"  # between a row's texts: no pattern matches across it


@dataclass(frozen=True)
class IdentifierRule:
    id: str  # stable: reports and dead-letter reasons name it
    name: str
    safe_harbor: str  # the item(s) of 164.514(b)(2)(i)
    pattern: re.Pattern[str]
    kinds: tuple[TextKind, ...]  # the text fields it scans
    yields: bool = False  # found only where no other identifier rule found something in the event

    def scans(self) -> tuple[str, ...]:
        """The field paths it scans, from the schemas."""
        return tuple(
            sorted(
                {
                    field.name
                    for fields in text_fields().values()
                    for field in fields
                    if field.kind in self.kinds
                }
            )
        )


def _alternation(*branches: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{branch})" for branch in branches))


def load_given_names(table: Path = GIVEN_NAMES_TABLE) -> tuple[str, ...]:
    names = (line.strip() for line in table.read_text().splitlines())
    return tuple(name for name in names if name and not name.startswith("#"))


_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_STATE = (
    r"(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|S[CD]|T[NX]|"
    r"UT|V[AT]|W[AIVY])"
)
# States whose abbreviation is no common clinical one (CA cancer, MI infarction, SC subcutaneous, ...):
# a capitalized word, a comma, one of these, is a city.
_CITY_STATE = r"(?:AK|AZ|FL|IL|KY|MA|MN|MO|MT|NC|ND|NH|NJ|NV|NY|OH|RI|SD|TN|TX|UT|VT|WA|WI|WV|WY)"
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq)"
)
_LABEL_END = r"\.?\s*(?:id\b|identifier|number|num\b|no\b\.?|#)?\s*:?\s*#?\s*"  # "No.: #", "number"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HEX4 = r"[0-9a-f]{1,4}"
_MBI_LETTER = "[AC-HJKMNP-RT-Y]"  # Medicare Beneficiary Identifier letters (no S L O I B Z)


@cache
def identifier_rules(given_names_table: Path = GIVEN_NAMES_TABLE) -> tuple[IdentifierRule, ...]:
    """The rules, in the order of Safe Harbor's list."""
    given = "|".join(re.escape(name) for name in load_given_names(given_names_table))
    text: tuple[TextKind, ...] = ("free_text",)
    both: tuple[TextKind, ...] = ("name", "free_text")
    return (
        IdentifierRule(
            "phi.name-in-free-text",
            "No person's name in free text (a title or a common given name, then a capitalized name)",
            "(A)",
            _alternation(
                r"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof)\.?\s+[A-Z][a-z]+",
                r"(?i:\b(?:named|name\s*:|(?:his|her|their)\s+(?:wife|husband|partner|spouse|son|daughter|"
                r"mother|father|brother|sister)))\s+[A-Z][a-z]+\s+[A-Z][a-z]+",
                rf"\b(?:{given})\s+(?:[A-Z]\.\s*)?[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?\b",
            ),
            text,
        ),
        IdentifierRule(
            "phi.geographic-subdivision",
            "No geographic unit below a state (street address, ZIP code, county, PO box)",
            "(B)",
            _alternation(
                rf"\b\d{{1,6}}\s+(?:[NSEW]\.?\s+)?(?:\d+(?:st|nd|rd|th)\s+|(?:[A-Z][a-z]+\s+){{1,3}}){_STREET}\b",
                rf"\b[A-Z][a-z]+,\s+{_CITY_STATE}\b",
                r"(?i:\bp\.?\s?o\.?\s+box\s+\d+)",
                r"(?i:\b(?:zip|postal)(?:\s*code)?\s*:?\s*\d{5}\b)",
                rf"\b{_STATE}\s+\d{{5}}(?:-\d{{4}})?\b",
                r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?\s+County\b",
                r"(?i:\b(?:apt|apartment|suite|ste)\.?\s*#?\s*\d+[a-z]?\b)",
            ),
            both,
        ),
        IdentifierRule(
            "phi.date",
            "No date more precise than the year, nor an age over 89",
            "(C)",
            _alternation(
                r"\b\d{1,2}[/-]\d{1,2}[/-](?:\d{4}|\d{2})\b",
                r"\b\d{1,2}\.\d{1,2}\.(?:19|20)\d{2}\b",
                r"\b(?:1[89]|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b",
                rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b",
                rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b",
                r"(?i:\b(?:dob|d\.o\.b|date of birth|born on)\b)",
                r"(?i:\b(?:9\d|1[0-4]\d)[\s-]*(?:years?|yrs?)[\s-]*old\b|\b(?:9\d|1[0-4]\d)\s*y/?o\b)",
            ),
            both,
        ),
        IdentifierRule(
            "phi.phone-fax",
            "No telephone or fax number",
            "(D), (E)",
            _alternation(
                r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b",
                r"\+\d{1,3}[\s.-]?\d{2,4}[\s.-]?\d{3,4}[\s.-]?\d{3,4}\b",
                r"\b\d{3}-\d{4}\b(?!-)",
                r"(?i:\b(?:phone|telephone|tel|fax|facsimile|cell|mobile|pager)\b"
                + _LABEL_END
                + r"\+?\(?\d{3})",
            ),
            both,
        ),
        IdentifierRule(
            "phi.email",
            "No e-mail address",
            "(F)",
            _alternation(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
            both,
        ),
        IdentifierRule(
            "phi.ssn",
            "No social security number",
            "(G)",
            _alternation(r"\b\d{3}-\d{2}-\d{4}\b", r"(?i:\bssn\b|\bsocial security\b)"),
            both,
        ),
        IdentifierRule(
            "phi.mrn",
            "No medical record number",
            "(H)",
            _alternation(
                r"(?i:\bmrn\b|\bmr#|\bmedical record\s*(?:number|num\b|no\b|#|:))",
                r"(?i:\b(?:chart|patient)\s*(?:number|num\b|no\b\.?|#|id\b)\s*:?\s*#?\s*[a-z]{0,3}\d{3,})",
            ),
            both,
        ),
        IdentifierRule(
            "phi.health-plan-number",
            "No health plan beneficiary number",
            "(I)",
            _alternation(
                r"(?i:\b(?:member|subscriber|beneficiary|policy|group|insurance|plan)\b"
                + _LABEL_END
                + r"[a-z0-9][a-z0-9-]{3,})",
                r"(?i:\b(?:medicaid|medicare|hicn|mbi)\b\s*(?:id\b|number|no\b\.?|#)?\s*:?\s*#?\s*[a-z0-9-]*\d)",
                rf"\b[1-9]{_MBI_LETTER}[{_MBI_LETTER[1:-1]}0-9]\d{_MBI_LETTER}[{_MBI_LETTER[1:-1]}0-9]\d"
                rf"{_MBI_LETTER}{{2}}\d{{2}}\b",
            ),
            both,
        ),
        IdentifierRule(
            "phi.account-number",
            "No account number (accounts, bills, claims, payment cards)",
            "(J)",
            _alternation(
                r"(?i:\b(?:account|acct|a/c|billing|invoice|claim)\b"
                + _LABEL_END
                + r"[a-z]{0,4}\d[\d-]{3,})",
                r"\b(?:\d{4}[ -]){3}\d{4}\b",
                r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,4})?\b",
            ),
            both,
        ),
        IdentifierRule(
            "phi.certificate-licence-number",
            "No certificate or licence number",
            "(K)",
            _alternation(
                r"(?i:\b(?:licen[cs]e|certificate|cert)\b(?!\s*plate)"
                + _LABEL_END
                + r"(?:[a-z]{1,3}-?\d{4,}|\d[\d-]{4,}\d))",
                r"(?i:\bdea\b" + _LABEL_END + r"[a-z]{2}\d{7}\b)",
            ),
            both,
        ),
        IdentifierRule(
            "phi.vehicle-identifier",
            "No vehicle identifier (VIN, licence plate)",
            "(L)",
            _alternation(
                r"(?i:\b(?:vin\b|vehicle identification|licen[cs]e plate|plate\s*(?:number|no\b\.?|#))"
                + _LABEL_END
                + r"[a-z0-9-]*\d[a-z0-9-]*)",
                r"\b(?=[A-HJ-NPR-Z0-9]*\d)(?=[A-HJ-NPR-Z0-9]*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}\b",
            ),
            both,
        ),
        IdentifierRule(
            "phi.device-identifier",
            "No device identifier or serial number",
            "(M)",
            _alternation(
                r"(?i:\b(?:serial|s/n|sn|udi|imei|device\s*(?:id|identifier)|mac address)\b"
                + _LABEL_END
                + r"[a-z0-9-]*\d[a-z0-9-]*)",
                r"\(01\)\d{14}",
                r"\b(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}\b",
            ),
            both,
        ),
        IdentifierRule(
            "phi.url",
            "No web address",
            "(N)",
            _alternation(
                r"(?i:\b(?:https?|ftp)://\S+)",
                r"(?i:\bwww\.[a-z0-9-]+(?:\.[a-z0-9-]+)+)",
                r"(?i:(?<![@\w.-])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|info|io)\b(?!@))",
            ),
            both,
        ),
        IdentifierRule(
            "phi.ip-address",
            "No IP address",
            "(O)",
            _alternation(
                rf"\b(?:{_OCTET}\.){{3}}{_OCTET}\b(?!\.\d)",
                rf"(?i:\b(?:{_HEX4}:){{7}}{_HEX4}\b)",
                rf"(?i:\b(?:{_HEX4}:){{1,6}}:(?:{_HEX4}(?::{_HEX4})*)?(?![\w:]))",
                r"(?i:\bip address\b)",
            ),
            both,
        ),
        IdentifierRule(
            "phi.biometric-photo",
            "No biometric identifier or photograph reference",
            "(P), (Q)",
            _alternation(
                r"(?i:\b(?:(?:finger|thumb|palm|voice|face)\s?prints?|(?:retina|retinal|iris)\s+scans?|"
                r"facial\s+(?:image|photo|photograph|recognition|scan)s?|full[-\s]face|photo(?:graph)?s?|"
                r"selfies?|headshots?|dna\s+profile)\b)",
                r"(?i:\b[\w-]+\.(?:jpe?g|png|gif|bmp|tiff?|heic)\b)",
            ),
            both,
        ),
        IdentifierRule(
            "phi.other-unique-number",
            "No other identifying number (a run of 7 or more digits that is not a dose)",
            "(R)",
            _alternation(r"(?i:\b\d{7,}\b(?!\s*(?:unt|units?|iu|mg|mcg|ml|/)))"),
            both,
            yields=True,
        ),
    )


class _DistinctTexts:
    """A column's texts, each distinct one searched once (events repeat their displays)."""

    def __init__(self, texts: pd.Series) -> None:
        codes, distinct = pd.factorize(texts)
        self.present = codes >= 0
        self.codes = np.maximum(codes, 0)
        self.distinct = pd.Series(distinct, dtype=object)

    def contains(self, pattern: re.Pattern[str]) -> np.ndarray:
        if self.distinct.empty:
            return np.zeros(len(self.present), dtype=bool)
        found = self.distinct.str.contains(pattern, regex=True).to_numpy(dtype=bool)
        return self.present & found[self.codes]


def _fields_found(
    pairs: Iterable[tuple[str, TextKind, str]], rule: IdentifierRule
) -> str:  # the field paths, '|'-joined, where the rule's pattern matches
    return "|".join(
        sorted({field for field, kind, text in pairs if kind in rule.kinds and rule.pattern.search(text)})
    )


def scan(frame: pd.DataFrame, rules: Sequence[IdentifierRule]) -> Mapping[str, pd.Series]:
    """Per rule id: the field paths ('|'-joined) where it found an identifier, null where none.

    ``frame`` has ``name_text`` / ``free_text`` (a row's texts of that kind, ``FIELD_SEPARATOR``-joined)
    and ``text_fields`` ((field path, kind, text) per text) columns.
    """
    texts = {"name": _DistinctTexts(frame["name_text"]), "free_text": _DistinctTexts(frame["free_text"])}
    hits = {
        rule.id: np.logical_or.reduce([texts[kind].contains(rule.pattern) for kind in rule.kinds])
        for rule in rules
    }
    labelled = np.zeros(len(frame), dtype=bool)
    for rule in rules:
        if not rule.yields:
            labelled |= hits[rule.id]
    found = {}
    for rule in rules:
        rows = hits[rule.id] & ~labelled if rule.yields else hits[rule.id]
        column = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        for position in np.flatnonzero(rows):
            # A match spans no separator, so some field holds it: DATA_FIELD only guards that reasoning.
            column.iloc[position] = (
                _fields_found(frame["text_fields"].iloc[position] or (), rule) or DATA_FIELD
            )
        found[rule.id] = column
    return found
