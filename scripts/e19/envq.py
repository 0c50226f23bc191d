"""E19: how precise must the envelope be, and does predicting it from the last decoded
frame (DPCM) buy that precision at 6 kbps's 4 x 10 bits?  Offline: the shipped model's
4 learned codebooks (6 kbps) drive the decoder; the equaliser gets each envelope variant."""

import glob
import sys
import time

import numpy as np
import soundfile as sf
import torch

from neucomp.audio.signal import resample, to_mono
from neucomp.eval.metrics import lsd_bands, speech_scores
from neucomp.nn.quantizer import _kmeans
from neucomp.registry import load_model
from neucomp.train.dataset import AugmentConfig, CropSampler

torch.set_num_threads(1)
torch.manual_seed(0)
m = load_model("24khz", cached=False).eval()
an = m.envelope.analysis
STAGES = 6


def rvq_fit(data, stages):
    books, res = [], data.clone()
    for _ in range(stages):
        c = _kmeans(res, 1024, 15)
        books.append(c)
        res = res - c[torch.cdist(res, c).argmin(1)]
    return books


def rvq_q(v, books, k):  # v [N, D]
    out = torch.zeros_like(v)
    res = v.clone()
    for c in books[:k]:
        q = c[torch.cdist(res, c).argmin(1)]
        out += q
        res -= q
    return out


def dpcm(env, mu, rho, books, k):  # env [bands, F] -> decoded [bands, F]
    prev = mu.clone()
    outs = []
    for t in range(env.shape[1]):
        p = mu + rho * (prev - mu)
        prev = p + rvq_q((env[:, t] - p)[None], books, k)[0]
        outs.append(prev)
    return torch.stack(outs, 1)


t0 = time.time()
s = CropSampler("data/corpus24", 24000, 1.0, 321, AugmentConfig())
seqs = []
for _ in range(120):
    e, _ = an(m.pad_to_frames(s.batch(8)))
    seqs.append(e.double())
seqs = torch.cat(seqs)  # [N, bands, F]
seqs = seqs[:, :, 2:]  # skip the frames that see the zero history
flat = seqs.permute(0, 2, 1).reshape(-1, seqs.shape[1])
mu = flat.mean(0)
c0, c1 = (seqs[:, :, 1:] - mu[:, None]), (seqs[:, :, :-1] - mu[:, None])
rho_band = (c0 * c1).sum((0, 2)) / (c1 * c1).sum((0, 2))
print("rho per band", [round(float(r), 3) for r in rho_band], flush=True)
variants = {}
for rho in [float(a) for a in sys.argv[1:]] or [0.8]:
    r = (c0 - rho * c1).permute(0, 2, 1).reshape(-1, seqs.shape[1]).float()
    print(
        f"rho {rho}: residual var / env var {float(r.var(0).sum() / flat.var(0).sum()):.3f}",
        flush=True,
    )
    books = [b.double() for b in rvq_fit(r, STAGES)]
    # one closed-loop refit: the residuals the decoder's own history leaves (k = 4)
    cl = []
    for i in range(0, 300):
        seq = seqs[i]
        dec = dpcm(seq, mu, rho, books, 4)
        prev = torch.cat([mu[:, None], dec[:, :-1]], 1)
        cl.append((seq - (mu[:, None] + rho * (prev - mu[:, None]))).T)
    cl = torch.cat(cl).float()
    print(
        f"  closed-loop residual var / env var {float(cl.var(0).sum() / flat.var(0).sum()):.3f}",
        flush=True,
    )
    books2 = [b.double() for b in rvq_fit(torch.cat([cl, r[: len(r) // 2]]), STAGES)]
    variants[rho] = (books, books2)
print("fit", round(time.time() - t0), "s", flush=True)

rows = {}


def add(name, y, a, env_err=None):
    d = y.numpy()[: len(a)]
    sc = speech_scores(a, d, 24000)
    sc.update(lsd_bands(a, d, 24000))
    if env_err is not None:
        sc["env_db"] = env_err
    rows.setdefault(name, []).append(sc)


def equalise(y, envq):
    eq = m.equaliser()
    return torch.cat([eq.push(y, envq), eq.flush(1)], -1)[0, 0]


for path in sorted(glob.glob("data/deveval/speech/*"))[:20]:
    a, sr = sf.read(path, always_2d=True)
    a = resample(to_mono(a.T), sr, 24000)
    a = (a * 10 ** (-23 / 20) / (np.sqrt(np.mean(a**2)) + 1e-9)).astype(np.float32)
    x = m.pad_to_frames(torch.from_numpy(a)[None, None])
    with torch.no_grad():
        codes = m.encode(x, 8)
        y, _ = m.decoder(m.decoder_input(codes))
        env = an(x)[0]
        e64 = env[0].double()

        def err(q, e64=e64):
            return float(20 * (q - e64).abs()[:, 2:].mean())

        add("uncoded", equalise(y, env), a, 0.0)
        for k in (2, 4, 6, 8, 16):
            q = m.envelope.decode(m.envelope.encode(env, k))
            add(f"rvq{k}", equalise(y, q), a, err(q[0].double()))
        for rho, (b1, b2) in variants.items():
            for k in (2, 3, 4):
                for tag, b in (("open", b1), ("cl", b2)):
                    q = dpcm(e64, mu, rho, b, k)
                    add(f"dpcm{rho}_{tag}{k}", equalise(y, q[None].float()), a, err(q))
for k, v in rows.items():
    print(
        k,
        {kk: round(float(np.mean([r[kk] for r in v])), 3) for kk in v[0] if kk != "lsd_12_20k"},
        flush=True,
    )
