"""`python -m neucomp.train COMMAND …`: every training job (codec, lm, export, fork,
rebind-lm, rebind-tables, graft-speech-decoder, add-envelope, overfit, speech-detector).

    python -m neucomp.train codec --config configs/codec24_cpu.json [--set key=value …]
    python -m neucomp.train lm --config configs/lm24.json [--steps N …]

`codec` trains (or resumes) the codec (also without the word: `--config …`); `lm` trains
the code LM (neucomp.train.lm); `export` writes an inference model file from a
checkpoint; `fork` starts a new run folder from one; `rebind-lm` and `rebind-tables`
re-issue the LM and the fast coder's tables for a new decoder on unchanged codes;
`graft-speech-decoder` gives a model a second decoder for the chunks flagged speech;
`overfit` runs the one-clip memorisation test; `speech-detector` fits the encoder's
speech flag (neucomp.train.speech_detector).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm"]:  # its own options: neucomp.train.lm parses them
        from neucomp.train.lm import main as train_lm

        train_lm(argv[1:])
        return
    if argv[:1] == ["speech-detector"]:
        from neucomp.train.speech_detector import main as train_speech_detector

        train_speech_detector(argv[1:])
        return
    if argv[:1] == ["codec"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="python -m neucomp.train", epilog="`lm --help` for the LM's options"
    )
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--config", help="training config JSON (configs/*.json)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (value parsed as JSON)",
    )
    exp = sub.add_parser("export", help="write an inference model file from a checkpoint")
    exp.add_argument("checkpoint")
    exp.add_argument("out")
    reb = sub.add_parser(
        "rebind-lm", help="re-issue an LM for a codec with a new decoder on the same codes"
    )
    reb.add_argument("lm")
    reb.add_argument("old_codec")
    reb.add_argument("new_codec")
    reb.add_argument("out")
    rbt = sub.add_parser(
        "rebind-tables",
        help="re-issue the fast coder's tables for a codec with a new decoder on the same codes",
    )
    rbt.add_argument("tables")
    rbt.add_argument("old_codec")
    rbt.add_argument("new_codec")
    rbt.add_argument("out")
    gft = sub.add_parser(
        "graft-speech-decoder",
        help="a model with BASE's coding and decoder, and SPEECH's decoder for speech chunks",
    )
    gft.add_argument("base")
    gft.add_argument("speech")
    gft.add_argument("out")
    env = sub.add_parser(
        "add-envelope",
        help="a model with BASE's networks and a (new) coded spectral envelope",
    )
    env.add_argument("base")
    env.add_argument("out")
    env.add_argument("--corpus", default="data/corpus24")
    env.add_argument("--bands", type=int, default=20)
    env.add_argument(
        "--n-fft", type=int, default=None, help="envelope window (default: two hops, 640 at 24 kHz)"
    )
    env.add_argument("--batches", type=int, default=200, help="batches of 8 crops to fit on")
    env.add_argument("--seed", type=int, default=0)
    env.add_argument(
        "--prediction",
        type=float,
        default=0.0,
        help="code the envelope by closed-loop DPCM with this factor (E19; 0: plain RVQ)",
    )
    env.add_argument(
        "--layout",
        default="",
        help="which stream codebooks are the envelope's: one letter e or l per codebook "
        "('': alternate, the envelope's first)",
    )
    env.add_argument(
        "--log-spread",
        action="store_true",
        help="the equaliser spreads band gains over the bins in the log domain (E19)",
    )
    fork = sub.add_parser(
        "fork", help="start a new run folder from a checkpoint (e.g. a GAN phase branch)"
    )
    fork.add_argument("checkpoint")
    fork.add_argument("run_dir")
    fork.add_argument(
        "--fresh-disc", action="store_true", help="drop the discriminator: the branch's own starts"
    )
    ovf = sub.add_parser("overfit", help="can a recipe memorise one clip? (docs/EXPERIMENTS.md)")
    from neucomp.train.overfit import add_arguments

    add_arguments(ovf)
    args = parser.parse_args(argv)

    import torch  # noqa: F401  (imported here so --help stays fast)

    if args.command == "export":
        from neucomp.train.export import export_checkpoint

        digest = export_checkpoint(Path(args.checkpoint), Path(args.out))
        print(f"wrote {args.out} (sha256 {digest[:16]}…)")
        return
    if args.command == "rebind-lm":
        from neucomp.train.export import rebind_lm

        digest = rebind_lm(
            Path(args.lm), Path(args.old_codec), Path(args.new_codec), Path(args.out)
        )
        print(f"wrote {args.out} (LM hash {digest.hex()[:16]}…)")
        return
    if args.command == "rebind-tables":
        from neucomp.train.export import rebind_tables

        digest = rebind_tables(
            Path(args.tables), Path(args.old_codec), Path(args.new_codec), Path(args.out)
        )
        print(f"wrote {args.out} (tables hash {digest.hex()[:16]}…)")
        return
    if args.command == "add-envelope":
        from neucomp.train.envelope import add_envelope

        digest = add_envelope(
            Path(args.base),
            Path(args.out),
            Path(args.corpus),
            bands=args.bands,
            n_fft=args.n_fft,
            batches=args.batches,
            seed=args.seed,
            prediction=args.prediction,
            layout=args.layout,
            log_spread=args.log_spread,
        )
        print(f"wrote {args.out} (weights {digest[:12]}…)")
        return
    if args.command == "graft-speech-decoder":
        from neucomp.train.export import graft_speech_decoder

        digest = graft_speech_decoder(Path(args.base), Path(args.speech), Path(args.out))
        print(f"wrote {args.out} (sha256 {digest[:16]}…)")
        return
    if args.command == "fork":
        from neucomp.train.export import fork_checkpoint

        print(
            f"wrote {fork_checkpoint(Path(args.checkpoint), Path(args.run_dir), args.fresh_disc)}"
        )
        return
    if args.command == "overfit":
        from neucomp.train.overfit import run_and_save

        run_and_save(args)
        return
    if not args.config:
        parser.error("--config is required")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value

    import torch.distributed as dist

    from neucomp.train.loop import TrainConfig, Trainer

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        Trainer(TrainConfig.load(args.config, overrides)).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
