"""Training: losses fall, checkpoints resume exactly, balancer and discriminator behave."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from conftest import tiny_config

from neucomp.data.manifest import write_manifest
from neucomp.model import Codec, CodecConfig
from neucomp.train.balancer import Balancer
from neucomp.train.discriminator import MultiScaleSTFTDiscriminator
from neucomp.train.loop import TrainConfig, Trainer, learning_rate
from neucomp.train.losses import (
    FramePeriodicLoss,
    IntelligibilityLoss,
    LevelDifferenceLoss,
    LogSTFTMagnitudeLoss,
    MultiScaleMelLoss,
    PhaseDerivativeLoss,
)
from neucomp.train.validate import Validator, append_row


def _tiny_corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, category in enumerate(["speech", "speech", "music", "sfx"]):
        t = np.arange(24000) / 24000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        audio = (audio + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        path = root / f"{category}{i}.flac"
        sf.write(path, audio, 24000)
        rows.append(
            {
                "path": path.name,
                "package": f"pkg{i}",
                "category": category,
                "duration_s": 1.0,
                "bandwidth_hz": 11000.0,
                "orig_rate": 24000,
                "orig_channels": 1,
                "language": "",
            }
        )
    write_manifest(root / "manifest.tsv", rows)
    return root


@pytest.fixture
def config(tmp_path: Path) -> TrainConfig:
    corpus = _tiny_corpus(tmp_path / "corpus")
    return TrainConfig(
        run_dir=str(tmp_path / "run"),
        corpus=str(corpus),
        deveval=str(tmp_path / "none"),
        model=tiny_config().to_dict(),
        segment_s=0.2,
        batch_size=2,
        threads=1,
        adv_start_step=0,
        disc_filters=4,
        lr=3e-3,
        log_every=1000,
        ckpt_every=1000,
        val_every=0,
    )


@pytest.mark.parametrize(("mixing", "mel_loss"), [("balancer", "v1"), ("sum", "v1"), ("sum", "v2")])
def test_steps_lower_the_loss(config: TrainConfig, monkeypatch, mixing, mel_loss) -> None:
    config.adv_start_step = 10_000  # reconstruction only: a clean signal to follow
    config.loss_mixing, config.mel_loss = mixing, mel_loss
    if mixing == "sum":  # the fixed recipe: level-normalised L1, commitment averaged
        config.level_norm_l1, config.commit_mean = True, True
    trainer = Trainer(config)
    fixed = trainer.sampler.batch(2)
    monkeypatch.setattr(trainer.sampler, "batch", lambda n: fixed)
    monkeypatch.setattr(trainer, "_choose_codebooks", lambda: 8)
    mels = [trainer.train_step()["mel"] for _ in range(25)]
    assert np.mean(mels[-5:]) < 0.8 * np.mean(mels[:5])
    assert trainer.step == 25


def test_phase_loss_joins_the_sum_when_weighted(config: TrainConfig, monkeypatch) -> None:
    config.adv_start_step, config.loss_mixing = 10_000, "sum"
    config.weights = {"l1": 0.1, "mel": 1.0, "phase": 1.0}
    config.phase_n_ffts = [256]
    trainer = Trainer(config)
    fixed = trainer.sampler.batch(2)
    monkeypatch.setattr(trainer.sampler, "batch", lambda n: fixed)
    monkeypatch.setattr(trainer, "_choose_codebooks", lambda: 8)
    phases = [trainer.train_step()["phase"] for _ in range(25)]
    assert np.mean(phases[-5:]) < np.mean(phases[:5])


def test_frame_periodic_loss_joins_the_sum_when_weighted(config: TrainConfig) -> None:
    config.adv_start_step, config.loss_mixing = 10_000, "sum"
    config.weights = {"l1": 0.1, "mel": 1.0, "periodic": 0.01}
    trainer = Trainer(config)
    stats = trainer.train_step()
    assert "periodic" in stats and stats["periodic"] >= 0.0
    config.weights = {"l1": 0.1, "mel": 1.0}
    assert "periodic" not in Trainer(config).train_step()


def test_frame_periodic_loss_hears_a_buzz_locked_to_the_frame() -> None:
    hop, frames = 64, 40
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, hop * frames, generator=g)
    other = torch.randn(3, 2, hop * frames, generator=g)  # as loud, not periodic
    pattern = torch.randn(hop, generator=g).repeat(frames)
    loss = FramePeriodicLoss(hop)
    assert float(loss(x, other)) < 1.0  # a different signal is no more periodic
    buzz_10 = float(loss(x, other + pattern * 10 ** (-10 / 20)))
    buzz_20 = float(loss(x, other + pattern * 10 ** (-20 / 20)))
    assert buzz_10 > 5.0 and buzz_10 > buzz_20 > 0.5  # in dB: a weaker buzz still counts
    # the same buzz one sample off the frame grid's period is averaged away
    drifting = torch.randn(hop + 1, generator=g).repeat(frames)[: hop * frames]
    assert float(loss(x, other + drifting * 10 ** (-10 / 20))) < 1.0
    assert float(loss(x * 1e-3, (other + pattern * 0.3) * 1e-3)) == pytest.approx(
        float(loss(x, other + pattern * 0.3)), rel=1e-4
    )
    y = (other + pattern * 0.3).requires_grad_()
    loss(x, y).backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        loss(x[..., :hop], y[..., :hop])


def test_level_difference_loss_sees_the_balance_and_nothing_else() -> None:
    g = torch.Generator().manual_seed(1)
    src = torch.randn(2, 1, 24000, generator=g)
    panned = torch.cat([src * 10 ** (4 / 20), src], 1)  # 4 dB to the left
    loss = LevelDifferenceLoss(24000, n_fft=1024)
    centred = torch.cat([src, src], 1) * 10 ** (2 / 20)
    assert float(loss(panned, centred)) == pytest.approx(0.4, abs=0.02)  # 4 dB, log10
    swapped = panned.flip(1)
    assert float(loss(panned, swapped)) == pytest.approx(0.8, abs=0.04)
    assert float(loss(panned, panned)) == 0.0
    # the balance, not the level or the content
    other = torch.randn(2, 1, 24000, generator=g)
    assert float(loss(panned, torch.cat([other * 10 ** (4 / 20), other], 1))) < 0.1
    assert float(loss(src, src * 2)) == 0.0  # mono: no balance to keep
    y = centred.clone().requires_grad_()
    loss(panned, y).backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


def test_level_difference_loss_joins_the_sum_when_weighted(config: TrainConfig) -> None:
    config.adv_start_step, config.loss_mixing = 10_000, "sum"
    config.weights = {"l1": 0.1, "mel": 1.0, "ild": 1.0}
    assert "ild" in Trainer(config).train_step()


def test_overshoot_applies_to_the_chosen_categories_only(config: TrainConfig) -> None:
    """The batch knows each crop's category; with logmag_overshoot_categories the loss is
    the overshoot-weighted one on those crops and the plain one on the rest."""
    config.logmag_overshoot = 4.0
    trainer = Trainer(config)
    x = trainer.sampler.batch(6)
    categories = trainer.sampler.batch_categories
    assert len(categories) == 6 and set(categories) <= {"speech", "music", "sfx"}
    y = x + 0.01 * torch.randn_like(x)
    everywhere = float(trainer._logmag(x, y))
    assert everywhere == pytest.approx(float(trainer.logmag_loss(x, y)))
    trainer.cfg.logmag_overshoot_categories = ["speech"]
    chosen = np.array([c == "speech" for c in categories])
    expected = 0.0
    for mask, loss in ((chosen, trainer.logmag_loss), (~chosen, trainer.logmag_plain)):
        if mask.any():
            expected += float(loss(x[mask], y[mask])) * mask.mean()
    assert float(trainer._logmag(x, y)) == pytest.approx(expected, rel=1e-5)
    trainer.cfg.logmag_overshoot_categories = ["nothing"]
    assert float(trainer._logmag(x, y)) == pytest.approx(float(trainer.logmag_plain(x, y)))


def test_log_magnitude_overshoot_can_stop_at_a_frequency() -> None:
    """An output that leaves out everything above 8 kHz undershoots there: cheap under
    the overshoot weight everywhere, the plain L1's price when the weight stops at 8 kHz."""
    import scipy.signal as ss

    torch.manual_seed(0)
    t = torch.arange(24000) / 24000
    x = 0.05 * sum(torch.cos(2 * torch.pi * 150 * k * t) / k for k in range(1, 30))
    x = (x + 0.01 * torch.randn_like(x)).reshape(1, 1, -1)
    lowpass = ss.butter(8, 8000, fs=24000)
    y = torch.from_numpy(ss.lfilter(*lowpass, x.numpy()).astype(np.float32))
    everywhere = float(LogSTFTMagnitudeLoss(overshoot=4.0)(x, y))
    below = float(LogSTFTMagnitudeLoss(overshoot=4.0, overshoot_below_hz=8000)(x, y))
    plain = float(LogSTFTMagnitudeLoss()(x, y))
    assert everywhere < 0.6 * below and below == pytest.approx(plain, rel=0.02)


