"""Tests for the corpus builder's measuring, dedupe, manifest and sampling logic.

Everything runs on synthetic in-memory audio: no package is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neucomp.data import corpus, manifest, packages, shards
from neucomp.data import sources as ds


def lowpassed_noise(cutoff_hz: float, rate: int = 44100, seconds: float = 3.0) -> np.ndarray:
    """White noise with everything above `cutoff_hz` removed, over a −100 dB noise floor."""
    rng = np.random.default_rng(1)
    n = int(rate * seconds)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / rate) > cutoff_hz] = 0
    x = np.fft.irfft(spec, n)
    x *= 0.3 / np.max(np.abs(x))
    return x + 1e-5 * rng.standard_normal(n)


@pytest.mark.parametrize("cutoff", [4000.0, 11000.0])
def test_bandwidth_of_lowpassed_noise(cutoff: float) -> None:
    bw = ds.bandwidth_hz(lowpassed_noise(cutoff), 44100)
    assert abs(bw - cutoff) < 150


def test_bandwidth_ignores_isolated_tone_and_handles_silence() -> None:
    rate = 44100
    x = lowpassed_noise(4000.0, rate)
    t = np.arange(x.size) / rate
    x_tone = x + 0.001 * np.sin(2 * np.pi * 15000 * t)  # a quiet whistle far above
    assert ds.bandwidth_hz(x_tone, rate) < 4200
    assert ds.bandwidth_hz(np.zeros(rate), rate) == 0.0


def test_bandwidth_of_full_band_noise_reaches_nyquist() -> None:
    x = np.random.default_rng(0).standard_normal(48000) * 0.1
    assert ds.bandwidth_hz(x, 24000) > 11500


def test_audio_hash_finds_same_audio_in_other_container(tmp_path: Path) -> None:
    x = np.round(16000 * lowpassed_noise(5000.0, 22050, 1.0)).astype(np.int16)
    sf.write(tmp_path / "a.wav", x, 22050, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", x, 22050, subtype="PCM_16")
    a, _ = ds.decode(tmp_path / "a.wav")
    b, _ = ds.decode(tmp_path / "b.flac")
    assert ds.file_hash(tmp_path / "a.wav") != ds.file_hash(tmp_path / "b.flac")
    assert ds.audio_hash(a) == ds.audio_hash(b)
    c = b.copy()
    c[0, 100] += 0.01
    assert ds.audio_hash(c) != ds.audio_hash(b)


def test_is_silent() -> None:
    assert ds.is_silent(np.full((1, 1000), 1e-4, dtype=np.float32))
    assert not ds.is_silent(np.full((1, 1000), 1e-2, dtype=np.float32))


def _job(tmp_path: Path, audio: np.ndarray, rate: int, category: str = "music") -> corpus.Job:
    src = tmp_path / "src.wav"
    sf.write(src, audio.T, rate, subtype="PCM_16")
    return corpus.Job(src, "x/src.wav", tmp_path / "c24.flac", tmp_path / "m48.flac", category, "")


def test_convert_writes_24k_mono_and_48k_stereo(tmp_path: Path) -> None:
    stereo = np.stack([lowpassed_noise(8000.0, 44100, 1.0)] * 2).astype(np.float32)
    row = corpus.convert(_job(tmp_path, stereo, 44100))
    assert row["status"] == "ok"
    assert row["orig_rate"] == 44100 and row["orig_channels"] == 2
    assert abs(row["bandwidth_hz"] - 8000) < 150
    info24, info48 = sf.info(tmp_path / "c24.flac"), sf.info(tmp_path / "m48.flac")
    assert (info24.samplerate, info24.channels) == (24000, 1)
    assert (info48.samplerate, info48.channels) == (48000, 2)
    assert abs(info24.frames - 24000) <= 1


def test_convert_scales_overshooting_decodes_instead_of_clipping(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    audio = (1.5 * np.sin(2 * np.pi * 440 * t))[None, :].astype(np.float32)
    src = tmp_path / "loud.wav"
    sf.write(src, audio.T, 44100, subtype="FLOAT")
    job = corpus.Job(src, "loud.wav", tmp_path / "c24.flac", None, "sfx", "")
    assert corpus.convert(job)["status"] == "ok"
    out, _ = sf.read(tmp_path / "c24.flac")
    assert 0.95 < np.max(np.abs(out)) <= 1.0
    # A clipped sine would have many samples stuck at full scale.
    assert np.mean(np.abs(out) > 0.99) < 0.2  # a clean sine: 9 %, clipped at 1/1.5: 54 %


@pytest.mark.parametrize(
    ("audio", "rate", "reason"),
    [
        (np.full((1, 8000), 0.1, dtype=np.float32), 11025, "rate"),
        (np.full((1, 4000), 0.1, dtype=np.float32), 44100, "short"),
        (np.zeros((1, 44100), dtype=np.float32), 44100, "silent"),
    ],
)
def test_convert_rejects(tmp_path: Path, audio: np.ndarray, rate: int, reason: str) -> None:
    row = corpus.convert(_job(tmp_path, audio, rate))
    assert row["status"].startswith(reason)
    assert not (tmp_path / "c24.flac").exists()


def test_package_rules() -> None:
    specs = {s.name: s for s in packages.TRAIN_PACKAGES}
    tux = specs["tuxpaint-stamps-default"]
    assert tux.classify("usr/share/tuxpaint/stamps/a/cat_desc_fr.ogg") == ("speech", "fr")
    assert tux.classify("usr/share/tuxpaint/stamps/a/cat_desc_pt_BR.wav") == ("speech", "pt_BR")
    assert tux.classify("usr/share/tuxpaint/stamps/a/cat_desc.ogg") == ("speech", "en")
    assert tux.classify("usr/share/tuxpaint/stamps/a/cat.ogg") == ("sfx", "")
    fillets = specs["fillets-ng-data"]
    assert fillets.classify("usr/share/games/fillets-ng/sound/elk/en/x.ogg") is None
    assert fillets.classify("usr/share/games/fillets-ng/sound/share/x.ogg") == ("sfx", "")
    assert fillets.classify("usr/share/games/fillets-ng/music/x.ogg") == ("music", "")
    lmms = specs["lmms-common"]
    assert lmms.classify("usr/share/lmms/samples/waveforms/saw.wav") is None
    assert lmms.classify("usr/share/lmms/samples/drums/kick.ogg") == ("sfx", "")
    assert not packages.DEV_EVAL_PACKAGES & set(specs)


def _entries() -> list[manifest.Entry]:
    E = manifest.Entry
    return [
        E("a/1.flac", "a", "speech", 100.0, 12000.0, 44100, 1, "fr"),
        E("b/1.flac", "b", "speech", 100.0, 7000.0, 16000, 1, "ru"),
        E("c/1.flac", "c", "music", 900.0, 16000.0, 44100, 2),
        E("c/2.flac", "c", "music", 100.0, 16000.0, 44100, 2),
        E("d/1.flac", "d", "sfx", 10.0, 20000.0, 48000, 2),
    ]


def test_manifest_round_trip(tmp_path: Path) -> None:
    entries = _entries()
    path = tmp_path / "manifest.tsv"
    manifest.write_manifest(path, [manifest.entry_row(e) for e in entries])
    back = manifest.load_manifest(path)
    assert back == sorted(entries, key=lambda e: e.path)
    assert back[0].full_path == tmp_path / "a/1.flac"
    assert path.read_text().splitlines()[0].split("\t") == list(manifest.MANIFEST_COLUMNS)


def test_write_tsv_is_atomic_and_formats_cells(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "table.tsv"
    ds.write_tsv(path, [{"a": 1.23456, "b": "x"}, {"a": 2}], ["a", "b"])
    assert path.read_text() == "a\tb\n1.235\tx\n2\t\n"

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ds.write_tsv(path, [{"a": 1, "b": Boom()}], ["a", "b"])
    assert path.read_text() == "a\tb\n1.235\tx\n2\t\n"  # the old table is intact
    assert [p.name for p in path.parent.iterdir()] == ["table.tsv"]  # no temp file left


def test_sampling_weights_balance_categories_and_bandwidth() -> None:
    entries = _entries()
    w = manifest.sampling_weights(entries)
    assert sum(w) == pytest.approx(1.0)
    by_cat = {c: 0.0 for c in manifest.CATEGORIES}
    for wi, e in zip(w, entries, strict=True):
        by_cat[e.category] += wi
    assert by_cat == pytest.approx(manifest.DEFAULT_SHARES)
    # Same duration, but b is telephone-band: it gets a quarter of a's mass (package
    # tempering with power 0.5 turns the 4:1 mass ratio into 2:1).
    assert w[0] / w[1] == pytest.approx(2.0)
    assert w[2] / w[3] == pytest.approx(9.0)  # within a package: proportional to duration
    w_untempered = manifest.sampling_weights(entries, package_power=1.0)
    assert w_untempered[0] / w_untempered[1] == pytest.approx(4.0)


def test_sampling_weights_missing_category_shares_redistributed() -> None:
    entries = [e for e in _entries() if e.category != "sfx"]
    w = manifest.sampling_weights(entries)
    assert sum(w[:2]) == pytest.approx(0.5)


def _noise_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus24"
    rows = []
    rng = np.random.default_rng(0)
    for i, cat in enumerate(["speech", "music", "sfx"]):
        rel = f"p{i}/{cat}.flac"
        ds.write_flac(root / rel, 0.3 * rng.standard_normal((1, 24000 * 20)), 24000)
        rows.append(
            {"path": rel, "package": f"p{i}", "category": cat, "duration_s": 20.0}
            | {"bandwidth_hz": 12000.0, "orig_rate": 24000, "orig_channels": 1, "language": ""}
        )
    manifest.write_manifest(root / "manifest.tsv", rows)
    return root


@pytest.mark.parametrize("fmt", shards.SHARD_FORMATS)
def test_shard_respects_size_cap(tmp_path: Path, fmt: str) -> None:
    root = _noise_corpus(tmp_path)
    out = tmp_path / "shard"
    made = shards.make_shard(root / "manifest.tsv", out, 1.0, seed=3, crop_s=2.0, fmt=fmt)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert 0 < total <= 2**20
    assert len(manifest.load_manifest(out / "manifest.tsv")) == len(made) > 5
    again = shards.make_shard(
        root / "manifest.tsv", tmp_path / "s2", 1.0, seed=3, crop_s=2.0, fmt=fmt
    )
    assert [r["source"] for r in again] == [r["source"] for r in made]
    for row in made[:3]:  # what the training sampler will read: 24 kHz mono, 2 s
        info = sf.info(str(out / row["path"]))
        assert row["path"].endswith(f".{fmt}")
        assert (info.samplerate, info.channels) == (24000, 1)
        assert info.duration == pytest.approx(2.0, abs=0.03)


def test_opus_shard_holds_more_audio_than_flac(tmp_path: Path) -> None:
    root = _noise_corpus(tmp_path)
    audio = {
        fmt: sum(
            float(r["duration_s"])
            for r in shards.make_shard(root / "manifest.tsv", tmp_path / fmt, 1.0, 3, 2.0, fmt)
        )
        for fmt in shards.SHARD_FORMATS
    }
    assert audio["opus"] > 2 * audio["flac"]
    # a higher compression level: a lower Opus bitrate, so more audio in the same MiB
    leaner = shards.make_shard(
        root / "manifest.tsv", tmp_path / "lean", 1.0, 3, 2.0, "opus", opus_level=0.87
    )
    assert sum(float(r["duration_s"]) for r in leaner) > 1.3 * audio["opus"]


def test_shard_rejects_an_unknown_format(tmp_path: Path) -> None:
    root = _noise_corpus(tmp_path)
    with pytest.raises(ds.DataBuildError, match="unknown shard format"):
        shards.make_shard(root / "manifest.tsv", tmp_path / "s", 1.0, fmt="mp3")


def test_build_dedupes_and_resumes_without_network(tmp_path: Path, monkeypatch) -> None:
    """A fake package (no apt): duplicates and short files are dropped, the manifest is
    written, and a second run skips the finished package entirely."""
    tree = tmp_path / "tree"
    sound = tree / "usr/share/games/fake/sound"
    sound.mkdir(parents=True)
    x = np.round(8000 * lowpassed_noise(6000.0, 22050, 1.0)).astype(np.int16)
    sf.write(sound / "a.wav", x, 22050)
    sf.write(sound / "b.flac", x, 22050)  # same audio, other container
    sf.write(sound / "c.wav", x[:1000], 22050)  # too short
    sf.write(sound / "d.wav", x[::-1].copy(), 22050)
    sf.write(sound / "d.flac", -x, 22050)  # same name, other audio: must not overwrite d.wav
    (tree / "usr/share/doc/fake").mkdir(parents=True)
    (tree / "usr/share/doc/fake/copyright").write_text("GPL")

    def fake_unpack(deb: Path, dest: Path) -> Path:
        shutil.copytree(tree, dest, dirs_exist_ok=True)
        return dest

    monkeypatch.setattr(ds, "download_deb", lambda name, cache: cache / "fake.deb")
    monkeypatch.setattr(ds, "unpack_deb", fake_unpack)
    spec = packages.PackageSpec("fake", (packages._match(r"/sound/", "speech", "xx"),))
    monkeypatch.setattr(corpus, "TRAIN_PACKAGES", (spec,))
    out = tmp_path / "data"
    entries = corpus.build(out, workers=1)
    assert sorted(e.path for e in entries) == [
        "fake/fake/sound/a.flac",
        "fake/fake/sound/d.flac",
        "fake/fake/sound/d.wav.flac",
    ]
    assert all(e.full_path.exists() for e in entries)
    assert all(e.language == "xx" and e.orig_rate == 22050 for e in entries)
    assert (out / "licenses/fake.copyright").read_text() == "GPL"
    status = {
        r["source"].rsplit("/", 1)[-1]: r["status"] for r in corpus.Corpus(out).read_state("fake")
    }
    assert status["b.flac"] == "duplicate audio" and status["c.wav"].startswith("short")

    def no_convert(job: corpus.Job) -> dict:
        raise AssertionError("a finished package must not be converted again")

    monkeypatch.setattr(corpus, "convert", no_convert)
    assert corpus.build(out, workers=1) == entries
