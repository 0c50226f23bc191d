"""Train the code LM (`make train-lm`): codes from the shipped codec → float LM → integer LM.

    python -m neucomp.train lm --config configs/lm24.json

1. Codes (neucomp.train.lmcodes): 5 s crops of the training corpus are encoded once by
   the codec (all 32 codebooks; the first K of those are the codes at K codebooks) and
   cached in the run folder under the codec's hash, so retraining after a codec change is
   this same command. Files are split by a hash of their path: every 20th file is held
   out for validation.
2. Float training on CPU with random K per batch (from the codec's bandwidths), resumable
   from `<run_dir>/ckpt.pt`.
3. Conversion to the integer LM, bits per code of both models per K on the held-out
   crops, and the model file `<models>/<codec>.lm` with a card (`.lm.md`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from neucomp.audio.writers import atomic_write
from neucomp.coding.intlm import code_bits
from neucomp.nn.lm import CodesLM, LMConfig, bits_per_code
from neucomp.registry import save_lm
from neucomp.train.common import lr_schedule, warm_start
from neucomp.train.lmcodes import cached_codes, deveval_codes, load_codec, log
from neucomp.train.quantize import quantize_lm

DEFAULTS = {
    "codec": None,  # model name or path (None: the default 24 kHz model)
    "corpus": "data/corpus24/manifest.tsv",
    "deveval": "data/deveval/manifest.tsv",  # bits per code of whole clips, if present
    "run_dir": "runs/lm24",
    "out": None,  # None: <models>/<codec name>.lm
    "crop_s": 5.0,
    "train_crops": 4000,
    "val_crops": 200,
    "model": {},
    "k_choices": [2, 4, 8, 16, 32],
    "eval_k": None,  # K values to measure bits per code at (None: k_choices)
    "steps": 4000,
    "batch": 8,
    "lr": 2e-3,
    "warmup": 200,
    "weight_decay": 0.01,
    "threads": 2,
    "seed": 0,
    "ckpt_every": 100,
    "calib_crops": 16,
    "max_heads": 8,  # loss on at most this many random heads per batch (unbiased, faster)
    # A float LM checkpoint (another run's ckpt.pt), or a shipped .lm file (its integer
    # weights turned back into float ones: train.quantize.dequantize_lm), to start from
    # instead of random weights, for a codec that continued training from the one that LM
    # learned: its codebooks move slowly, so much of what the LM knows still holds.
    # Tensors that are new or changed shape keep their initialisation.
    "init_from": None,
}


# ---------------------------------------------------------------------------------------
# 2. float training


def train(model: CodesLM, codes: np.ndarray, cfg: dict, run: Path, codec_hash: str) -> int:
    """Train (resuming from run/ckpt.pt when it matches); returns the steps done."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay}],
        lr=cfg["lr"],
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(cfg["seed"])
    step = 0
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "ckpt.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=True)
        if ckpt["codec_hash"] == codec_hash and ckpt["model_config"] == model.config.to_dict():
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            rng.bit_generator.state = ckpt["rng"]
            step = ckpt["step"]
            log(f"resumed at step {step}")
        else:
            log("checkpoint is for another codec or model shape: starting over")
    if step == 0 and cfg.get("init_from"):
        fresh = warm_start(model, Path(cfg["init_from"]))
        log(f"warm start from {cfg['init_from']}" + (f"; fresh: {fresh}" if fresh else ""))
    data = torch.from_numpy(codes.astype(np.int64))
    model.train()
    t0, window = time.time(), []
    while step < cfg["steps"]:
        k = int(rng.choice(cfg["k_choices"]))
        batch = data[rng.integers(0, len(data), cfg["batch"]), :k]
        for group in opt.param_groups:
            group["lr"] = lr_schedule(
                step,
                cfg["lr"],
                warmup=cfg["warmup"],
                decay_start=cfg["warmup"],
                decay_steps=max(1, cfg["steps"] - cfg["warmup"]),
            )
        heads = torch.from_numpy(np.sort(rng.permutation(k)[: cfg["max_heads"]]))
        loss = bits_per_code(model(batch, heads=heads), batch[:, heads])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        window.append(loss.item())
        if step % 50 == 0:
            log(
                f"step {step}/{cfg['steps']}  bits/code {np.mean(window):.3f}  "
                f"({(time.time() - t0) / len(window):.2f} s/step)"
            )
            t0, window = time.time(), []
        if step % cfg["ckpt_every"] == 0 or step == cfg["steps"]:
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "rng": rng.bit_generator.state,
                "step": step,
                "codec_hash": codec_hash,
                "model_config": model.config.to_dict(),
            }
            with atomic_write(ckpt_path) as fp:
                torch.save(state, fp)
    return step