def test_log_magnitude_floor_is_set_from_the_config(config: TrainConfig) -> None:
    """A lower floor lets haze under the default one count (E17): both the overshoot and
    the plain loss take it, and it raises the cost of quiet haze on a silent reference."""
    config.logmag_floor = 1e-4
    trainer = Trainer(config)
    assert trainer.logmag_loss.floor == trainer.logmag_plain.floor == 1e-4
    x = torch.zeros(2, 1, 4800)
    x[..., :2400] = 0.1 * torch.randn(2, 1, 2400)
    y = x.clone()
    y[..., 2400:] = 1e-3 * torch.randn(2, 1, 2400)  # quiet haze where the reference is silent
    assert float(trainer.logmag_plain(x, y)) > float(LogSTFTMagnitudeLoss()(x, y))


def test_log_magnitude_high_floor_sees_quiet_sibilants_and_leaves_the_low_band(
    config: TrainConfig,
) -> None:
    """A lower floor above 8 kHz makes a decoder that drops quiet 8–12 kHz noise (under
    the default floor) pay, while an error below 8 kHz costs what it did."""
    import scipy.signal as ss

    torch.manual_seed(0)
    t = torch.arange(24000) / 24000
    voice = (0.05 * sum(torch.cos(2 * torch.pi * 150 * k * t) / k for k in range(1, 30))).reshape(
        1, 1, -1
    )

    def band_noise(low: float, high: float, level: float) -> torch.Tensor:
        sos = ss.butter(8, [low, high], "bandpass", fs=24000, output="sos")
        noise = ss.sosfilt(sos, torch.randn(24000).numpy()).astype(np.float32)
        return level * torch.from_numpy(noise).reshape(1, 1, -1)

    default, high = LogSTFTMagnitudeLoss(), LogSTFTMagnitudeLoss(high_floor=1e-4)
    sibilants = voice + band_noise(8500, 11500, 2e-4)  # the output leaves them out
    assert float(default(sibilants, voice)) < 0.2 * float(high(sibilants, voice))
    murmur = voice + band_noise(1000, 3000, 2e-3)  # an error below 8 kHz only
    assert float(high(murmur, voice)) == pytest.approx(float(default(murmur, voice)), rel=0.05)
    config.logmag_high_floor = 1e-4
    trainer = Trainer(config)
    for loss in (trainer.logmag_loss, trainer.logmag_plain):
        assert loss.high_floor == 1e-4 and loss.high_floor_hz == 8000.0


