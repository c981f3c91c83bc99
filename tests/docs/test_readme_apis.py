"""The README's table of served Kafka APIs is the server's: one definition
(``dedup.server.wire.SUPPORTED_VERSIONS``), the copy in the README checked against it."""

from __future__ import annotations

import os
import re

from dedup.server.wire import SUPPORTED_VERSIONS, ApiKey

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def readme_table() -> dict[int, tuple[int, int]]:
    with open(README, encoding="utf-8") as file:
        text = file.read()
    table = text.split("<!-- served-apis -->", 1)[1].split("<!-- /served-apis -->", 1)[0]
    served = {}
    for key, versions in re.findall(r"^\| \w+ \| (\d+) \| ([\d-]+) \|$", table, re.M):
        low, _, high = versions.partition("-")
        served[int(key)] = (int(low), int(high or low))
    return served


def test_the_readme_lists_exactly_the_served_apis_and_versions():
    assert readme_table() == dict(SUPPORTED_VERSIONS)


def test_the_readme_names_each_api_as_kafka_does():
    with open(README, encoding="utf-8") as file:
        text = file.read()
    for key in SUPPORTED_VERSIONS:
        name = "".join(part.capitalize() for part in ApiKey(key).name.split("_"))
        assert f"| {name} | {int(key)} |" in text, name
