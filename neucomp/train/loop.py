"""The codec training loop: resumable, CPU or CUDA, optionally data-parallel (torchrun).

One step: draw crops → pick a random number of codebooks (so one model serves every
bandwidth) → reconstruct → reconstruction losses (+ adversarial and feature matching
once `adv_start_step` is reached) mixed by the Balancer → generator update →
discriminator update. A checkpoint holds everything needed to continue exactly:
weights, optimisers, balancer, step, and every RNG.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from neucomp.audio.writers import atomic_write
from neucomp.model import Codec, CodecConfig
from neucomp.registry import save_model
from neucomp.train.balancer import Balancer
from neucomp.train.common import lr_schedule, warm_start
from neucomp.train.dataset import AugmentConfig, CropSampler
from neucomp.train.discriminator import CombinedDiscriminator
from neucomp.train.envelope import fit_envelope
from neucomp.train.losses import (
    ComplexSTFTLoss,
    FramePeriodicLoss,
    IntelligibilityLoss,
    LevelDifferenceLoss,
    LogSTFTMagnitudeLoss,
    PhaseDerivativeLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    level_normalise,
    make_mel_loss,
)
from neucomp.train.validate import Validator, append_row


@dataclass
class TrainConfig:
    run_dir: str = "runs/codec24"
    corpus: str = "data/corpus24"
    deveval: str = "data/deveval"
    model: dict = field(default_factory=dict)  # CodecConfig fields
    segment_s: float = 1.0
    batch_size: int = 8
    steps: int = 1_000_000
    lr: float = 3e-4
    # Cool-down: from lr_decay_start the learning rate follows a half cosine down to
    # lr * lr_final_ratio over lr_decay_steps, then stays there (0 steps: constant lr).
    lr_decay_start: int = 0
    lr_decay_steps: int = 0
    lr_final_ratio: float = 0.1
    # A linear warm-up from zero over the first steps: a fresh Adam on warm-started
    # weights otherwise takes its largest steps before its moment estimates mean anything.
    lr_warmup_steps: int = 0
    betas: tuple[float, float] = (0.5, 0.9)
    grad_clip: float = 1.0
    weights: dict = field(default_factory=lambda: {"l1": 0.1, "mel": 1.0, "adv": 3.0, "feat": 3.0})
    commit_weight: float = 1.0
    # The commitment loss summed over the active stages (as first shipped) or their mean.
    commit_mean: bool = False
    # "balancer": EnCodec's loss balancer sets each loss's share of the gradient;
    # "sum": a plain weighted sum of the losses (what the overfit tests could train with).
    loss_mixing: str = "balancer"
    mel_loss: str = "v1"  # train.losses.MEL_LOSSES
    level_norm_l1: bool = False  # the waveform L1 on level-normalised signals
    # Train only the decoder: the encoder and RVQ are frozen, so the codes (and the LM
    # trained on them) stay valid. A new decoder type starts from scratch.
    decoder_only: bool = False
    adv_start_step: int = 0  # adversarial losses (and the discriminator) from this step on
    disc_filters: int = 32
    disc_n_ffts: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])
    # Period discriminators (HiFi-GAN's idea) beside the STFT ones; none by default.
    disc_periods: list[int] = field(default_factory=list)
    disc_period_filters: int = 16
    # The STFT sizes of the phase-derivative loss (weights.phase; the frame decoder's
    # own grid by default).
    phase_n_ffts: list[int] = field(default_factory=lambda: [1280])
    # The STFT sizes of the per-bin log-magnitude loss (weights.logmag).
    logmag_n_ffts: list[int] = field(default_factory=lambda: [1280, 2048])
    # How many times a bin the output overshoots counts against one it undershoots
    # (1: symmetric L1; > 1: PESQ's asymmetry, added noise costs more than missing energy).
    logmag_overshoot: float = 1.0
    # The log-magnitude loss's floor (level-normalised amplitude): 1e-2 is ~70 dB under a
    # voice's harmonics; LSD's floor is 100 dB under the peak, so haze the default floor
    # ignores still costs LSD (E17).
    logmag_floor: float = 1e-2
    # The overshoot weight below this frequency only (None: every bin), the plain L1 above.
    logmag_overshoot_below_hz: float | None = None
    # A lower floor from logmag_high_floor_hz up (None: logmag_floor everywhere): half of
    # full-band speech's 8–12 kHz bins lie under the 1e-2 floor (E18).
    logmag_high_floor: float | None = None
    logmag_high_floor_hz: float = 8000.0
    # The categories of crop the overshoot weight applies to (empty: every crop); the
    # others get the plain L1. E16: overshoot everywhere darkens music too.
    logmag_overshoot_categories: list[str] = field(default_factory=list)
    # The categories of crop the intelligibility loss (weights.stoi) is computed on
    # (empty: every crop); STOI is a speech measure.
    stoi_categories: list[str] = field(default_factory=list)
    # A harmonic decoder's oscillator runs at the reference pitch in this share of the
    # steps, at its own predicted pitch in the rest (so it also learns with its errors).
    f0_teacher_prob: float = 1.0
    # A CPU-sized adversarial phase: the discriminator sees a random adv_segment_s-long
    # piece of each crop (0: the whole crop) and is updated every disc_every-th step.
    adv_segment_s: float = 0.0
    disc_every: int = 1
    # The discriminator sees both signals scaled by the gain that brings the reference to
    # −20 dBFS RMS: a fresh one then gives logits of order one at every training level
    # (at −40 dBFS its outputs start ~0 and its hinge loss sits at 2 for hundreds of steps).
    adv_level_norm: bool = False
    # From adv_start_step the discriminator first trains alone for this many steps: a
    # fresh one's gradients are noise, and a warm-started generator should not follow them.
    disc_warmup_steps: int = 0
    # The discriminator's own learning rate (0: the generator's), on the same schedule.
    disc_lr: float = 0.0
    train_codebooks: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    augment: dict = field(default_factory=dict)
    # Share of crops per category, e.g. {"speech": 1.0} (empty: the corpus default,
    # speech 0.4 / music 0.4 / sfx 0.2; see neucomp.data.manifest.sampling_weights).
    category_shares: dict = field(default_factory=dict)
    # Decode the whole corpus into memory first (a GPU shard: ~0.4 GB per hour of audio).
    preload_audio: bool = False
    seed: int = 0
    threads: int = 2
    log_every: int = 10
    ckpt_every: int = 200
    keep_every: int = 5000  # also keep step_N.pt every this many steps
    val_every: int = 1000
    val_max_clips: int = 24
    val_max_seconds: float = 6.0
    export_every: int = 0  # write an inference model file to run_dir every N steps (0: never)
    init_from: str = ""  # with no checkpoint yet: start from these inference weights
    max_wall_s: float = 0.0  # stop (with a checkpoint) after this long; 0: no limit
    # On a lent machine the step count a wall-time budget allows is not known ahead: with
    # this on (and max_wall_s set), the rate measured over steps 50–200 sets `steps` so
    # that the run ends at max_wall_s, and the cool-down to its last (1 − fit_decay_from).
    fit_steps_to_wall: bool = False
    fit_decay_from: float = 0.5
    fit_window: tuple[int, int] = (50, 200)  # the steps whose rate sets the budget
    # A model with a coded envelope (model.envelope_bands): its codebooks are fitted by
    # k-means on this many batches of crops at the start, and its projection into the
    # latent learns this many times faster than the rest.
    envelope_fit_batches: int = 200
    new_input_lr_scale: float = 10.0
    # Decoder-only runs of such a model: the losses compare the equalised output (the
    # equaliser is differentiable), so the decoder learns what the envelope cannot give.
    through_equaliser: bool = False
    autocast_bf16: bool = True  # on CUDA: bf16 autocast for the generator and discriminator

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        data.update(overrides or {})
        return cls(**data)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step`: a pure function of the step, so a resumed run
    replays it exactly."""
    return lr_schedule(
        step,
        cfg.lr,
        warmup=cfg.lr_warmup_steps,
        decay_start=cfg.lr_decay_start,
        decay_steps=cfg.lr_decay_steps,
        final_ratio=cfg.lr_final_ratio,
    )


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rank, self.world = _world()
        self.device = torch.device(
            f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        )
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank …
        self.codec_config = CodecConfig.from_dict(cfg.model)
        self.model = Codec(self.codec_config).to(self.device)
        self.disc = CombinedDiscriminator(
            self.codec_config.channels,
            cfg.disc_filters,
            tuple(cfg.disc_n_ffts),
            tuple(cfg.disc_periods),
            cfg.disc_period_filters,
        ).to(self.device)
        self._broadcast_from_rank0()
        torch.manual_seed(cfg.seed + self.rank)  # … but each rank its own randomness
        random.seed(cfg.seed + self.rank)
        if cfg.decoder_only:
            self.model.encoder.requires_grad_(False)
            self.model.quantizer.requires_grad_(False)
        self.gen_params = [p for p in self.model.parameters() if p.requires_grad]
        # A new input path (the envelope's projection, from zero) may learn faster than
        # the warm-started body: Adam moves each weight by about lr a step (E6).
        fast = {id(p) for p in self._new_input_params()}
        groups = [
            {"params": [p for p in self.gen_params if id(p) not in fast], "lr_scale": 1.0},
            {
                "params": [p for p in self.gen_params if id(p) in fast],
                "lr_scale": cfg.new_input_lr_scale,
            },
        ]
        self.opt_g = torch.optim.Adam(
            [g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas)
        )
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.balancer = Balancer(cfg.weights)
        self.mel_loss = make_mel_loss(cfg.mel_loss, self.codec_config.sample_rate).to(self.device)
        self.stft_loss = ComplexSTFTLoss().to(self.device)
        self.phase_loss = PhaseDerivativeLoss(tuple(cfg.phase_n_ffts)).to(self.device)
        self.logmag_loss = LogSTFTMagnitudeLoss(
            tuple(cfg.logmag_n_ffts),
            floor=cfg.logmag_floor,
            overshoot=cfg.logmag_overshoot,
            overshoot_below_hz=cfg.logmag_overshoot_below_hz,
            sample_rate=self.codec_config.sample_rate,
            high_floor=cfg.logmag_high_floor,
            high_floor_hz=cfg.logmag_high_floor_hz,
        ).to(self.device)
        self.logmag_plain = LogSTFTMagnitudeLoss(
            tuple(cfg.logmag_n_ffts),
            floor=cfg.logmag_floor,
            sample_rate=self.codec_config.sample_rate,
            high_floor=cfg.logmag_high_floor,
            high_floor_hz=cfg.logmag_high_floor_hz,
        ).to(self.device)
        self.periodic_loss = FramePeriodicLoss(self.codec_config.hop_length)
        self.ild_loss = LevelDifferenceLoss(self.codec_config.sample_rate).to(self.device)
        self.stoi_loss = IntelligibilityLoss(self.codec_config.sample_rate).to(self.device)
        self.sampler = CropSampler(
            cfg.corpus,
            self.codec_config.sample_rate,
            cfg.segment_s,
            seed=cfg.seed * 1000 + self.rank,
            augment=AugmentConfig(**cfg.augment),
            channels=self.codec_config.channels,
            shares=cfg.category_shares or None,
            preload=cfg.preload_audio,
        )
        self.step = 0
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stop_requested = False
        self._fit_t0: float | None = None  # when the fit window began (fit_steps_to_wall)

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "step": self.step,
            "model": self.model.state_dict(),
            "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "balancer": self.balancer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_python": random.getstate(),
            "rng_numpy": np.random.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        if self.cfg.fit_steps_to_wall and self.step >= self.cfg.fit_window[1]:
            # the budget was fitted before the stop: keep it (the window will not recur)
            for key in ("steps", "lr_decay_start", "lr_decay_steps"):
                setattr(self.cfg, key, state["config"][key])
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        if "disc" in state:  # absent: a reconstruction-only run that starts its GAN phase
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.balancer.load_state_dict(state["balancer"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        random.setstate(state["rng_python"])
        np.random.set_state(state["rng_numpy"])

    def _ckpt_path(self) -> Path:
        suffix = f".rank{self.rank}" if self.world > 1 else ""
        return self.run_dir / f"last{suffix}.pt"

    def save_checkpoint(self) -> None:
        # Every rank saves: each has its own data RNG. Atomic, so a kill never corrupts it.
        path = self._ckpt_path()
        with atomic_write(path) as fp:
            torch.save(self.state_dict(), fp)
        if self.rank == 0 and self.cfg.keep_every and self.step % self.cfg.keep_every == 0:
            keep = self.run_dir / f"step_{self.step:07d}.pt"
            if not keep.exists():
                os.link(path, keep)  # a hard link: no extra disk

    def try_resume(self) -> bool:
        """Continue from this rank's checkpoint, or from rank 0's / the single-process one
        when the number of processes changed (then exact replay is lost: each rank's
        crop sampler is re-seeded from (seed, rank, step) so the ranks differ)."""
        own = self._ckpt_path()
        candidates = [
            p for p in (own, self.run_dir / "last.rank0.pt", self.run_dir / "last.pt") if p.exists()
        ]
        if not candidates:
            return False
        # The newest wins: a run may go 1 → 2 → 1 processes, leaving a stale last.pt.
        path = max(candidates, key=lambda p: p.stat().st_mtime)
        same_world = path == own
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.load_state_dict(state)
        if not same_world:
            self.sampler.rng = np.random.default_rng([self.cfg.seed, self.rank, self.step])
            torch.manual_seed(self.cfg.seed + 1000 * self.rank + self.step)
            if self.rank == 0:
                print(f"resumed from {path.name} with {self.world} process(es)", flush=True)
        return True

    # -- one step -----------------------------------------------------------------------

    def _choose_codebooks(self) -> int:
        # A function of (seed, step) only: every data-parallel rank must run the same
        # number of quantizer stages (their all-reduces must match), and a resumed run
        # replays the same choices.
        rng = np.random.default_rng([self.cfg.seed, self.step])
        return int(rng.choice(self.cfg.train_codebooks))

    def _broadcast_from_rank0(self) -> None:
        if self.world == 1:
            return
        for module in (self.model, self.disc):
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def _average_gradients(self, params) -> None:
        # Plain all-reduce instead of DDP: the balancer's autograd.grad calls and the
        # quantizer's in-forward EMA all-reduces then need no special casing.
        if self.world == 1:
            return
        # one all-reduce of all gradients in a flat buffer instead of a call per tensor
        # (~100 here): the same sums; on two CPU cores the step time did not change
        # measurably (docs/TRAINING.md), on GPUs it saves NCCL's per-call launches
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        x = self.sampler.batch(cfg.batch_size).to(self.device)
        n_q = self._choose_codebooks()
        adversarial = self.step >= cfg.adv_start_step
        adv_for_gen = self.step >= cfg.adv_start_step + cfg.disc_warmup_steps
        lr = learning_rate(cfg, self.step)
        disc_lr = lr * cfg.disc_lr / cfg.lr if cfg.disc_lr else lr
        for opt, value in ((self.opt_g, lr), (self.opt_d, disc_lr)):
            for group in opt.param_groups:
                group["lr"] = value * group.get("lr_scale", 1.0)
        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda" and cfg.autocast_bf16
        )

        with autocast:
            if cfg.decoder_only:
                y, commit = self._decode_frozen(x, n_q), x.new_zeros(())
            else:
                # a pure function of the step, like the codebook choice: resumes replay it
                draw = np.random.default_rng([cfg.seed, self.step, 1]).random()
                teacher = bool(draw < cfg.f0_teacher_prob)
                y, _, commit = self.model(x, n_q, teacher_f0=teacher)
        if cfg.commit_mean:
            commit = commit / n_q
        y = y[..., : x.shape[-1]].float()
        l1 = F.l1_loss(*level_normalise(x, y)) if cfg.level_norm_l1 else F.l1_loss(y, x)
        losses = {"l1": l1, "mel": self.mel_loss(x, y)}
        if cfg.weights.get("stft", 0.0):
            losses["stft"] = self.stft_loss(x, y)
        if cfg.weights.get("phase", 0.0):
            losses["phase"] = self.phase_loss(x, y)
        if cfg.weights.get("logmag", 0.0):
            losses["logmag"] = self._logmag(x, y)
        if cfg.weights.get("periodic", 0.0):
            losses["periodic"] = self.periodic_loss(x, y)
        if cfg.weights.get("ild", 0.0):
            losses["ild"] = self.ild_loss(x, y)
        if cfg.weights.get("stoi", 0.0):
            stoi = self._stoi(x, y)
            if stoi is not None:
                losses["stoi"] = stoi
        # losses the model computed on its own outputs (the harmonic decoder's f0), not on y
        aux = {} if cfg.decoder_only else dict(getattr(self.model, "aux_losses", {}))
        if adversarial:
            x_adv, y_adv = self._adversarial_piece(x, y)
            if cfg.adv_level_norm:
                x_adv, y_adv = level_normalise(x_adv, y_adv)
        if adv_for_gen:
            with autocast:
                fake_logits, fake_feats = self.disc(y_adv)
                with torch.no_grad():
                    _, real_feats = self.disc(x_adv)
            losses["adv"] = hinge_generator_loss([f.float() for f in fake_logits])
            losses["feat"] = feature_matching_loss(
                [[r.float() for r in rs] for rs in real_feats],
                [[f.float() for f in fs] for fs in fake_feats],
            )
        self.opt_g.zero_grad(set_to_none=True)
        if cfg.loss_mixing == "sum":
            norms: dict[str, float] = {}
            total = sum(cfg.weights.get(k, 0.0) * v for k, v in losses.items())
            total = total + sum(cfg.weights.get(k, 1.0) * v for k, v in aux.items())
            (total + commit * cfg.commit_weight).backward()
        else:
            grad_y, norms = self.balancer.gradient(losses, y)
            side = commit * cfg.commit_weight
            side = side + sum(cfg.weights.get(k, 1.0) * v for k, v in aux.items())
            # decoder-only runs have no commitment (a constant zero) and nothing else aside
            roots, grads = ([y, side], [grad_y, None]) if side.requires_grad else ([y], [grad_y])
            torch.autograd.backward(roots, grads)
        self._average_gradients(self.gen_params)
        gnorm = torch.nn.utils.clip_grad_norm_(self.gen_params, cfg.grad_clip)
        self.opt_g.step()

        out = {k: float(v.detach()) for k, v in {**losses, **aux}.items()}
        out.update({"commit": float(commit.detach()), "n_q": n_q, "gnorm": float(gnorm), "lr": lr})
        out.update({f"norm_{k}": v for k, v in norms.items()})
        if adversarial and self.step % cfg.disc_every == 0:
            with autocast:
                real_logits, _ = self.disc(x_adv)
                fake_logits, _ = self.disc(y_adv.detach())
            d_loss = hinge_discriminator_loss(
                [r.float() for r in real_logits], [f.float() for f in fake_logits]
            )
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self._average_gradients(self.disc.parameters())
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), cfg.grad_clip)
            self.opt_d.step()
            out["d_loss"] = float(d_loss.detach())
        self.step += 1
        return out

    def _adversarial_piece(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random piece of every reference and output crop, for the discriminator."""
        n = int(round(self.cfg.adv_segment_s * self.codec_config.sample_rate))
        if n <= 0 or n >= x.shape[-1]:
            return x, y
        start = int(torch.randint(0, x.shape[-1] - n + 1, ()))
        return x[..., start : start + n], y[..., start : start + n]

    def _decode_frozen(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Decoder-only training: codes from the frozen encoder + RVQ, decoded with grad."""
        with torch.no_grad():
            codes = self.model.encode(x, n_q)
        env = None if self.model.envelope is None else self.model.decode_envelope(codes)[0]
        y, _ = self.model.decoder(self.model.decoder_input(codes, env))
        equaliser = self.model.equaliser() if self.cfg.through_equaliser else None
        if equaliser is not None:  # the losses see what a listener hears
            y = torch.cat([equaliser.push(y, env), equaliser.flush(y.shape[0])], dim=-1)
        return y

    def _new_input_params(self) -> list[torch.nn.Parameter]:
        envelope = getattr(self.model, "envelope", None)
        return [] if envelope is None else list(envelope.to_latent.parameters())

    def fit_envelope_codebooks(self, batches: int) -> None:
        """k-means the envelope's codebooks on the envelopes of `batches` batches of
        training crops (a fresh envelope only; its codes are then fixed). The crops are
        drawn from a sampler of their own, so the training crops stay as seeded."""
        fit_envelope(
            self.model,
            self.cfg.corpus,
            batches=batches,
            batch_size=self.cfg.batch_size,
            segment_s=self.cfg.segment_s,
            seed=self.cfg.seed * 1000 + 999,
            augment=self.cfg.augment,
            shares=self.cfg.category_shares,
        )

    # -- the loop -----------------------------------------------------------------------

    def _logmag(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-bin log-magnitude loss, its overshoot weight on the crops of
        ``logmag_overshoot_categories`` only (when set); the batch mean either way."""
        wanted = self.cfg.logmag_overshoot_categories
        if not wanted:
            return self.logmag_loss(x, y)
        chosen = self._category_mask(wanted, x.device)
        total = x.new_zeros(())
        for mask, loss in ((chosen, self.logmag_loss), (~chosen, self.logmag_plain)):
            if mask.any():  # each example is normalised on its own, so subsets add up
                total = total + loss(x[mask], y[mask]) * (int(mask.sum()) / len(mask))
        return total

    def _category_mask(self, wanted: list[str], device: torch.device) -> torch.Tensor:
        """Which crops of the current batch come from the corpus categories `wanted`."""
        return torch.tensor([c in wanted for c in self.sampler.batch_categories], device=device)

    def _stoi(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """The intelligibility loss on the crops of ``stoi_categories`` (all when empty);
        None when the batch holds none of them (the balancer then skips the term)."""
        if not self.cfg.stoi_categories:
            return self.stoi_loss(x, y)
        chosen = self._category_mask(self.cfg.stoi_categories, x.device)
        return self.stoi_loss(x[chosen], y[chosen]) if chosen.any() else None

    def _steps_that_fit(self, start: float) -> tuple[int, float]:
        """(step count, seconds per step) that end the run at max_wall_s at the rate
        measured since the fit window began; rank 0's count for every rank (they must run
        the same number of all-reduces)."""
        now = time.time()
        per_step = (now - self._fit_t0) / (self.step - self.cfg.fit_window[0])
        # 2 % spare: the rate drifts, and max_wall_s stays the hard stop
        left = self.cfg.max_wall_s - (now - start)
        steps = self.step + max(1, int(0.98 * left / per_step))
        return int(self._from_rank0(float(steps))), per_step

    def _fit_steps_to_wall(self, start: float, verbose: bool) -> None:
        cfg = self.cfg
        first, last = cfg.fit_window
        if self.step == first:
            self._fit_t0 = time.time()
        elif self.step == last and self._fit_t0 is not None:
            steps, per_step = self._steps_that_fit(start)
            cfg.steps = steps
            cfg.lr_decay_start = max(self.step, int(cfg.fit_decay_from * steps))
            cfg.lr_decay_steps = steps - cfg.lr_decay_start
            if verbose:
                print(
                    f"{per_step * 1000:.0f} ms/step: {steps} steps fit the budget, "
                    f"cool-down from step {cfg.lr_decay_start}",
                    flush=True,
                )

    def _refit_steps_to_wall(self, start: float, verbose: bool) -> None:
        """Fit the step count again, validations and checkpoints now in the rate (the fit
        window has none of them, so a run with validations would hit max_wall_s mid
        cool-down). Only while the learning rate is still flat, so the schedule has no
        jump; every rank calls it at the same step."""
        cfg = self.cfg
        if self._fit_t0 is None or self.step <= cfg.fit_window[1]:
            return
        steps, per_step = self._steps_that_fit(start)
        decay_start = int(cfg.fit_decay_from * steps)
        if self.step >= cfg.lr_decay_start or decay_start <= self.step:
            return  # the cool-down has begun (or would have): leave it as it is
        cfg.steps, cfg.lr_decay_start, cfg.lr_decay_steps = steps, decay_start, steps - decay_start
        if verbose:
            print(
                f"refit with validations: {per_step * 1000:.0f} ms/step, {steps} steps, "
                f"cool-down from step {decay_start}",
                flush=True,
            )

    def _from_rank0(self, value: float) -> float:
        if self.world == 1:
            return value
        # on the process group's device: NCCL takes CUDA tensors only
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        return float(t.item())

    def _all_agree_to_stop(self, stop: bool) -> bool:
        """True on every rank when any rank wants to stop (a signal, its wall clock): ranks
        that stopped at different steps would wait on each other's all-reduce for ever."""
        if self.world == 1:
            return stop
        t = torch.tensor([float(stop)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _install_signal_handlers(self) -> None:
        def request_stop(signum, frame):  # noqa: ARG001
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def export(self, path: Path) -> str:
        return save_model(self.model, path)

    def run(self) -> None:
        cfg = self.cfg
        resumed = self.try_resume()
        if not resumed and cfg.init_from:
            fresh = warm_start(self.model, cfg.init_from)
        else:
            fresh = [k for k in self.model.state_dict() if k.startswith("envelope.")]
        if not resumed and any(k.startswith("envelope.quantizer.") for k in fresh):
            self.fit_envelope_codebooks(cfg.envelope_fit_batches)
        if not resumed:
            self._broadcast_from_rank0()
        self._install_signal_handlers()
        is_main = self.rank == 0
        if is_main:
            n_params = sum(p.numel() for p in self.model.parameters())
            print(
                f"{'resumed' if resumed else 'started'} at step {self.step} on {self.device} "
                f"(world {self.world}); generator {n_params / 1e6:.2f}M params",
                flush=True,
            )
        validator = Validator(
            cfg.deveval, self.codec_config, cfg.val_max_clips, cfg.val_max_seconds
        )
        log_path = self.run_dir / "train_log.csv"
        fields = [
            "step",
            "wall_s",
            "sec_per_step",
            "n_q",
            "l1",
            "mel",
            "adv",
            "feat",
            "commit",
            "d_loss",
            "gnorm",
            "norm_l1",
            "norm_mel",
            "norm_adv",
            "norm_feat",
            "lr",
            "stft",
            "f0",
            "phase",
            "logmag",
            "periodic",
            "ild",
            "stoi",
        ]
        start = time.time()
        last = start
        window: list[dict[str, float]] = []
        while self.step < cfg.steps:
            out_of_time = bool(cfg.max_wall_s) and time.time() - start > cfg.max_wall_s
            if self._all_agree_to_stop(self.stop_requested or out_of_time):
                break
            stats = self.train_step()
            window.append(stats)
            if cfg.fit_steps_to_wall and cfg.max_wall_s:
                self._fit_steps_to_wall(start, is_main)
            if is_main and self.step % cfg.log_every == 0:
                now = time.time()
                row = {
                    k: float(np.mean([w[k] for w in window if k in w]))
                    for k in fields[3:]
                    if any(k in w for w in window)
                }
                row.update(
                    step=self.step,
                    wall_s=round(now - start, 1),
                    sec_per_step=round((now - last) / len(window), 3),
                )
                append_row(log_path, {k: row[k] for k in fields if k in row})
                print(_format_row(row), flush=True)
                window, last = [], now
            if self.step % cfg.ckpt_every == 0:
                self.save_checkpoint()
            if is_main and cfg.export_every and self.step % cfg.export_every == 0:
                self.export(self.run_dir / f"{self.codec_config.name}.pt")
            if cfg.val_every and self.step % cfg.val_every == 0:
                if is_main:
                    validator.run(self.model, self.step, self.run_dir / "val_log.csv")
                if cfg.fit_steps_to_wall and cfg.max_wall_s:
                    self._refit_steps_to_wall(start, is_main)
        self.save_checkpoint()
        if is_main:
            print(f"stopped at step {self.step}; checkpoint {self._ckpt_path()}", flush=True)


def _format_row(row: dict) -> str:
    parts = [f"step {row['step']}", f"{row['sec_per_step']:.2f}s/it"]
    for k in (
        "l1",
        "mel",
        "phase",
        "logmag",
        "periodic",
        "ild",
        "stoi",
        "f0",
        "adv",
        "feat",
        "commit",
        "d_loss",
    ):
        if k in row and not math.isnan(row[k]):
            parts.append(f"{k} {row[k]:.4f}")
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    return " | ".join(parts)