# ---------------------------------------------------------------------------------------
# 3. evaluation and export


@torch.no_grad()
def evaluate(model: CodesLM, lm, codes: np.ndarray, k_choices: list[int]) -> dict:
    """Bits per code of the float and the integer model on held-out crops, per K."""
    model.eval()
    data = torch.from_numpy(codes.astype(np.int64))
    out = {}
    for k in k_choices:
        fl = np.mean([bits_per_code(model(x[None, :k]), x[None, :k]).item() for x in data])
        it = np.mean([(code_bits(lm.forward(x[:k]), x[:k]) / x[:k].numel()).item() for x in data])
        out[k] = {"float": round(float(fl), 4), "int": round(float(it), 4)}
        log(f"K={k:2d}: float {fl:.3f} bits/code, integer {it:.3f} (plain: 10)")
    return out


@torch.no_grad()
def deveval_bits(lm, clips: list[np.ndarray], k_choices: list[int], chunk: int = 750) -> dict:
    """Integer-LM bits per code of whole dev-eval clips, coded in container-sized chunks."""
    out = {}
    if not clips:  # no dev-eval set
        return out
    for k in k_choices:
        bits, count = 0.0, 0
        for clip in clips:
            for start in range(0, clip.shape[1], chunk):
                part = torch.from_numpy(clip[:k, start : start + chunk].astype(np.int64))
                bits += code_bits(lm.forward(part), part).item()
                count += part.numel()
        out[k] = round(bits / count, 4)
        log(f"K={k:2d}: dev-eval {out[k]:.3f} bits/code (integer LM, 10 s chunks)")
    return out


def write_card(path: Path, card: dict) -> None:
    lines = [
        f"# {path.name.removesuffix('.md')}: code LM for `{card['codec']}`",
        "",
        "Integer Transformer LM that range-codes the codec's RVQ indices (`--lm`);",
        "see docs/LM_CODER.md. Retrain with `make train-lm` whenever the codec changes.",
        "",
        f"- codec weights hash: `{card['codec_hash']}`",
        f"- data: {card['data']}",
        f"- model: {card['model']}",
        f"- training: {card['steps']} steps, batch {card['batch']} × {card['crop_s']} s, "
        f"K drawn from {card['k_choices']}"
        + (f"; warm-started from `{card['init_from']}`" if card.get("init_from") else ""),
        "",
        "Bits per code (plain packing: 10; the range coder adds < 0.1 %). Held-out: 5 s",
        "crops of held-out corpus files; dev-eval: every dev-eval clip, whole, coded in 10 s",
        "chunks as the container does (the shipped integer LM; '-' if no dev-eval set).",
        "",
        "| K | kbps | held-out, float LM | held-out, integer LM | dev-eval, integer LM "
        "| dev-eval size vs plain |",
        "|---|------|------|------|------|------|",
    ]
    dev = card.get("deveval_bits_per_code", {})
    # 75 frames/s × 10 bits for both shipped codecs; cards written before record none.
    kbps_per_codebook = card.get("kbps_per_codebook", 0.75)
    for k, v in card["bits_per_code"].items():
        d = dev.get(k)
        dev_cols = f"{d:.3f} | {100 * d / 10:.1f} %" if d is not None else "- | -"
        lines.append(
            f"| {k} | {int(k) * kbps_per_codebook:g} | {v['float']:.3f} | {v['int']:.3f} "
            f"| {dev_cols} |"
        )
    path.write_text("\n".join(lines) + "\n")