def test_intelligibility_loss_only_on_the_chosen_categories(config: TrainConfig) -> None:
    """With stoi_categories the intelligibility loss is computed on those crops alone,
    and a batch without any of them has no such term (not a zero that the balancer
    would normalise)."""
    config.weights = {**config.weights, "stoi": 1.0}
    config.segment_s = 0.5  # one 384 ms segment and a few more
    trainer = Trainer(config)
    x = trainer.sampler.batch(6)
    y = x + 0.05 * torch.randn_like(x)
    assert float(trainer._stoi(x, y)) == pytest.approx(float(trainer.stoi_loss(x, y)))
    trainer.cfg.stoi_categories = ["speech"]
    chosen = torch.tensor([c == "speech" for c in trainer.sampler.batch_categories])
    if chosen.any():
        expected = float(trainer.stoi_loss(x[chosen], y[chosen]))
        assert float(trainer._stoi(x, y)) == pytest.approx(expected, rel=1e-5)
    trainer.cfg.stoi_categories = ["nothing"]
    assert trainer._stoi(x, y) is None
    stats = trainer.train_step()  # "nothing" is in no batch: the step runs without it
    assert "stoi" not in stats and np.isfinite(stats["mel"])


def test_resume_gives_the_same_next_step(config: TrainConfig) -> None:
    first = Trainer(config)
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    expected = first.train_step()
    assert {"adv", "feat", "d_loss"} <= set(expected)

    resumed = Trainer(config)
    assert resumed.try_resume() and resumed.step == 2
    got = resumed.train_step()
    assert got == expected


def test_learning_rate_cools_down_on_a_half_cosine() -> None:
    cfg = TrainConfig(lr=1e-3, lr_decay_start=100, lr_decay_steps=50, lr_final_ratio=0.1)
    assert learning_rate(cfg, 0) == learning_rate(cfg, 99) == 1e-3
    assert learning_rate(cfg, 125) == pytest.approx(0.55e-3)  # half way
    lrs = [learning_rate(cfg, s) for s in range(100, 151)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert learning_rate(cfg, 150) == learning_rate(cfg, 10_000) == pytest.approx(1e-4)
    assert learning_rate(TrainConfig(lr=2e-4), 10**6) == 2e-4  # no cool-down configured


def test_learning_rate_warms_up_linearly_first() -> None:
    cfg = TrainConfig(lr=1e-3, lr_warmup_steps=10, lr_decay_start=100, lr_decay_steps=50)
    assert [learning_rate(cfg, s) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])
    assert learning_rate(cfg, 10) == learning_rate(cfg, 99) == 1e-3


def test_a_wall_budget_sets_the_steps_and_the_cool_down(config: TrainConfig) -> None:
    config.adv_start_step = 10_000
    config.max_wall_s, config.fit_steps_to_wall, config.fit_decay_from = 3.0, True, 0.6
    config.fit_window = (2, 8)  # (50, 200) on a real run
    trainer = Trainer(config)
    trainer.run()
    fitted = trainer.cfg
    # steps 2–8 measure the rate; the rest of the budget buys the others
    assert fitted.steps > 8 and trainer.step <= fitted.steps
    assert fitted.lr_decay_start == max(8, int(0.6 * fitted.steps))
    assert fitted.lr_decay_start + fitted.lr_decay_steps == fitted.steps
    # it ended near the budget, by the fitted count or the hard stop, not long before
    assert trainer.step >= 0.8 * fitted.steps
    # a resumed run keeps the fitted budget: its own fit window has passed
    resumed = Trainer(TrainConfig(**{**asdict(config), "steps": 10**6}))
    assert resumed.try_resume()
    assert (resumed.cfg.steps, resumed.cfg.lr_decay_start) == (
        fitted.steps,
        fitted.lr_decay_start,
    )


