"""`python -m neucomp.eval {quality,levels,lmsize,bench,phase-oracle,latent-dims,spectrogram,pair,
probe}
…`: every evaluation job.

    python -m neucomp.eval quality data/deveval --json bench/eval.json   # = neucomp eval
    python -m neucomp.eval levels data/deveval --json bench/levels.json  # make eval
    python -m neucomp.eval lmsize data/deveval --json bench/lm_size.json # make lm-size
    python -m neucomp.eval bench [--quick]                               # make bench
    python -m neucomp.eval phase-oracle data/deveval    # PESQ ceilings of decoder outputs
    python -m neucomp.eval latent-dims data/deveval MODEL  # how many latent dims are used
    python -m neucomp.eval spectrogram data/deveval MODEL … --out X.png  # models side by side
    python -m neucomp.eval pair shipped.json candidate.json  # clip by clip: does it ship?
    python -m neucomp.eval probe data/corpus24 data/deveval  # do the codes carry the spectrum?

Each subcommand takes the options of its module (`python -m neucomp.eval levels -h`).
"""

from __future__ import annotations

import sys

TOOLS = {
    "levels": "neucomp.eval.levels",
    "lmsize": "neucomp.eval.lmsize",
    "bench": "neucomp.eval.bench",
    "phase-oracle": "neucomp.eval.phase_oracle",
    "latent-dims": "neucomp.eval.latent",
    "spectrogram": "neucomp.eval.compare",
    "pair": "neucomp.eval.pair",
    "probe": "neucomp.eval.probe",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*TOOLS, "quality"):
        print(
            __doc__.strip(), file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout
        )
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    if argv[0] == "quality":
        from neucomp.eval.cli import eval_command

        return eval_command.main(argv[1:], prog_name="python -m neucomp.eval quality")
    import importlib

    return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
