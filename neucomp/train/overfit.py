"""Overfit test: can a recipe memorise one clip? (`python -m neucomp.train overfit …`)

A recipe that cannot learn a few seconds of audio it sees over and over will not learn a
corpus. This trains on random crops of one clip, starting from a model file (or from
scratch), and every `--eval-every` steps scores the whole clip: PESQ-wb, STOI, the
per-band log-spectral distance and the training mel loss. It compares recipes: the loss
balancer against a plain weighted sum, the mel-loss definitions, the commitment weight,
and the autoencoder with the RVQ bypassed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neucomp.audio import load_reference
from neucomp.eval import metrics
from neucomp.model import Codec, CodecConfig
from neucomp.nn.framedecoder import FrameDecoder, FrameDecoderConfig
from neucomp.registry import load_model
from neucomp.train.balancer import Balancer
from neucomp.train.common import warm_start
from neucomp.train.losses import make_mel_loss


def _score(model: Codec, clip: torch.Tensor, n_q: int, sample_rate: int) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        x = model.pad_to_frames(clip)
        z, _ = model.encoder(x)
        q = model.quantizer.decode(model.quantizer.encode(z, n_q)) if n_q else z
        y, _ = model.decoder(q)
    model.train()
    ref = clip[0, 0].numpy()
    deg = y[0, 0, : ref.shape[0]].float().numpy()
    out = {"si_snr": metrics.si_snr(ref, deg)}
    out.update(metrics.speech_scores(ref, deg, sample_rate))
    out.update(metrics.lsd_bands(ref, deg, sample_rate))
    return out


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    source = load_model(args.init, cached=False) if args.init else None
    config = source.config if source is not None else CodecConfig()
    model = Codec(config)
    if args.init:
        warm_start(model, args.init)
    if args.decoder == "frame":
        # Decoder-only: the encoder and RVQ stay as they are (codes unchanged).
        model.decoder = FrameDecoder(
            FrameDecoderConfig(latent_dim=config.seanet.latent_dim, hop=config.hop_length)
        )
        for module in (model.encoder, model.quantizer):
            module.requires_grad_(False)
    sr = config.sample_rate
    audio = load_reference(args.clip, sr)[: int(args.seconds * sr)]
    audio = audio * 10 ** ((args.level_db - metrics.rms_db(audio)) / 20)
    clip = torch.from_numpy(audio.astype(np.float32))[None, None]
    crop = int(args.crop_s * sr)
    mel_loss = make_mel_loss(args.mel, sr)
    balancer = Balancer({"l1": args.w_l1, "mel": args.w_mel}) if args.balancer else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.5, 0.9))
    log: list[dict] = []
    start = time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            row = {"step": step, "wall_s": round(time.time() - start, 1)}
            row.update(_score(model, clip, args.n_q, sr))
            log.append(row)
            print(json.dumps(row), flush=True)
        if step == args.steps:
            break
        starts = rng.integers(0, clip.shape[-1] - crop + 1, size=args.batch)
        x = torch.cat([clip[..., s : s + crop] for s in starts])
        if args.decoder == "frame":
            with torch.no_grad():
                z, _ = model.encoder(model.pad_to_frames(x))
                q = model.quantizer.decode(model.quantizer.encode(z, args.n_q)) if args.n_q else z
            commit = z.new_zeros(())
            y, _ = model.decoder(q)
        else:
            z, _ = model.encoder(model.pad_to_frames(x))
            if args.n_q:
                q, _, commit = model.quantizer(z, args.n_q)
            else:
                q, commit = z, z.new_zeros(())
            y, _ = model.decoder(q)
        y = y[..., : x.shape[-1]]
        losses = {"l1": F.l1_loss(y, x), "mel": mel_loss(x, y)}
        opt.zero_grad(set_to_none=True)
        if balancer is not None:
            grad_y, _ = balancer.gradient(losses, y)
            torch.autograd.backward([y, commit * args.w_commit], [grad_y, None])
        else:
            total = args.w_l1 * losses["l1"] + args.w_mel * losses["mel"]
            (total + args.w_commit * commit).backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
        opt.step()
        if step % 20 == 0:
            print(
                f"step {step} l1 {float(losses['l1']):.5f} mel {float(losses['mel']):.4f} "
                f"commit {float(commit):.4f}",
                flush=True,
            )
    return log


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", default="tests/data/sample.flac")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--level-db", type=float, default=-23.0, help="RMS level of the clip")
    p.add_argument("--init", default="models/neucomp_24khz.pt", help="'' for a fresh model")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop-s", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--n-q", type=int, default=8, help="codebooks; 0 bypasses the RVQ")
    p.add_argument(
        "--decoder",
        choices=("seanet", "frame"),
        default="seanet",
        help="frame: a new frame-rate iSTFT decoder on the frozen encoder + RVQ",
    )
    p.add_argument("--mel", default="v1", help="mel-loss definition (losses.MEL_LOSSES)")
    p.add_argument("--balancer", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--w-l1", type=float, default=0.1)
    p.add_argument("--w-mel", type=float, default=1.0)
    p.add_argument("--w-commit", type=float, default=1.0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the score log here")


def run_and_save(args: argparse.Namespace) -> list[dict]:
    log = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "log": log}
        args.json.write_text(json.dumps(record, indent=1))
    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neucomp.train.overfit", description=__doc__)
    add_arguments(p)
    run_and_save(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