def test_the_wall_fit_counts_the_validations(config: TrainConfig, monkeypatch) -> None:
    # The fit window has no validation in it; without a refit the validations' time
    # would stop the run by the wall clock partway through its cool-down.
    import neucomp.train.loop as loop

    class SlowValidator:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def run(self, *args, **kwargs) -> None:
            time.sleep(0.25)

    monkeypatch.setattr(loop, "Validator", SlowValidator)
    config.adv_start_step, config.val_every = 10_000, 10
    config.max_wall_s, config.fit_steps_to_wall, config.fit_decay_from = 4.0, True, 0.6
    config.fit_window = (2, 8)
    trainer = Trainer(config)
    trainer.run()
    fitted = trainer.cfg
    assert fitted.lr_decay_start + fitted.lr_decay_steps == fitted.steps
    assert trainer.step >= 0.95 * fitted.steps  # the cool-down ran (nearly) to its end
    assert learning_rate(fitted, trainer.step - 1) < 0.3 * config.lr


def test_steps_use_the_scheduled_rate_and_resume_replays_it(config: TrainConfig) -> None:
    config.lr_decay_start, config.lr_decay_steps = 0, 4
    first = Trainer(config)
    rates = [first.train_step()["lr"] for _ in range(2)]
    assert rates == [config.lr, learning_rate(config, 1)] and rates[1] < config.lr
    assert first.opt_g.param_groups[0]["lr"] == first.opt_d.param_groups[0]["lr"] == rates[1]
    first.save_checkpoint()
    expected = first.train_step()
    resumed = Trainer(config)
    assert resumed.try_resume()
    assert resumed.train_step() == expected


def test_config_round_trips_through_json(config: TrainConfig, tmp_path: Path) -> None:
    import json

    path = tmp_path / "c.json"
    path.write_text(json.dumps(asdict(config)))
    again = TrainConfig.load(path, {"batch_size": 5})
    assert again.batch_size == 5 and again.model == config.model


def test_balancer_gives_each_loss_its_weighted_share() -> None:
    out = torch.zeros(4, 1, 100, requires_grad=True)
    target = torch.randn(4, 1, 100)
    losses = {"big": 1000 * ((out - target) ** 2).mean(), "small": 1e-3 * (out - 1).abs().mean()}
    balancer = Balancer({"big": 1.0, "small": 3.0}, ema_decay=0.0)
    grad, norms = balancer.gradient(losses, out)
    assert norms["big"] > 1e4 * norms["small"]
    # With the EMA equal to this step's norm, the mixed gradient's per-example norm is
    # bounded by the reference norm, and the small loss gets 3/4 of it.
    (g_small,) = torch.autograd.grad(losses["small"], out, retain_graph=True)
    share_small = float((grad * g_small).sum() / g_small.norm() / grad.norm())
    assert share_small > 0.5
    per_example = grad.flatten(1).norm(dim=1)
    assert float(per_example.max()) <= 1.0 + 1e-4


def test_discriminator_outputs_one_map_per_scale() -> None:
    disc = MultiScaleSTFTDiscriminator(audio_channels=1, filters=4)
    logits, feats = disc(torch.randn(2, 1, 4800))
    assert len(logits) == 5 and len(feats) == 5
    for lg, ft in zip(logits, feats, strict=True):
        assert lg.shape[0] == 2 and lg.shape[1] == 1
        assert len(ft) == 5 and all(f.shape[0] == 2 for f in ft)
    stereo = MultiScaleSTFTDiscriminator(audio_channels=2, filters=4)
    assert len(stereo(torch.randn(1, 2, 4800))[0]) == 5


def test_mel_loss_measures_distortion() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 1, 24000) * 0.1
    mel = MultiScaleMelLoss(24000)
    mild, heavy = x + 0.01 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)
    assert float(mel(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(mel(x, mild)) < float(mel(x, heavy))


def test_logmag_loss_sees_the_valleys_between_harmonics() -> None:
    """A harmonic tone against noise with its smoothed spectrum (the same envelope, no
    harmonics) costs far more than against itself 6 dB louder plus a little noise."""
    torch.manual_seed(0)
    t = torch.arange(24000) / 24000
    x = 0.05 * sum(torch.cos(2 * torch.pi * 150 * k * t) / k for k in range(1, 30))
    x = x.reshape(1, 1, -1)
    spectrum = torch.fft.rfft(x.flatten())
    smooth = F.avg_pool1d(spectrum.abs()[None, None], 301, 1, 150).flatten()
    noise = torch.fft.rfft(torch.randn(24000))
    envelope_only = torch.fft.irfft(noise / noise.abs() * smooth, n=24000).reshape(1, 1, -1)
    loss = LogSTFTMagnitudeLoss()
    assert float(loss(x, x)) == 0.0
    close = float(loss(x, 2 * x + 1e-4 * torch.randn_like(x)))  # level: normalised away
    assert float(loss(x, envelope_only)) > 3 * close


def test_log_magnitude_overshoot_weighs_added_energy_above_missing_energy() -> None:
    """With overshoot 3, a haze that fills the valleys between harmonics (nearly all of it
    overshoot) costs close to 3 · 2 / (1 + 3) = 1.5 times what the plain L1 charges; the
    reference itself still costs nothing, and the weight must be positive."""
    torch.manual_seed(0)
    t = torch.arange(24000) / 24000
    x = 0.05 * sum(torch.cos(2 * torch.pi * 150 * k * t) / k for k in range(1, 30))
    x = x.reshape(1, 1, -1)
    hazed = x + 0.003 * torch.randn_like(x)  # fills the valleys: overshoot there
    plain, asym = LogSTFTMagnitudeLoss(), LogSTFTMagnitudeLoss(overshoot=3.0)
    assert float(asym(x, x)) == 0.0
    cost_plain, cost_asym = float(plain(x, hazed)), float(asym(x, hazed))
    assert 1.3 * cost_plain < cost_asym < 1.5 * cost_plain + 1e-6
    with pytest.raises(ValueError):
        LogSTFTMagnitudeLoss(overshoot=0.0)


def _voiced(seconds: float = 2.0) -> torch.Tensor:
    """A harmonic tone whose loudness and brightness move like syllables (4 Hz)."""
    t = torch.arange(int(24000 * seconds)) / 24000
    syllables = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t))
    x = sum(
        torch.cos(2 * torch.pi * 140 * k * t) / k * (syllables if k % 3 else 1 - syllables)
        for k in range(1, 25)
    )
    return (0.05 * x).reshape(1, 1, -1)