def bench(cfg: dict, k: int = 8, frames: int = 750) -> None:
    """Encode/decode speed of a random-weight LM of the configured size, one thread."""
    from neucomp.coding.range import LMCoder
    from neucomp.train.quantize import random_lm

    torch.set_num_threads(1)
    coder = LMCoder(random_lm(LMConfig(**cfg["model"]), spread=0.02), "bench", b"\0" * 32)
    codes = np.random.default_rng(0).integers(0, 1024, size=(k, frames))

    def timed(name: str, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        log(
            f"{name} K={k}: {frames / cpu:.0f} frames/s CPU ({frames / cpu / 75:.1f}x real "
            f"time at 75 frames/s); wall {frames / wall:.0f} frames/s"
        )
        return out

    payload = timed("encode", lambda: coder.encode(codes))
    decoded = timed("decode", lambda: coder.decode(payload, k, frames))
    assert np.array_equal(decoded, codes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, help="override the number of training steps")
    ap.add_argument(
        "--init-from", help="float LM checkpoint or .lm file to warm-start from (see init_from)"
    )
    ap.add_argument("--run-dir", help="override run_dir (codes cache and checkpoint)")
    ap.add_argument("--codec", help="override codec (a model name, e.g. 48khz, or a path)")
    ap.add_argument("--corpus", help="override corpus (a manifest.tsv)")
    ap.add_argument("--standin", action="store_true", help="random-init codec (pipeline tests)")
    ap.add_argument("--bench", action="store_true", help="only time the coder (random weights)")
    args = ap.parse_args(argv)
    cfg = {**DEFAULTS, **json.loads(Path(args.config).read_text())}
    if args.bench:
        return bench(cfg)
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.init_from:
        cfg["init_from"] = args.init_from
    if args.run_dir:
        cfg["run_dir"] = args.run_dir
    if args.codec:
        cfg["codec"] = args.codec
    if args.corpus:
        cfg["corpus"] = args.corpus
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    run = Path(cfg["run_dir"])

    codec = load_codec(cfg, args.standin)
    train_codes, val_codes = cached_codes(codec, cfg)
    log(f"codes: {train_codes.shape[0]} train and {val_codes.shape[0]} held-out crops")

    lm_config = LMConfig(**cfg["model"])
    model = CodesLM(lm_config)
    steps = train(model, train_codes, cfg, run, codec.weights_hash)

    rng = np.random.default_rng(cfg["seed"] + 2)
    calib = [
        torch.from_numpy(train_codes[i : i + 1, :k].astype(np.int64))
        for i, k in zip(
            rng.integers(0, len(train_codes), cfg["calib_crops"]),
            rng.choice(cfg["k_choices"], cfg["calib_crops"]),
            strict=True,
        )
    ]
    model.eval()
    lm = quantize_lm(model, calib)
    eval_k = cfg["eval_k"] or cfg["k_choices"]
    bits = evaluate(model, lm, val_codes, eval_k)
    dev_bits = deveval_bits(lm, deveval_codes(codec, cfg), eval_k)

    from neucomp.registry import models_dir

    out = Path(cfg["out"]) if cfg["out"] else models_dir() / f"{codec.config.name}.lm"
    hours = train_codes.shape[0] * cfg["crop_s"] / 3600
    card = {
        "codec": codec.config.name,
        "codec_hash": codec.weights_hash,
        "kbps_per_codebook": codec.config.bandwidth_for(1),
        "data": f"{train_codes.shape[0]} random {cfg['crop_s']:g} s crops ({hours:.1f} h) of "
        f"{cfg['corpus']}; {val_codes.shape[0]} held-out crops from every 20th file",
        "model": ", ".join(f"{k}={v}" for k, v in lm_config.to_dict().items()),
        "steps": steps,
        "init_from": cfg["init_from"],
        "batch": cfg["batch"],
        "crop_s": cfg["crop_s"],
        "k_choices": cfg["k_choices"],
        "bits_per_code": {str(k): v for k, v in bits.items()},
        "deveval_bits_per_code": {str(k): v for k, v in dev_bits.items()},
    }
    digest = save_lm(lm, out, codec.weights_hash, card)
    write_card(out.with_name(out.name + ".md"), card)
    log(f"wrote {out} (hash {digest.hex()[:16]}…)")


if __name__ == "__main__":
    main()
