"""Every citation of the spec in the tracked tree resolves against docs/spec.md.

The code, tests and docs cite the spec as "spec §2.1 rule 10", "§3.2 step 6", "§2.2 M5",
"§4.2-4.4", "§2 (rules 8, 10, 12)", "rules 15-16" or a bare "rule 7". This test scans the
tracked files (``git ls-files``; comment markers at line starts are dropped and lines are
joined, so a citation broken over two lines is still read whole) and checks:

- every "§N" or "§N.N" is a numbered heading of docs/spec.md (a range "§4.2-4.4" checks
  each section in it);
- a "rule K", "step K" or "MK" written right after a section is defined inside that section
  (its subsections included): rules as ``**Rule K.**``, markers as ``**MK.**``, steps as
  the items of a numbered list;
- a bare "rule K" is a rule defined somewhere in the spec;
- no file points at the spec's old location outside the repository;
- links to ``spec.md#anchor`` name an anchor that exists.

It also checks the spec's own structure (an anchor per numbered heading and per rule) and
that its byte vectors carry valid CRC-32C checksums. Standard library only: it reads files,
it imports nothing from dedup.
"""

from __future__ import annotations

import re
import subprocess
from bisect import bisect_right
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "spec.md"
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()  # its examples are citations on purpose
SCANNED = ("dedup", "src_cython", "tests", "benchmarks", "tools", "docs", "README.md")
SKIPPED_PREFIXES = ("tests/fuzz_corpus/",)
#: The spec's former home, outside the repository: a clone cannot follow it.
EXTERNAL_SPEC = re.compile(r"shared/spec\b|kafka-producer-state\.md")

# --- the citation grammar -----------------------------------------------------------------

_NUMBER = r"\d+(?![\d^]|\.\d)"  # "2^31" and "1.5" are not rule or step numbers
_ITEM = rf"{_NUMBER}(?:\s*[-–]\s*{_NUMBER})?"
_RULES = r"[Rr]ules?"
_STEPS = r"[Ss]teps?"


def _list(keyword: str) -> str:
    """A list of numbers: "1, 3, 5-8", "15 and 16", "4 and step 6" (the keyword may repeat, not change)."""
    return rf"{_ITEM}(?:\s*(?:,|and|or|&)\s*(?:{keyword}\s+)?{_ITEM})*"


_MARKER_ITEM = r"M\d+(?:\s*[-–]\s*M?\d+)?"
_SECTION_NUMBER = r"\d+(?:\.\d+)*"

#: "§2.1", "§4.2-4.4", then optionally "rule(s) LIST", "step(s) LIST" or "M2-M5", with at
#: most an opening parenthesis or a colon in between ("§2 (rules 8, 10)").
CITATION = re.compile(
    rf"§(?P<section>{_SECTION_NUMBER})(?:\s*[-–]\s*§?(?P<until>{_SECTION_NUMBER}))?"
    rf"(?:[ \t]*[(:]?[ \t]*(?:{_RULES}\s+(?P<rules>{_list(_RULES)})|{_STEPS}\s+(?P<steps>{_list(_STEPS)})"
    rf"|(?P<markers>{_MARKER_ITEM}(?:\s*(?:,|and|or)\s*{_MARKER_ITEM})*)))?"
)
#: A rule cited without a section: "rule 7", "rules 2, 11, 13, 14", "Rules 15-16".
BARE_RULES = re.compile(rf"\b{_RULES}\s+(?P<items>{_list(_RULES)})")
ANCHOR_LINK = re.compile(r"spec\.md#(?P<anchor>[\w.-]+)")
#: Comment markers at the start of a line: "#", "#:", "//", "/*", " * ".
_LINE_PREFIX = re.compile(r"[ \t]*(?:#:?|//+|/\*+|\*(?=\s|$))?[ \t]*")


class Citation(NamedTuple):
    line: int
    text: str
    sections: tuple[str, ...]  # every section the citation names
    kind: str | None  # "rule", "step", "marker" or None
    numbers: tuple[str, ...]  # rule or step numbers ("10"), markers ("M2")


def _expand(items: str, prefix: str = "") -> tuple[str, ...]:
    """The numbers of a list: "1, 3, 5-8" -> 1, 3, 5, 6, 7, 8; "M2-M5" -> M2 ... M5. A range running backwards is
    kept as its two ends, so that it is reported rather than silently empty."""
    numbers: list[str] = []
    for low, high in re.findall(r"(\d+)(?:\s*[-–]\s*M?(\d+))?", items):
        if high and int(low) < int(high):
            numbers.extend(f"{prefix}{n}" for n in range(int(low), int(high) + 1))
        else:
            numbers.extend(f"{prefix}{n}" for n in (low, high) if n)
    return tuple(numbers)