def test_intelligibility_loss_follows_envelopes_not_level() -> None:
    """Zero for the reference at any level; it grows as noise buries the envelopes; a
    steady output (the envelope gone) costs more than mild noise; its gradient is
    finite; a crop shorter than one 384 ms segment is refused."""
    torch.manual_seed(0)
    x = _voiced()
    loss = IntelligibilityLoss(24000)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(x, 0.1 * x)) == pytest.approx(0.0, abs=1e-5)
    noise = torch.randn_like(x) * x.pow(2).mean().sqrt()
    costs = [float(loss(x, x + gain * noise)) for gain in (0.1, 0.5, 2.0)]
    assert 0.0 < costs[0] < costs[1] < costs[2]
    steady = 0.05 * sum(
        torch.cos(2 * torch.pi * 140 * k * torch.arange(x.shape[-1]) / 24000) / k
        for k in range(1, 25)
    ).reshape(1, 1, -1)
    assert float(loss(x, steady)) > 2 * costs[0]
    y = (x + 0.5 * noise).requires_grad_(True)
    loss(x, y).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shorter"):
        loss(x[..., :4800], x[..., :4800])


def test_intelligibility_loss_tracks_pystoi() -> None:
    """Against the eval's own STOI (pystoi) on noisy versions of a voiced signal: the
    same order, and within 0.05 of it."""
    stoi = pytest.importorskip("pystoi").stoi
    torch.manual_seed(1)
    x = _voiced(3.0)
    noise = torch.randn_like(x) * x.pow(2).mean().sqrt()
    loss = IntelligibilityLoss(24000)
    ours, theirs = [], []
    for gain in (0.2, 1.0, 3.0):
        y = x + gain * noise
        ours.append(1 - float(loss(x, y)))
        theirs.append(stoi(x.flatten().numpy(), y.flatten().numpy(), 24000))
    assert ours == sorted(ours, reverse=True) and theirs == sorted(theirs, reverse=True)
    assert np.allclose(ours, theirs, atol=0.05)


def test_phase_derivative_loss_sees_drifting_phase_not_level_or_start_phase() -> None:
    """Zero for the reference itself, at any level; small for another starting phase
    of the same harmonic tone; large for a tone whose pitch drifts or is 2 % off (its
    phase advance per frame is wrong), and near its maximum for noise."""
    t = torch.arange(24000) / 24000

    def tone(f0: torch.Tensor | float, phase: float = 0.0) -> torch.Tensor:
        psi = 2 * torch.pi * torch.cumsum(torch.as_tensor(f0).expand(t.shape), 0) / 24000
        return sum(torch.cos(k * (psi + phase)) / k for k in range(1, 6)).reshape(1, 1, -1)

    loss = PhaseDerivativeLoss()
    x = 0.1 * tone(150.0)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(x, 0.003 * tone(150.0))) < 2e-3  # level
    shifted = float(loss(x, 0.1 * tone(150.0, phase=1.0)))  # only between harmonics
    drift = float(loss(x, 0.1 * tone(150.0 * (1 + 0.03 * torch.sin(2 * torch.pi * 2 * t)))))
    off_pitch = float(loss(x, 0.1 * tone(153.0)))  # 2 % sharp: wrong advance per frame
    noise = float(loss(x, 0.1 * torch.randn_like(x)))
    assert shifted < 0.05 and min(drift, off_pitch) > 5 * shifted
    assert max(drift, off_pitch) < noise and noise > 0.8


def test_validation_log_widens_its_header_for_new_columns(tmp_path: Path) -> None:
    log = tmp_path / "val_log.csv"
    log.write_text("step,sisnr_6,mel_6\n500,-3.5,1.1\n")  # a log from older code
    append_row(log, {"step": 1000, "sisnr_6": 1.5, "meldist_6": 0.9})
    append_row(log, {"step": 1500, "sisnr_6": 2.0, "meldist_6": 0.8})
    assert log.read_text().splitlines() == [
        "step,sisnr_6,mel_6,meldist_6",
        "500,-3.5,1.1,",
        "1000,1.5,,0.9",
        "1500,2.0,,0.8",
    ]
    assert not log.with_name("val_log.csv.tmp").exists()


