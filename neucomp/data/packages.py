"""The one package list: which Debian package feeds the training corpus (with the rules
that sort its files into speech / music / sfx and a language), and which the dev-eval
set (QUOTAS, clips per category and package). A package is never in both, except
fillets-ng-data, whose English dialogue is dev-eval and the rest training (its rules
skip that folder)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------- package rules

#: A rule maps a path inside the unpacked package to (category, language), or None to skip.
Rule = Callable[[str], "tuple[str, str] | None"]


def _match(pattern: str, category: str, language: str | int = "") -> Rule:
    """Rule: paths matching `pattern` get `category`; `language` is a constant or the
    number of the regex group that holds it."""
    rx = re.compile(pattern)

    def rule(rel: str) -> tuple[str, str] | None:
        m = rx.search(rel)
        if not m:
            return None
        lang = m.group(language) if isinstance(language, int) else language
        return category, lang or ""

    return rule


def _skip(pattern: str) -> Rule:
    """Rule: paths matching `pattern` are left out (the first matching rule wins)."""
    rx = re.compile(pattern)
    return lambda rel: ("", "") if rx.search(rel) else None


@dataclass(frozen=True)
class PackageSpec:
    """Which files of one Debian package go into the corpus, and as what."""

    name: str
    rules: tuple[Rule, ...]

    def classify(self, rel: str) -> tuple[str, str] | None:
        """(category, language) for a path inside the package, or None to leave it out."""
        for rule in self.rules:
            hit = rule(rel)
            if hit is not None:
                return hit if hit[0] else None
        return None


def _all(category: str, language: str = "") -> tuple[Rule, ...]:
    return (_match(r".", category, language),)


def _asterisk(lang: str) -> PackageSpec:
    return PackageSpec(f"asterisk-core-sounds-{lang}-g722", _all("speech", lang))


# Ordered so that the first packages already give a usable mix of speech, music and sfx.
TRAIN_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec(
        "tuxpaint-stamps-default",
        (
            _match(r"_desc_([A-Za-z@]+(?:_[A-Z]{2})?)(?:\.ogg)?\.(?:ogg|wav)$", "speech", 1),
            _match(r"_desc\.(?:ogg|wav)$", "speech", "en"),
            _match(r".", "sfx"),
        ),
    ),
    PackageSpec("warzone2100-music", _all("music")),
    PackageSpec(
        "fillets-ng-data-cs",
        (_match(r"/sound/.*/cs/", "speech", "cs"), _match(r"/sound/", "sfx")),
    ),
    PackageSpec("planetblupi-music-ogg", _all("music")),
    PackageSpec("klettres-data", (_match(r"/klettres/([^/]+)/", "speech", 1),)),
    PackageSpec(
        "hedgewars-data",
        (_match(r"/Data/Music/", "music"), _match(r"/Data/Sounds/", "sfx")),
    ),
    PackageSpec(
        "ktuberling-data",
        (_match(r"/ktuberling/sounds/([^/]+)/", "speech", 1), _match(r".", "sfx")),
    ),
    PackageSpec("ufoai-music", _all("music")),
    PackageSpec("hydrogen-drumkits", _all("sfx")),
    PackageSpec(
        "fillets-ng-data",
        (
            _skip(r"/sound/(?:.*/)?en/"),  # the English dialogue is dev-eval
            _match(r"/music/", "music"),
            _match(r"/sound/", "sfx"),
        ),
    ),
    PackageSpec("festvox-ru", (_match(r"/wav/", "speech", "ru"),)),
    PackageSpec("gcin-voice", _all("speech", "zh")),
    PackageSpec("fillets-ng-data-nl", (_match(r"/sound/", "speech", "nl"),)),
    *(_asterisk(lang) for lang in ("en", "es", "fr", "it", "ru")),
    PackageSpec("wesnoth-1.16-music", _all("music")),
    PackageSpec("nexuiz-music", _all("music")),
    PackageSpec(
        "colobot-common-sounds",
        (_match(r"/music/", "music"), _match(r"/sounds/", "sfx")),
    ),
    PackageSpec("drascula-music", _all("music")),
    PackageSpec("megaglest-data", (_match(r"/music/", "music"), _match(r".", "sfx"))),
    PackageSpec("fretsonfire-songs-sectoid", _all("music")),
    PackageSpec(
        "lmms-common",
        (_skip(r"/samples/(?:.*/)?(?:waveforms|shapes)/"), _match(r"/samples/", "sfx")),
    ),
    PackageSpec("sonic-pi-samples", _all("sfx")),
    PackageSpec("bucklespring-data", _all("sfx")),
)


def corpus_relpath(package: str, rel: str) -> str:
    """Where a source file lands inside the corpus: `<package>/<path>.flac`, without the
    `usr/share/(games/)` prefix that every package repeats."""
    short = re.sub(r"^usr/share/(?:games/)?", "", rel)
    return f"{package}/{Path(short).with_suffix('.flac').as_posix()}"


#: Clips per (category, package): about 20 speech, 15 music, 10 sfx.
QUOTAS: dict[str, dict[str, int]] = {
    "speech": {"fillets-ng-data": 8, "qabcs-data": 12},
    "music": {"hyperrogue-music": 15},
    "sfx": {
        "qabcs-data": 3,
        "hyperrogue-music": 3,
        "oxygen-sounds": 2,
        "sound-theme-freedesktop": 2,
    },
}
DEV_PACKAGES = sorted({p for quota in QUOTAS.values() for p in quota})

#: Dev-eval packages: never part of the corpus (checked when the corpus is built).
DEV_EVAL_PACKAGES = frozenset(DEV_PACKAGES) - {spec.name for spec in TRAIN_PACKAGES}
