"""Overfit test: can a recipe memorise one clip, or a few? (`python -m neucomp.train overfit`)

A recipe that cannot learn a few seconds of audio it sees over and over will not learn a
corpus. This trains on random crops of one clip, starting from a model file (or from
scratch), and every `--eval-every` steps scores the whole clip: PESQ-wb, STOI, the
per-band log-spectral distance and the training mel loss. It compares recipes: the loss
balancer against a plain weighted sum, the mel-loss definitions, the commitment weight,
and the autoencoder with the RVQ bypassed. Given several clips (``--clip a.flac b.flac``
or a folder), it trains on crops of all of them and reports the mean scores: how fast the
fit slows as the set grows says whether the model's capacity is what binds.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from neucomp.nn.seanet import SEANetConfig
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


def _mean_score(
    model: Codec, clips: list[torch.Tensor], n_q: int, sample_rate: int
) -> dict[str, float]:
    """Each metric's mean over the clips (the one clip's scores when there is one)."""
    rows = [_score(model, clip, n_q, sample_rate) for clip in clips]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _load_clips(paths: list[str], seconds: float, level_db: float, sr: int) -> list[torch.Tensor]:
    """Each clip (a file, or every audio file in a folder) cut to ``seconds`` and levelled."""
    from neucomp.eval.runner import audio_files_under

    files = [f for p in map(Path, paths) for f in (audio_files_under(p) if p.is_dir() else [p])]
    clips = []
    for f in files:
        audio = load_reference(str(f), sr)[: int(seconds * sr)]
        audio = audio * 10 ** ((level_db - metrics.rms_db(audio)) / 20)
        clips.append(torch.from_numpy(audio.astype(np.float32))[None, None])
    if not clips:
        raise SystemExit(f"no audio in {' '.join(paths)}")
    return clips


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    source = load_model(args.init, cached=False) if args.init else None
    if source is not None:
        config = source.config
        if args.width and args.width != config.seanet.base_width:
            # A wider copy of the source that starts computing the same function.
            seanet = dataclasses.replace(config.seanet, base_width=args.width)
            config = dataclasses.replace(config, seanet=seanet)
    else:
        # A fresh model: the shipped body (no weight norm) at the asked base width C.
        config = CodecConfig(seanet=SEANetConfig(base_width=args.width or 16, weight_norm=False))
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
    clips = _load_clips(args.clip, args.seconds, args.level_db, sr)
    crop = min(int(args.crop_s * sr), min(c.shape[-1] for c in clips))
    mel_loss = make_mel_loss(args.mel, sr)
    balancer = Balancer({"l1": args.w_l1, "mel": args.w_mel}) if args.balancer else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.5, 0.9))
    log: list[dict] = []
    start = time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            row = {"step": step, "wall_s": round(time.time() - start, 1)}
            row.update(_mean_score(model, clips, args.n_q, sr))
            log.append(row)
            print(json.dumps(row), flush=True)
        if step == args.steps:
            break
        picks = [clips[int(i)] for i in rng.integers(0, len(clips), size=args.batch)]
        starts = [int(rng.integers(0, c.shape[-1] - crop + 1)) for c in picks]
        x = torch.cat([c[..., s : s + crop] for c, s in zip(picks, starts, strict=True)])
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
            # With the RVQ bypassed there is no commitment term to add.
            outputs = [y, commit * args.w_commit] if commit.requires_grad else [y]
            torch.autograd.backward(outputs, [grad_y, None][: len(outputs)])
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
    p.add_argument(
        "--clip",
        nargs="+",
        default=["tests/data/sample.flac"],
        help="audio files or folders: crops come from all of them, scores are means over them",
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--level-db", type=float, default=-23.0, help="RMS level of the clip")
    p.add_argument("--init", default="models/neucomp_24khz.pt", help="'' for a fresh model")
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help="base width C: of a fresh model, or k times the source's for a widened warm start",
    )
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