def _section_range(first: str, last: str | None) -> tuple[str, ...]:
    """The sections of a range: "4.2" to "4.4" -> 4.2, 4.3, 4.4; of different parents, both ends."""
    if last is None:
        return (first,)
    head_a, _, tail_a = first.rpartition(".")
    head_b, _, tail_b = last.rpartition(".")
    if head_a == head_b and int(tail_a) < int(tail_b):
        prefix = f"{head_a}." if head_a else ""
        return tuple(f"{prefix}{n}" for n in range(int(tail_a), int(tail_b) + 1))
    return (first, last)


def joined_text(text: str) -> tuple[str, list[int]]:
    """The lines with their leading comment markers removed, joined by single spaces, and
    where each line starts in the result (for line numbers)."""
    starts, parts, position = [], [], 0
    for line in text.splitlines():
        stripped = _LINE_PREFIX.sub("", line, count=1).rstrip()
        starts.append(position)
        parts.append(stripped)
        position += len(stripped) + 1
    return " ".join(parts), starts


def citations(text: str) -> list[Citation]:
    """Every spec citation in ``text``, with the line it starts on (from 1)."""
    joined, starts = joined_text(text)
    found: list[Citation] = []
    taken: list[tuple[int, int]] = []
    for match in CITATION.finditer(joined):
        sections = _section_range(match["section"], match["until"])
        kind, numbers = None, ()
        if match["rules"]:
            kind, numbers = "rule", _expand(match["rules"])
        elif match["steps"]:
            kind, numbers = "step", _expand(match["steps"])
        elif match["markers"]:
            kind, numbers = "marker", _expand(match["markers"], "M")
        line = bisect_right(starts, match.start())
        found.append(Citation(line, match[0], sections, kind, numbers))
        taken.append(match.span())
    for match in BARE_RULES.finditer(joined):
        if any(start <= match.start() < end for start, end in taken):
            continue  # already read as part of "§N rule K"
        line = bisect_right(starts, match.start())
        found.append(Citation(line, match[0], (), "rule", _expand(match["items"])))
    return found


# --- the spec -----------------------------------------------------------------------------

_HEADING = re.compile(r"^(?P<level>#{1,6})[ \t]+(?P<title>.*)$")
_NUMBERED = re.compile(rf'^(?:<a id="(?P<anchor>[^"]+)"></a>[ \t]*)?§(?P<number>{_SECTION_NUMBER})\s')
_RULE = re.compile(r"\*\*Rule (\d+)\.")
_MARKER_RULE = re.compile(r"\*\*(M\d+)\.\*\*")
_STEP = re.compile(r"^(\d+)\. ")
_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')


class Spec(NamedTuple):
    sections: dict[str, tuple[int, int]]  # number -> [first line, end line) of its text
    anchors: dict[str, str]  # section number -> its heading's anchor ("" if none)
    rules: dict[str, list[int]]  # "10", "M2" -> lines defining it
    steps: dict[str, list[int]]  # "6" -> lines of numbered list items
    all_anchors: set[str]
    duplicate_sections: list[str]


def read_spec(text: str) -> Spec:
    lines = text.splitlines()
    headings = []  # (line index, level, number or None, anchor)
    fenced = False
    rules: dict[str, list[int]] = {}
    steps: dict[str, list[int]] = {}
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = _HEADING.match(line)
        if heading:
            numbered = _NUMBERED.match(heading["title"])
            headings.append(
                (index, len(heading["level"]), numbered and numbered["number"], numbered and numbered["anchor"] or "")
            )
            continue
        for name in _RULE.findall(line) + _MARKER_RULE.findall(line):
            if line.lstrip().startswith(("- ", "* ")):  # a definition is a list item
                rules.setdefault(name, []).append(index)
        step = _STEP.match(line)
        if step:
            steps.setdefault(step[1], []).append(index)
    sections: dict[str, tuple[int, int]] = {}
    anchors: dict[str, str] = {}
    duplicates = []
    for position, (index, level, number, anchor) in enumerate(headings):
        if number is None:
            continue
        end = next((i for i, lvl, _, _ in headings[position + 1 :] if lvl <= level), len(lines))
        if number in sections:
            duplicates.append(number)
        sections[number] = (index, end)
        anchors[number] = anchor
    return Spec(sections, anchors, rules, steps, set(_ANCHOR.findall(text)), duplicates)


