"""Messages of the household page in Japanese (the default) and English.

The catalogues are JSON files beside this module (``messages/ja.json``, ``messages/en.json``),
flat maps from a dotted key to text with ``{name}`` placeholders. Both must hold the same keys
(checked at load). The language comes from ``?lang=`` (which also sets the cookie), then the
``lang`` cookie, then the default; nothing else (no Accept-Language guessing: the page is
Japanese first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from agent.web.errors import WebError

LANGUAGES: tuple[str, ...] = ("ja", "en")
COOKIE = "lang"


@dataclass(frozen=True)
class Translator:
    """Looks up a message in one language; a missing key is a bug and raises KeyError."""

    lang: str
    messages: Mapping[str, str]

    def __call__(self, key: str, /, **values: object) -> str:
        text = self.messages[key]
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        return key in self.messages


@cache
def catalogues() -> dict[str, dict[str, str]]:
    """Both message catalogues, loaded once and checked to hold the same keys."""
    loaded: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        ref = resources.files("agent.web").joinpath(f"messages/{lang}.json")
        data = json.loads(ref.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise WebError(f"messages/{lang}.json: expected an object of strings")
        loaded[lang] = data
    first, *rest = LANGUAGES
    for lang in rest:
        missing = set(loaded[first]) ^ set(loaded[lang])
        if missing:
            raise WebError(f"messages/{lang}.json and {first}.json differ in keys: "
                           f"{', '.join(sorted(missing))}")
    return loaded


def translator(lang: str) -> Translator:
    """The translator for ``lang`` (an unknown language falls back to Japanese)."""
    chosen = lang if lang in LANGUAGES else LANGUAGES[0]
    return Translator(chosen, catalogues()[chosen])


def choose(query: str | None, cookie: str | None, default: str = "ja") -> str:
    """The page language: a valid ``?lang=`` first, then a valid cookie, then ``default``."""
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    return default if default in LANGUAGES else LANGUAGES[0]