def test_validator_reports_eval_metrics_per_bandwidth(tmp_path: Path) -> None:
    """Clips at another rate and in stereo are brought to the model's format, and every
    bandwidth gets a finite SI-SNR and a positive mel distance in the log."""
    (tmp_path / "dev" / "music").mkdir(parents=True)
    t = np.arange(32000) / 16000
    clip = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "dev" / "music" / "a.flac", np.stack([clip, clip], 1), 16000)
    config = tiny_config()
    validator = Validator(tmp_path / "dev", config, max_clips=4, max_seconds=1.0)
    assert validator.clips[0][1].shape == (1, 1, 24000)
    torch.manual_seed(0)
    results = validator.run(Codec(config), 500, tmp_path / "val_log.csv")
    header = (tmp_path / "val_log.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", *results]
    assert {f"sisnr_{bw:g}" for bw in config.bandwidths} <= set(results)
    assert all(np.isfinite(v) for v in results.values())
    assert all(results[f"meldist_{bw:g}"] > 0 for bw in config.bandwidths)


def _speech_and_music_dev(root: Path) -> Path:
    """A dev set of one real speech clip (from the shipped recording) and one tone."""
    audio, rate = sf.read(
        str(Path(__file__).parent.parent / "data" / "sample.flac"), dtype="float32"
    )
    (root / "speech").mkdir(parents=True)
    (root / "music").mkdir()
    sf.write(root / "speech" / "s.flac", audio[: 3 * rate], rate)
    t = np.arange(3 * 24000) / 24000
    sf.write(root / "music" / "m.flac", 0.3 * np.sin(2 * np.pi * 440 * t), 24000)
    return root


def test_validator_logs_pesq_stoi_on_speech_and_lsd_on_every_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    from neucomp.eval import metrics

    scored: list[float] = []
    real_pesq = metrics.pesq_wb

    def counting_pesq(ref, deg, rate):
        scored.append(float(np.abs(ref).max()))
        return real_pesq(ref, deg, rate)

    monkeypatch.setattr(metrics, "pesq_wb", counting_pesq)
    config = tiny_config()
    validator = Validator(_speech_and_music_dev(tmp_path / "dev"), config, 4, max_seconds=2.0)
    torch.manual_seed(0)
    results = validator.run(Codec(config), 100, tmp_path / "val_log.csv")
    assert len(scored) == len(config.bandwidths)  # the speech clip only, once per bandwidth
    for bw in config.bandwidths:
        assert 1.0 <= results[f"pesq_{bw:g}"] <= 4.7
        assert 0.0 <= results[f"stoi_{bw:g}"] <= 1.0
        for band in ("0_4k", "4_8k", "8_12k"):
            assert results[f"lsd_{band}_{bw:g}"] > 0
    header = (tmp_path / "val_log.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", *results]


def test_validator_leaves_out_speech_columns_without_their_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neucomp.eval import metrics

    monkeypatch.setattr(metrics, "missing_for", lambda m: f"{m} cannot be imported")
    config = tiny_config()
    validator = Validator(_speech_and_music_dev(tmp_path / "dev"), config, 4, max_seconds=1.0)
    results = validator.run(Codec(config), 100, tmp_path / "val_log.csv")
    assert not any(k.startswith(("pesq", "stoi")) for k in results)
    assert {f"lsd_0_4k_{bw:g}" for bw in config.bandwidths} <= set(results)