def problems(citation: Citation, spec: Spec) -> list[str]:
    """Why ``citation`` does not resolve against ``spec`` (empty if it does)."""
    out = []
    for section in citation.sections:
        if section not in spec.sections:
            out.append(f"§{section} is not a section of docs/spec.md")
    if citation.kind is None:
        return out
    defined = spec.steps if citation.kind == "step" else spec.rules
    for number in citation.numbers:
        where = defined.get(number, [])
        if not citation.sections:
            if not where:
                out.append(f"rule {number} is not defined in docs/spec.md")
            continue
        for section in citation.sections:
            if section not in spec.sections:
                continue
            first, end = spec.sections[section]
            if not any(first <= line < end for line in where):
                name = number if citation.kind == "marker" else f"{citation.kind} {number}"
                out.append(f"{name} is not in §{section} of docs/spec.md")
    return out


# --- the tree -----------------------------------------------------------------------------


def tracked_texts() -> list[tuple[str, str]]:
    """(path, text) of every tracked text file under SCANNED, but this one."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--", *SCANNED], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error}): the tracked files are unknown")
    texts = []
    for name in sorted(listing.decode().split("\0")):
        if not name or name == THIS_FILE or name.startswith(SKIPPED_PREFIXES):
            continue
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            texts.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue  # a binary file (an image)
    return texts


@pytest.fixture(scope="module")
def spec() -> Spec:
    return read_spec(SPEC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tree() -> list[tuple[str, str]]:
    return tracked_texts()


def test_the_tree_cites_the_spec(tree):
    """The scan finds the citations (a broken grammar would find none and pass)."""
    count = sum(len(citations(text)) for _, text in tree)
    assert count > 300


def test_every_citation_resolves(tree, spec):
    unresolved = [
        f"{name}:{citation.line}: {citation.text!r}: {problem}"
        for name, text in tree
        for citation in citations(text)
        for problem in problems(citation, spec)
    ]
    assert not unresolved, f"{len(unresolved)} citations do not resolve:\n" + "\n".join(unresolved)


def test_no_citation_of_the_spec_outside_the_repository(tree):
    external = [
        f"{name}:{number}: {line.strip()}"
        for name, text in tree
        for number, line in enumerate(text.splitlines(), 1)
        if EXTERNAL_SPEC.search(line)
    ]
    assert not external, (
        f"{len(external)} lines point at a spec outside the repository; cite docs/spec.md instead:\n"
        + "\n".join(external)
    )


def test_links_into_the_spec_name_anchors_that_exist(tree, spec):
    broken = [
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}: #{match['anchor']}"
        for name, text in tree
        for match in ANCHOR_LINK.finditer(text)
        if match["anchor"] not in spec.all_anchors
    ]
    assert not broken, "links to anchors docs/spec.md does not have:\n" + "\n".join(broken)


# --- the spec's own structure -------------------------------------------------------------


def test_spec_sections_are_unique_and_anchored(spec):
    assert not spec.duplicate_sections
    wrong = {number: anchor for number, anchor in spec.anchors.items() if anchor != f"s{number}"}
    assert not wrong, f"numbered headings without their anchor s<number>: {wrong}"
    # The numbering the tree relies on: §0-§6 and §8-§12, Section 7 intentionally unused.
    assert {number for number in spec.sections if "." not in number} == {
        str(n) for n in (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12)
    }


def test_spec_rules_are_unique_and_anchored(spec):
    assert sorted(spec.rules, key=lambda r: (r.startswith("M"), int(r.lstrip("M")))) == [
        *(str(n) for n in range(1, 19)),
        *(f"M{n}" for n in range(1, 6)),
    ]
    assert all(len(lines) == 1 for lines in spec.rules.values()), spec.rules
    first, end = spec.sections["2.1"]
    assert all(first <= spec.rules[str(n)][0] < end for n in range(1, 19)), "rules 1-18 belong to §2.1"
    first, end = spec.sections["2.2"]
    assert all(first <= spec.rules[f"M{n}"][0] < end for n in range(1, 6)), "M1-M5 belong to §2.2"
    anchors = {f"rule-{n}" for n in range(1, 19)} | {f"rule-m{n}" for n in range(1, 6)}
    assert anchors <= spec.all_anchors


# --- the parser itself: strict enough to catch a typo, no stricter ------------------------

S = "\N{SECTION SIGN}"  # written out, so that this file's examples are not citations


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"spec {S}2.1 rule 10", [(("2.1",), "rule", ("10",))]),
        (f"(spec {S}2.1 rules 1, 3, 5-8: magic)", [(("2.1",), "rule", ("1", "3", "5", "6", "7", "8"))]),
        (f"{S}2 (rules 8, 10, 12)", [(("2",), "rule", ("8", "10", "12"))]),
        (f"{S}2.1 rules 15 and 16", [(("2.1",), "rule", ("15", "16"))]),
        (f"{S}3.2 step 4 and step 6", [(("3.2",), "step", ("4", "6"))]),
        (f"{S}4.4 steps 2-3", [(("4.4",), "step", ("2", "3"))]),
        (f"{S}3.2 step 6, rule 12", [(("3.2",), "step", ("6",)), ((), "rule", ("12",))]),
        (f"{S}2.2 M2-M5", [(("2.2",), "marker", ("M2", "M3", "M4", "M5"))]),
        (f"spec {S}4.2-4.4", [(("4.2", "4.3", "4.4"), None, ())]),
        (f"{S}8.1/{S}8.5", [(("8.1",), None, ()), (("8.5",), None, ())]),
        (f"spec {S}2.7.", [(("2.7",), None, ())]),
        ("rules 2, 11, 13,\n# 14; as if", [((), "rule", ("2", "11", "13", "14"))]),
        (f"(spec {S}3.2\n    step 4)::", [(("3.2",), "step", ("4",))]),
        ("rule 3 for a client), 2^31-1", [((), "rule", ("3",))]),
        ("the scheduler runs 5 tasks", []),
    ],
)
def test_parser_reads_the_shapes_the_tree_uses(text, expected):
    assert [(c.sections, c.kind, c.numbers) for c in citations(text)] == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        (f"spec {S}7.9", f"{S}7.9 is not a section"),
        (f"spec {S}7", f"{S}7 is not a section"),
        (f"{S}2.1 rule 19", f"rule 19 is not in {S}2.1"),
        (f"{S}2.2 rule 10", f"rule 10 is not in {S}2.2"),
        (f"{S}3.2 step 9", f"step 9 is not in {S}3.2"),
        (f"{S}2.2 M6", f"M6 is not in {S}2.2"),
        (f"{S}4.2-4.9", f"{S}4.8 is not a section"),
        ("rule 42", "rule 42 is not defined"),
    ],
)
def test_a_typo_does_not_resolve(spec, text, reason):
    found = [problem for citation in citations(text) for problem in problems(citation, spec)]
    assert any(problem.startswith(reason) for problem in found), found


# Split, so that a search-and-replace of the old path over the tree leaves these examples alone.
@pytest.mark.parametrize("line", ["# see ../shared/spec/" + "kafka-producer-state.md", "Semantics: shared/spec/x.md"])
def test_the_old_location_is_recognised(line):
    assert EXTERNAL_SPEC.search(line)


# --- the spec's byte vectors --------------------------------------------------------------


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected 0x82F63B78), bit by bit: §8.5."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _vectors(section: str) -> list[bytes]:
    text = SPEC.read_text(encoding="utf-8")
    first, end = read_spec(text).sections[section]
    body = "\n".join(text.splitlines()[first:end])
    return [bytes.fromhex(hex_.replace(" ", "")) for hex_ in re.findall(r"`([0-9a-f ]{20,})`", body)]


def test_spec_vectors_carry_valid_checksums():
    assert _crc32c(b"123456789") == 0xE3069283  # §4.7's first line
    kafka_snapshots = _vectors("4.7")
    assert [len(v) for v in kafka_snapshots] == [10, 102]
    for vector in kafka_snapshots:  # version 1, crc of [6, end) at byte 2
        assert vector[:2] == b"\x00\x01"
        assert int.from_bytes(vector[2:6], "big") == _crc32c(vector[6:])
    batches = _vectors("8.6")
    assert [len(v) for v in batches] == [78, 69]
    for vector in batches:  # batch length + 12 = size, crc of [21, end) at byte 17
        assert int.from_bytes(vector[8:12], "big") + 12 == len(vector)
        assert int.from_bytes(vector[17:21], "big") == _crc32c(vector[21:])
    full = _vectors("12.5")
    assert [len(v) for v in full] == [28, 131, 103]
    for vector in full:  # magic, version 2, crc of [0, end - 4) at the end
        assert vector[:6] == b"DDPS\x00\x02"
        assert int.from_bytes(vector[-4:], "big") == _crc32c(vector[:-4])
