"""E20: encode time against the encoder's beams (plain coder, 30 s of mixed dev-eval audio,
one thread), and where the time goes.

    python scripts/e20/speed.py --beams 1:1,16:1,16:2,16:4 --bandwidths 6,24
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beams", default="1:1,16:4", help="envelope:learned pairs")
    ap.add_argument("--bandwidths", default="6")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()

    import torch  # noqa: F401

    import neucomp
    from neucomp import registry
    from neucomp.eval.bench import RATE, load_source

    registry.set_threads(1)
    codec = registry.load_model()
    audio, _ = load_source(30.0, None)
    seconds = len(audio) / RATE
    for pair in a.beams.split(","):
        env, learned = (int(x) for x in pair.split(":"))
        codec.envelope_beam, codec.learned_beam = env, learned
        for bw in [float(b) for b in a.bandwidths.split(",")]:
            neucomp.compress(audio[:RATE], RATE, bw, coder="plain")
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                neucomp.compress(audio, RATE, bw, coder="plain")
                times.append(time.perf_counter() - t)
            times.sort()
            print(
                f"beams {env}:{learned} {bw:g} kbps: encode {seconds / times[len(times) // 2]:.1f}x"
            )
            if a.profile:
                import cProfile
                import pstats

                cProfile.runctx(
                    "neucomp.compress(audio, RATE, bw, coder='plain')",
                    globals(),
                    locals(),
                    "/tmp/p",
                )
                pstats.Stats("/tmp/p").sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