def test_data_parallel_ranks_stay_in_sync(config: TrainConfig, tmp_path: Path) -> None:
    """Two CPU ranks under torchrun (gloo): after steps with adversarial losses, both
    hold identical weights, though each drew its own crops."""
    import json
    import subprocess
    import sys

    config.steps, config.adv_start_step, config.ckpt_every = 3, 1, 3
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(asdict(config)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "neucomp.train",
        "--config",
        str(path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [
        torch.load(Path(config.run_dir) / f"last.rank{r}.pt", weights_only=False) for r in (0, 1)
    ]
    for part in ("model", "disc"):
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), f"{part}.{key} differs"
    assert ranks[0]["sampler"]["rng"] != ranks[1]["sampler"]["rng"]


def test_data_parallel_ranks_stop_together(config: TrainConfig, tmp_path: Path) -> None:
    """SIGTERM to one rank only (a scheduler may signal one process): both stop at the
    same step and exit, where the other used to wait on its all-reduce for ever."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    config.steps, config.adv_start_step, config.ckpt_every = 10**6, 10**6, 1
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(asdict(config)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["-m", "neucomp.train", "--config", str(path)]
    run = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    ckpts = [Path(config.run_dir) / f"last.rank{r}.pt" for r in (0, 1)]
    try:
        deadline = time.time() + 240
        while not all(c.exists() for c in ckpts):  # both ranks are in the loop
            assert run.poll() is None and time.time() < deadline, "the ranks never started"
            time.sleep(0.2)
        ranks = subprocess.run(
            ["pgrep", "-P", str(run.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(ranks) == 2
        os.kill(int(ranks[1]), signal.SIGTERM)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, err[-2000:]
    steps = [torch.load(c, weights_only=False)["step"] for c in ckpts]
    assert steps[0] == steps[1]


def test_resume_with_another_world_size_reseeds_the_sampler(config: TrainConfig) -> None:
    single = Trainer(config)
    single.train_step()
    single.save_checkpoint()
    weights = {k: v.clone() for k, v in single.model.state_dict().items()}

    ranks = []
    for rank in (0, 1):  # as if started under torchrun with two processes
        trainer = Trainer(config)
        trainer.rank, trainer.world = rank, 2
        assert trainer.try_resume() and trainer.step == 1
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, weights[key])
        ranks.append(trainer.sampler.rng.bit_generator.state)
    assert ranks[0] != ranks[1]


def test_warm_start_from_a_shipped_model(config: TrainConfig, tmp_path: Path) -> None:
    from neucomp.registry import load_model, save_model
    from neucomp.train.common import warm_start

    donor = Trainer(config)
    donor.train_step()
    save_model(donor.model, tmp_path / "shipped.pt")
    shipped = load_model(tmp_path / "shipped.pt")

    config.run_dir = str(tmp_path / "fresh")
    fresh = Trainer(config)
    warm_start(fresh.model, tmp_path / "shipped.pt")
    fresh.model.eval()
    wav = torch.randn(1, 1, 3200)
    codes = shipped.encode(wav, 8)
    assert torch.equal(fresh.model.encode(wav, 8), codes)
    torch.testing.assert_close(fresh.model.decode(codes), shipped.decode(codes), rtol=0, atol=1e-4)
    assert "mel" in fresh.train_step()  # and it trains on from there


@pytest.mark.parametrize(
    "decoder, mixing", [("frame", "sum"), ("seanet", "sum"), ("seanet", "balancer")]
)
def test_decoder_only_training_keeps_the_codes(
    config: TrainConfig, monkeypatch, decoder: str, mixing: str
) -> None:
    # with the balancer there is no commitment term to backpropagate beside the output
    config.decoder_only, config.loss_mixing, config.adv_start_step = True, mixing, 10_000
    if decoder == "frame":
        config.model = dict(config.model, decoder="frame", frame_decoder={"dim": 16, "layers": 2})
    trainer = Trainer(config)
    frozen = {
        k: v.clone()
        for k, v in trainer.model.state_dict().items()
        if k.startswith(("encoder.", "quantizer."))
    }
    fixed = trainer.sampler.batch(2)
    monkeypatch.setattr(trainer.sampler, "batch", lambda n: fixed)
    decoder_before = [p.detach().clone() for p in trainer.model.decoder.parameters()]
    mels = [trainer.train_step()["mel"] for _ in range(20)]
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # codebooks too
    assert any(
        not torch.equal(a, b)
        for a, b in zip(decoder_before, trainer.model.decoder.parameters(), strict=True)
    )
    assert np.mean(mels[-5:]) < np.mean(mels[:5])


def test_cpu_sized_adversarial_phase(config: TrainConfig) -> None:
    config.adv_segment_s, config.disc_every, config.disc_n_ffts = 0.1, 2, [256, 128]
    trainer = Trainer(config)
    assert len(trainer.disc.discriminators) == 2
    first, second = trainer.train_step(), trainer.train_step()
    assert {"adv", "feat", "d_loss"} <= set(first)  # step 0: the discriminator updates
    assert "adv" in second and "d_loss" not in second  # step 1: it rests
    x = torch.randn(2, 1, 4800)
    xa, ya = trainer._adversarial_piece(x, x + 1)
    assert xa.shape[-1] == 2400 and torch.equal(ya, xa + 1)


def test_discriminator_warms_up_alone(config: TrainConfig) -> None:
    config.adv_start_step, config.disc_warmup_steps = 1, 2
    trainer = Trainer(config)
    rows = [trainer.train_step() for _ in range(4)]
    assert not {"adv", "feat", "d_loss"} & set(rows[0])  # reconstruction only
    for row in rows[1:3]:  # the discriminator learns; the generator does not follow it yet
        assert "d_loss" in row and "adv" not in row and "feat" not in row
    assert {"adv", "feat", "d_loss"} <= set(rows[3])


def test_discriminator_has_its_own_learning_rate(config: TrainConfig) -> None:
    config.lr, config.disc_lr = 1e-3, 5e-3
    config.lr_decay_start, config.lr_decay_steps = 0, 10  # the same schedule for both
    trainer = Trainer(config)
    for _ in range(3):
        trainer.train_step()
    g, d = trainer.opt_g.param_groups[0]["lr"], trainer.opt_d.param_groups[0]["lr"]
    assert g < 1e-3 and d == pytest.approx(5 * g)


def test_level_normalised_discriminator_input_is_level_free(config: TrainConfig) -> None:
    config.adv_level_norm, config.disc_warmup_steps = True, 10  # the disc alone: real, fake
    trainer = Trainer(config)
    x = trainer.sampler.batch(2)
    seen, forward = [], trainer.disc.forward
    trainer.disc.forward = lambda wav: seen.append(wav.detach()) or forward(wav)
    for gain in (1.0, 0.01):
        trainer.sampler.batch = lambda n, g=gain: x * g
        trainer.train_step()
    real_loud, real_quiet = seen[0], seen[2]
    assert torch.allclose(real_loud, real_quiet, atol=1e-6)
    assert float(real_loud.pow(2).mean().sqrt()) == pytest.approx(0.1, rel=1e-3)


def test_rebind_lm_needs_the_same_codes(tmp_path: Path) -> None:
    from conftest import build_model_file

    from neucomp.nn.lm import LMConfig
    from neucomp.registry import load_model, read_lm, save_lm, save_model
    from neucomp.train.export import rebind_lm
    from neucomp.train.quantize import random_lm

    old_path = build_model_file(tmp_path)
    old = load_model(old_path)
    lm_path = tmp_path / "old.lm"
    lm = random_lm(LMConfig(dim=16, layers=1, heads=2, ff=32, window=8))
    save_lm(lm, lm_path, old.weights_hash)
    # Same encoder and RVQ, another decoder: the LM is re-issued for the new hash.
    config = CodecConfig.from_dict(old.config.to_dict())
    config.decoder, config.frame_decoder = "frame", {"dim": 16, "layers": 2}
    new = Codec(config)
    new.encoder.load_state_dict(old.encoder.state_dict())
    new.quantizer.load_state_dict(old.quantizer.state_dict())
    new_path = tmp_path / "new.pt"
    new_hash = save_model(new, new_path)
    rebind_lm(lm_path, old_path, new_path, tmp_path / "new.lm")
    coder = read_lm(tmp_path / "new.lm")
    coder.check_codec(new_hash)
    assert coder.card["rebound_from_codec"] == old.weights_hash
    # Other codes: refused.
    (tmp_path / "other").mkdir()
    other = build_model_file(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="retrain the LM"):
        rebind_lm(lm_path, old_path, other, tmp_path / "bad.lm")


def test_rebind_tables_needs_the_same_codes(tmp_path: Path) -> None:
    from conftest import build_model_file

    from neucomp.coding.tables import Tables, train_tables
    from neucomp.registry import load_model, save_model
    from neucomp.train.export import rebind_tables

    old_path = build_model_file(tmp_path)
    old = load_model(old_path)
    codes = np.random.default_rng(0).integers(0, 1024, (4, 300))
    tables = train_tables(codes, old.weights_hash, n_ctx=2, n_ctx0=4)
    tables.save(tmp_path / "old.fct")
    new = load_model(old_path, cached=False)  # same encoder and RVQ, a changed decoder
    with torch.no_grad():
        next(new.decoder.parameters()).add_(0.01)
    new_path = tmp_path / "new.pt"
    new_hash = save_model(new, new_path)
    assert new_hash != old.weights_hash
    rebind_tables(tmp_path / "old.fct", old_path, new_path, tmp_path / "new.fct")
    rebound = Tables.load(tmp_path / "new.fct", new_hash)  # refuses any other codec
    assert rebound.encode(codes) == tables.encode(codes)  # the same tables
    (tmp_path / "other").mkdir()
    other = build_model_file(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="retrain the tables"):
        rebind_tables(tmp_path / "old.fct", old_path, other, tmp_path / "bad.fct")


def test_period_discriminator_sees_each_period_and_any_length():
    from neucomp.train.discriminator import CombinedDiscriminator

    disc = CombinedDiscriminator(audio_channels=2, filters=4, n_ffts=(256,), periods=(2, 3))
    wav = torch.randn(2, 2, 1001)  # not a multiple of either period
    logits, feats = disc(wav)
    assert len(logits) == len(feats) == 3
    assert logits[1].shape[-1] == 2 and logits[2].shape[-1] == 3
    # the period view compares samples p apart: a change at one sample moves one column
    other = wav.clone()
    other[..., 0] += 1.0
    moved = (disc(other)[0][2] - logits[2]).abs().sum(dim=(0, 1, 2))
    assert moved[0] > 0 and torch.all(moved[1:] == 0)


def test_category_shares_choose_what_the_crops_are(config: TrainConfig) -> None:
    """`category_shares` {"speech": 1}: every crop comes from a speech file (the tiny
    corpus's speech files are its 200 and 350 Hz tones), and the default still draws all."""
    from dataclasses import replace

    def dominant_hz(crop: torch.Tensor) -> float:
        spectrum = np.abs(np.fft.rfft(crop.numpy().ravel()))
        return float(np.argmax(spectrum) * 24000 / crop.numel())

    speech_only = replace(config, category_shares={"speech": 1.0}, augment={"mix_prob": 0.0})
    sampler = Trainer(speech_only).sampler
    assert sampler.probs[sampler.categories != "speech"].sum() == 0
    assert {round(dominant_hz(c)) for c in sampler.batch(24)} <= {200, 350}
    everything = Trainer(replace(config, augment={"mix_prob": 0.0})).sampler
    assert {round(dominant_hz(c)) for c in everything.batch(48)} > {200, 350}
