"""Tests for the dev-eval clip planning and rendering, on synthetic in-memory audio."""

from __future__ import annotations

import numpy as np
import pytest

from neucomp.data import devset
from neucomp.data.devset import GAP_S, MAX_S, MIN_S, Source


def synthetic_sources() -> list[Source]:
    """Two speakers of short words, two long music tracks and a set of short sounds."""
    rng = np.random.default_rng(42)
    out = []
    for spk in ("anna", "boris"):
        for i in range(30):
            frames = int(rng.uniform(0.4, 1.6) * 22050)
            out.append(Source("qabcs-data", f"{spk}/w{i:02d}.ogg", "speech", spk, 22050, 1, frames))
    for t in range(2):
        out.append(
            Source("hyperrogue-music", f"m/t{t}.ogg", "music", f"t{t}", 44100, 2, 44100 * 90)
        )
    for i in range(12):
        out.append(Source("oxygen-sounds", f"s/{i}.ogg", "sfx", "s", 48000, 2, 48000 * (1 + i % 3)))
    return out


def fake_audio(source: Source) -> np.ndarray:
    """Deterministic audio per source, so rendered clips can be compared bit for bit."""
    seed = sum(source.path.encode())
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((source.channels, source.frames))).astype(np.float32)


def test_plan_is_deterministic_for_a_seed() -> None:
    sources = synthetic_sources()
    a = devset.plan_category(sources[:60], 5, np.random.default_rng(7), "q_")
    b = devset.plan_category(sources[:60], 5, np.random.default_rng(7), "q_")
    c = devset.plan_category(sources[:60], 5, np.random.default_rng(8), "q_")
    assert a == b
    assert a != c
    assert [p.name for p in a] == [p.name for p in b]


def test_clips_are_5_to_10_s_from_one_speaker_without_reuse() -> None:
    sources = synthetic_sources()[:60]
    plans = devset.plan_category(sources, 6, np.random.default_rng(0), "q_")
    assert len(plans) == 6
    used = [p.source.path for plan in plans for p in plan.pieces]
    assert len(used) == len(set(used))
    for plan in plans:
        assert MIN_S <= plan.duration_s <= MAX_S
        assert len({p.source.group for p in plan.pieces}) == 1
        assert len(plan.pieces) > 1  # single words had to be concatenated
    # Round-robin over groups: both speakers get clips.
    assert {plan.pieces[0].source.group for plan in plans} == {"anna", "boris"}


def test_long_sources_are_cropped() -> None:
    music = [s for s in synthetic_sources() if s.category == "music"]
    plans = devset.plan_category(music, 5, np.random.default_rng(1), "m_")
    assert len(plans) == 2  # one clip per track, tracks are not reused
    for plan in plans:
        (piece,) = plan.pieces
        assert MIN_S <= piece.frames / 44100 <= MAX_S
        assert 0 <= piece.start <= piece.source.frames - piece.frames


def test_render_concatenates_with_gaps_and_normalises_peak() -> None:
    sources = synthetic_sources()[:30]
    (plan,) = devset.plan_category(sources, 1, np.random.default_rng(3), "q_")
    clip = devset.render(plan, fake_audio)
    rate = 22050
    gap = int(round(GAP_S * rate))
    assert clip.shape == (1, sum(p.frames for p in plan.pieces) + gap * (len(plan.pieces) - 1))
    assert np.max(np.abs(clip)) == pytest.approx(devset.PEAK, rel=1e-6)
    first = plan.pieces[0].frames
    assert not np.any(clip[:, first : first + gap])  # silence between words
    # Apart from one gain, the words are untouched.
    gain = devset.PEAK / np.max(
        np.abs(np.concatenate([fake_audio(p.source) for p in plan.pieces], 1))
    )
    np.testing.assert_allclose(clip[:, :first], gain * fake_audio(plan.pieces[0].source), rtol=1e-5)


def test_stereo_stays_stereo_and_render_is_reproducible() -> None:
    sfx = [s for s in synthetic_sources() if s.category == "sfx"]
    plans = devset.plan_category(sfx, 2, np.random.default_rng(5), "s_")
    for plan in plans:
        a, b = devset.render(plan, fake_audio), devset.render(plan, fake_audio)
        assert a.shape[0] == 2
        np.testing.assert_array_equal(a, b)


def test_plan_devset_quotas_and_names() -> None:
    sources = [
        Source(s.package, s.path, s.category, s.group, s.rate, s.channels, s.frames)
        for s in synthetic_sources()
    ]
    plans = devset.plan_devset(sources, seed=0)
    assert plans == devset.plan_devset(sources, seed=0)
    names = [p.name for p in plans]
    assert len(names) == len(set(names))
    assert all(
        n.startswith(f"{p.category}/") and n.endswith(".flac")
        for n, p in zip(names, plans, strict=True)
    )
    assert sum(p.category == "speech" for p in plans) <= devset.QUOTAS["speech"]["qabcs-data"]


@pytest.mark.parametrize(
    ("package", "rel", "expected"),
    [
        (
            "fillets-ng-data",
            "usr/share/games/fillets-ng/sound/elk/en/deu-l-ja.ogg",
            ("speech", "speaker-l"),
        ),
        ("fillets-ng-data", "usr/share/games/fillets-ng/sound/barrel/en/bar-x-gr0.ogg", None),
        ("fillets-ng-data", "usr/share/games/fillets-ng/sound/linux/en/key3.ogg", None),
        ("fillets-ng-data", "usr/share/games/fillets-ng/music/kufr.ogg", None),
        ("qabcs-data", "usr/share/qabcs/abcs/ru/sounds/words/x.ogg", ("speech", "ru")),
        ("qabcs-data", "usr/share/qabcs/abcs/all/noises/pig.ogg", ("sfx", "noises")),
        ("hyperrogue-music", "usr/share/hyperrogue/music/hr3-caves.ogg", ("music", "hr3-caves")),
        ("oxygen-sounds", "usr/share/sounds/Oxygen-Sys-Log-In.ogg", ("sfx", "sounds")),
    ],
)
def test_classify(package: str, rel: str, expected: tuple[str, str] | None) -> None:
    assert devset.classify(package, rel) == expected


def test_dev_packages_never_in_training_corpus() -> None:
    from neucomp.data import packages

    train = {s.name for s in packages.TRAIN_PACKAGES}
    # fillets-ng-data is shared: only its English dialogue is dev-eval, and the corpus
    # rules leave that out (tested in test_corpus).
    assert set(devset.DEV_PACKAGES) & train == {"fillets-ng-data"}
    assert set(devset.DEV_PACKAGES) - {"fillets-ng-data"} <= packages.DEV_EVAL_PACKAGES
