"""E19: envelope coding variants on the installed model's networks (docs/EXPERIMENTS.md).

A DPCM envelope coder (ρ 0.92) is fitted afresh per band count on training crops, and the
decoder output from N learned codebooks is equalised to the envelope coded at K stages,
with the band gains spread linearly or in dB. 20 dev-eval speech clips at −23 dBFS.

    python scripts/e19/envelope_variants.py --bands 20 28 36 --spread lin,log   # envq3
    python scripts/e19/envelope_variants.py --bands 28 24                       # envq4
    python scripts/e19/envelope_variants.py --bands 32 --stages 16 --combos 8+8,6+10,16+16,12+20
    python scripts/e19/envelope_variants.py --bands 32 --combos 2+2,4+4 --target -26:-20
"""

import argparse
import glob
import time

import numpy as np
import soundfile as sf
import torch

from neucomp.audio.signal import resample, to_mono
from neucomp.eval.metrics import lsd_bands, speech_scores
from neucomp.nn.envelope import EnvelopeCoder, EnvelopeEqualiser
from neucomp.registry import load_model
from neucomp.train.dataset import AugmentConfig, CropSampler

ap = argparse.ArgumentParser()
ap.add_argument("--bands", type=int, nargs="+", default=[32])
ap.add_argument("--stages", type=int, default=6, help="envelope RVQ stages to fit")
ap.add_argument("--combos", default="3+5,4+4", help="envelope+learned codebooks, comma-separated")
ap.add_argument("--spread", default="log", help="lin, log or lin,log")
ap.add_argument("--target", default="-32:-14", help="fit crops' RMS range, dBFS")
ap.add_argument("--rho", type=float, default=0.92)
args = ap.parse_args()
combos = [tuple(int(v) for v in c.split("+")) for c in args.combos.split(",")]
target = tuple(float(v) for v in args.target.split(":"))
torch.set_num_threads(1)
torch.manual_seed(0)
m = load_model("24khz", cached=False).eval()  # only its networks are used

coders = {}
for bands in args.bands:
    t0 = time.time()
    c = EnvelopeCoder(24000, 320, 128, bands, args.stages, 1024, 640, args.rho)
    s = CropSampler("data/corpus24", 24000, 1.0, 0, AugmentConfig(target_rms_db=target))
    seqs = torch.cat([c.analysis(m.pad_to_frames(s.batch(8)))[0][:, :, 2:] for _ in range(200)])
    c.fit(seqs, iters=15, closed_loop_stages=3)
    coders[bands] = c
    print("fit", bands, round(time.time() - t0), "s", flush=True)

rows: dict[str, list[dict]] = {}
for path in sorted(glob.glob("data/deveval/speech/*"))[:20]:
    a, sr = sf.read(path, always_2d=True)
    a = resample(to_mono(a.T), sr, 24000)
    a = (a * 10 ** (-23 / 20) / (np.sqrt(np.mean(a**2)) + 1e-9)).astype(np.float32)
    x = m.pad_to_frames(torch.from_numpy(a)[None, None])
    with torch.no_grad():
        z, _ = m.encoder(x)
        ys = {L: m.decoder(m.quantizer.decode(m.quantizer.encode(z, L)))[0] for _, L in combos}
        for bands, c in coders.items():
            env = c.analysis(x)[0]
            for k, L in combos:
                q = c.decode(c.encode(env, k)[0])[0]
                for spread in args.spread.split(","):
                    eq = EnvelopeEqualiser(c.analysis, 1, log_spread=spread == "log")
                    y = torch.cat([eq.push(ys[L], q), eq.flush(1)], -1)[0, 0].numpy()[: len(a)]
                    sc = speech_scores(a, y, 24000)
                    sc.update(lsd_bands(a, y, 24000))
                    rows.setdefault(f"bands{bands} env{k}+learned{L} {spread}", []).append(sc)
for name, v in rows.items():
    print(name, {k: round(float(np.mean([r[k] for r in v])), 3) for k in v[0] if k != "lsd_12_20k"})
