"""The checkout the local stack runs from: the Kafka jars, deploy/kafka's configuration and the
engines' state (.local/) live beside the code, so `opsmantik stack` needs a checkout, while the
services themselves run from an installed package alone."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_MARKER = Path("deploy/kafka/pom.xml")


@cache
def checkout_root() -> Path:
    """The nearest folder holding deploy/kafka/pom.xml above this module (an editable install),
    else above the working directory; the working directory itself when there is none."""
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for folder in start.parents if start.is_file() else (start, *start.parents):
            if (folder / _MARKER).is_file():
                return folder
    return Path.cwd().resolve()
