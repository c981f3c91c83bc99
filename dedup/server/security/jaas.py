"""Kafka's JAAS configuration, as the broker reads it for SASL credentials.

Two forms, one grammar (``javax.security.auth.login.ConfigFile`` and Kafka's ``JaasConfig``,
both a ``StreamTokenizer`` with ``//`` and ``/* */`` comments):

- a file given with ``--jaas FILE`` (Kafka: ``-Djava.security.auth.login.config=FILE``), of
  sections ``Name { entry; entry; };``, the broker's being ``KafkaServer`` or, for one
  listener, ``<listener name in lower case>.KafkaServer``;
- a property ``listener.name.<listener>.<mechanism>.sasl.jaas.config``, entries alone.

An entry is ``<LoginModule class> <flag> key=value ... ;`` (flag ``required``, ``requisite``,
``sufficient`` or ``optional``; values quoted or bare). The broker's credentials are the
options ``user_<name>="<password>"`` (Kafka's PlainLoginModule on the broker). SCRAM
credentials live in Kafka's cluster metadata (``kafka-configs.sh --alter --add-config
'SCRAM-SHA-256=[password=...]'``, AlterUserScramCredentials); dedup has no such store and takes
them from the same ``user_<name>="<password>"`` options of a ``ScramLoginModule`` entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["JaasEntry", "JaasError", "PLAIN_MODULE", "SCRAM_MODULE", "parse_jaas_config", "parse_jaas_file"]

PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_FLAGS = ("required", "requisite", "sufficient", "optional")
_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"((?:[^"\\]|\\.)*)"|([{};=])|([^\s{};="]+)', re.S)


class JaasError(ValueError):
    """A JAAS text that does not parse; the message says where."""


@dataclass(frozen=True)
class JaasEntry:
    """One login module entry: its class, control flag and options."""

    module: str
    flag: str
    options: dict[str, str]

    def users(self) -> dict[str, str]:
        """The ``user_<name>`` options: each user's password."""
        return {key[len("user_") :]: value for key, value in self.options.items() if key.startswith("user_")}


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens: ``word``, ``quoted`` or the punctuation itself."""
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise JaasError(f"unexpected {text[at : at + 20]!r} at character {at}")
        at = match.end()
        if match.group(1) is not None:
            out.append(("quoted", re.sub(r"\\(.)", r"\1", match.group(1))))
        elif match.group(2) is not None:
            out.append((match.group(2), match.group(2)))
        elif match.group(3) is not None:
            out.append(("word", match.group(3)))
    return out


def _entries(tokens: list[tuple[str, str]], at: int, end: str | None) -> tuple[list[JaasEntry], int]:
    """Entries from ``tokens[at]`` up to the token ``end`` (None: the end of the text)."""
    entries = []
    while at < len(tokens) and tokens[at][0] != end:
        kind, module = tokens[at]
        if kind != "word":
            raise JaasError(f"expected a login module class, found {module!r}")
        if at + 1 >= len(tokens) or tokens[at + 1][1].lower() not in _FLAGS:
            found = tokens[at + 1][1] if at + 1 < len(tokens) else "the end"
            raise JaasError(f"{module}: expected a control flag ({', '.join(_FLAGS)}), found {found!r}")
        flag = tokens[at + 1][1].lower()
        at += 2
        options: dict[str, str] = {}
        while at < len(tokens) and tokens[at][0] != ";":
            pair = tokens[at : at + 3]
            if len(pair) < 3 or pair[0][0] != "word" or pair[1][0] != "=" or pair[2][0] not in ("word", "quoted"):
                raise JaasError(f"{module}: expected key=value or ';', found {tokens[at][1]!r}")
            options[tokens[at][1]] = tokens[at + 2][1]
            at += 3
        if at >= len(tokens):
            raise JaasError(f"{module}: the entry does not end with ';'")
        entries.append(JaasEntry(module, flag, options))
        at += 1
    if end is not None and at >= len(tokens):
        raise JaasError(f"expected {end!r}, found the end")
    return entries, at


def parse_jaas_config(text: str) -> list[JaasEntry]:
    """The entries of a ``sasl.jaas.config`` value (Kafka's JaasConfig); at least one."""
    entries, _ = _entries(_tokens(text), 0, None)
    if not entries:
        raise JaasError("no login module entry")
    return entries


def parse_jaas_file(text: str) -> dict[str, list[JaasEntry]]:
    """The sections of a JAAS file, by name (``KafkaServer``, ``plain_sasl.KafkaServer``, ...)."""
    tokens = _tokens(text)
    sections: dict[str, list[JaasEntry]] = {}
    at = 0
    while at < len(tokens):
        if tokens[at][0] != "word" or at + 1 >= len(tokens) or tokens[at + 1][0] != "{":
            raise JaasError(f"expected 'Name {{', found {tokens[at][1]!r}")
        name = tokens[at][1]
        entries, at = _entries(tokens, at + 2, "}")
        at += 1
        if at < len(tokens) and tokens[at][0] == ";":
            at += 1
        sections[name] = entries
    return sections
