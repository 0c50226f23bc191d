"""Training the 48 kHz stereo model: stereo crops, its config, the warm start from 24 kHz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from conftest import HQ_CONFIG, tiny_config, tiny_hq_config

from neucomp.data.manifest import write_manifest
from neucomp.model import Codec, CodecConfig
from neucomp.nn.envelope import envelope_slots
from neucomp.train.dataset import AugmentConfig, CropSampler
from neucomp.train.loop import TrainConfig, Trainer

RATE = 48000


def _stereo_corpus(root: Path) -> Path:
    """Two files: a stereo one with a silent right channel, and a mono one."""
    root.mkdir(parents=True)
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(root / "left.flac", np.stack([tone, np.zeros_like(tone)], axis=1), RATE)
    sf.write(root / "mono.flac", tone, RATE)
    rows = [
        {
            "path": name,
            "package": f"pkg{i}",
            "category": "music",
            "duration_s": 1.0,
            "bandwidth_hz": 20000.0,
            "orig_rate": RATE,
            "orig_channels": channels,
            "language": "",
        }
        for i, (name, channels) in enumerate([("left.flac", 2), ("mono.flac", 1)])
    ]
    write_manifest(root / "manifest.tsv", rows)
    return root


def test_the_config_builds_the_designed_model() -> None:
    cfg = TrainConfig.load(HQ_CONFIG)
    codec = CodecConfig.from_dict(cfg.model)
    assert (codec.name, codec.sample_rate, codec.channels) == ("neucomp_48khz", 48000, 2)
    assert (codec.hop_length, codec.frame_rate) == (640, 75.0)
    assert [codec.n_codebooks_for(b) for b in codec.bandwidths] == [4, 8, 16, 32]
    # the networks are trained for the learned share of each bandwidth: the envelope
    # (added after training, as for the 24 kHz model) takes the other half
    learned = [envelope_slots(codec.n_codebooks_for(b))[1] for b in codec.bandwidths]
    assert sorted(cfg.train_codebooks) == learned == [2, 4, 8, 16]
    codec.check()


def test_stereo_crops_keep_their_channels(tmp_path: Path) -> None:
    root = _stereo_corpus(tmp_path / "corpus")
    aug = AugmentConfig(mix_prob=0.0, swap_prob=0.0)
    sampler = CropSampler(root, RATE, 0.25, seed=0, augment=aug, channels=2)
    batch = sampler.batch(8)
    assert batch.shape == (8, 2, RATE // 4)
    silent_right = [bool((x[1] == 0).all()) for x in batch]
    both_equal = [bool(torch.equal(x[0], x[1])) for x in batch]
    # Every crop is either the left-only file (right silent) or the mono file (L = R).
    assert all(a != b for a, b in zip(silent_right, both_equal, strict=True))
    assert any(silent_right) and any(both_equal)
    swapped = CropSampler(
        root, RATE, 0.25, seed=0, augment=AugmentConfig(mix_prob=0.0, swap_prob=1.0), channels=2
    ).batch(8)
    # Swapped: the left-only file now has its silence on the left.
    assert not any(bool((x[1] == 0).all()) for x in swapped)
    assert any(bool((x[0] == 0).all()) for x in swapped)
    # A mono model still gets [B, 1, T]: the mean of the channels.
    assert CropSampler(root, RATE, 0.25, seed=0, augment=aug).batch(2).shape == (2, 1, RATE // 4)


def test_preloaded_audio_gives_the_same_crops(tmp_path: Path) -> None:
    # A mix of a short file (padded at a random offset) and long ones, stereo and mono
    # models, mixing on: every RNG draw must line up with the file-reading path.
    root = _stereo_corpus(tmp_path / "corpus")
    t = np.arange(RATE // 10) / RATE
    sf.write(root / "short.flac", (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), RATE)
    files = [
        ("left.flac", "music", 1.0),
        ("mono.flac", "music", 1.0),
        ("short.flac", "speech", 0.1),
    ]
    rows = [
        {
            "path": name,
            "package": f"pkg{i}",
            "category": category,
            "duration_s": duration,
            "bandwidth_hz": 20000.0,
            "orig_rate": RATE,
            "orig_channels": 1,
            "language": "",
        }
        for i, (name, category, duration) in enumerate(files)
    ]
    write_manifest(root / "manifest.tsv", rows)
    for channels in (1, 2):
        aug = AugmentConfig(mix_prob=0.5, swap_prob=0.5 if channels == 2 else 0.0)
        kw = dict(seed=3, augment=aug, channels=channels)
        from_files = CropSampler(root, RATE, 0.25, **kw)
        preloaded = CropSampler(root, RATE, 0.25, preload=True, **kw)
        assert preloaded.cache is not None and len(preloaded.cache) == 3
        for _ in range(4):
            assert torch.equal(from_files.batch(6), preloaded.batch(6))
        # The crops are copies: training on them never changes the cache.
        before = [c.copy() for c in preloaded.cache]
        preloaded.batch(6).mul_(0)
        assert all(np.array_equal(a, b) for a, b in zip(before, preloaded.cache, strict=True))


def test_a_stereo_model_trains(tmp_path: Path) -> None:
    config = TrainConfig(
        run_dir=str(tmp_path / "run"),
        corpus=str(_stereo_corpus(tmp_path / "corpus")),
        deveval=str(tmp_path / "none"),
        model=tiny_hq_config().to_dict(),
        segment_s=0.1,
        batch_size=2,
        threads=1,
        adv_start_step=0,
        disc_filters=4,
        train_codebooks=[4, 8],
        log_every=1000,
        ckpt_every=1000,
        val_every=0,
    )
    trainer = Trainer(config)
    stats = [trainer.train_step() for _ in range(2)]
    assert all(np.isfinite(s["mel"]) and np.isfinite(s["adv"]) for s in stats)
    assert {s["n_q"] for s in stats} <= {4, 8}


def test_warm_start_from_the_24khz_model_copies_the_shared_body(tmp_path: Path) -> None:
    from neucomp.registry import save_model
    from neucomp.train.common import warm_start

    torch.manual_seed(1)
    donor = Codec(tiny_config())  # base width 4, ratios 2·4·5·8
    save_model(donor, tmp_path / "donor.pt")
    torch.manual_seed(2)
    hq = Codec(tiny_hq_config())  # base width 2, ratios 2·2·4·5·8
    assert hq.config.seanet.base_width * 2 == donor.config.seanet.base_width
    fresh = warm_start(hq, tmp_path / "donor.pt")

    per_stage = hq.config.seanet.n_residual_layers + 2  # residual units, ELU, strided conv
    theirs = dict(donor.named_modules())
    ours = dict(hq.named_modules())
    copied = 0
    for i in range(1, len(donor.encoder.layers)):
        for name, p in theirs[f"encoder.layers.{i}"].named_parameters():
            mine = dict(ours[f"encoder.layers.{i + per_stage}"].named_parameters())[name]
            torch.testing.assert_close(mine, p.detach(), rtol=0, atol=2e-3)  # fp16 file
            copied += 1
    n_dec = len(donor.decoder.layers)
    for i in range(n_dec - 2):  # up to the donor's last stage; the output conv is new
        for name, p in theirs[f"decoder.layers.{i}"].named_parameters():
            mine = dict(ours[f"decoder.layers.{i}"].named_parameters())[name]
            torch.testing.assert_close(mine, p.detach(), rtol=0, atol=2e-3)
            copied += 1
    assert copied > 20
    torch.testing.assert_close(
        hq.quantizer.state_dict()["layers.0.embed"],
        donor.quantizer.state_dict()["layers.0.embed"],
        rtol=0,
        atol=2e-3,
    )
    # What has no counterpart starts fresh: the new input stage and the stereo output conv.
    assert any(k.startswith("encoder.layers.0.") for k in fresh)
    assert any(k.startswith(f"decoder.layers.{len(hq.decoder.layers) - 1}.") for k in fresh)
    assert not any(k.startswith(f"encoder.layers.{per_stage + 1}.") and "bias" in k for k in fresh)


def test_shipped_config_file_parses_as_json() -> None:
    data = json.loads(HQ_CONFIG.read_text())
    assert data["model"]["bandwidths"] == [3.0, 6.0, 12.0, 24.0]


def test_validation_of_a_stereo_model_measures_the_image(tmp_path: Path) -> None:
    from neucomp.train.validate import Validator

    dev = tmp_path / "deveval" / "music"
    dev.mkdir(parents=True)
    t = np.arange(RATE // 2) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(dev / "clip.flac", np.stack([tone, 0.5 * tone], axis=1), 44100)
    codec = Codec(tiny_hq_config())
    validator = Validator(tmp_path / "deveval", codec.config, max_clips=4, max_seconds=1.0)
    assert validator.clips[0][1].shape[1] == 2  # [1, 2, T] at the model's rate
    results = validator.run(codec, 0, tmp_path / "val.csv")
    for bw in ("3", "24"):
        assert {f"side_lsd_{bw}", f"ild_error_{bw}", f"lsd_12_20k_{bw}"} <= set(results)


def test_a_deeper_warm_start_computes_what_its_source_did(tmp_path: Path) -> None:
    """Three residual units per stage from a one-unit model: the source's layers land in
    their places, the extra units start as identities, and they are still trainable."""
    import dataclasses

    from neucomp.registry import save_model
    from neucomp.train.common import warm_start

    torch.manual_seed(1)
    donor = Codec(tiny_config()).eval()
    save_model(donor, tmp_path / "donor.pt")
    seanet = dataclasses.replace(
        tiny_config().seanet, n_residual_layers=3, dilation_base=3, weight_norm=True
    )
    torch.manual_seed(2)
    deep = Codec(dataclasses.replace(tiny_config(), seanet=seanet)).eval()
    assert len(deep.decoder.layers) == len(donor.decoder.layers) + 2 * len(seanet.ratios)
    before = deep.state_dict()
    warm_start(deep, tmp_path / "donor.pt")

    x = 0.1 * torch.randn(1, 1, 1920)
    with torch.no_grad():
        z_donor, z_deep = donor.encoder(x)[0], deep.encoder(x)[0]
        torch.testing.assert_close(z_deep, z_donor, rtol=0, atol=5e-3)  # fp16 file
        torch.testing.assert_close(
            deep.decoder(z_donor)[0], donor.decoder(z_donor)[0], rtol=0, atol=5e-3
        )
    # The new units' first convs keep their random init; their gains are 0 but learn.
    new_unit = deep.encoder.layers[2]  # stage 0, unit 1
    conv1 = "encoder.layers.2.conv1.conv.parametrizations.weight.original1"
    torch.testing.assert_close(deep.state_dict()[conv1], before[conv1])
    gain = new_unit.conv2.conv.parametrizations.weight.original0
    assert gain.abs().max() == 0
    deep.train()
    deep.decoder(deep.encoder(x)[0])[0].square().mean().backward()
    assert gain.grad is not None and gain.grad.abs().max() > 0
