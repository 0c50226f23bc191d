"""E19b: envelope bands (20 / 28 / 36) with DPCM (rho 0.92), and the equaliser's gains
spread over the bins in the log domain instead of linearly; 6 kbps splits."""
import glob, sys, time
import numpy as np, soundfile as sf, torch
from neucomp.registry import load_model
from neucomp.audio.signal import resample, to_mono
from neucomp.eval.metrics import speech_scores, lsd_bands
from neucomp.nn.envelope import EnvelopeCoder, EnvelopeEqualiser
from neucomp.train.dataset import CropSampler, AugmentConfig
torch.set_num_threads(1); torch.manual_seed(0)
m = load_model('24khz', cached=False).eval()  # only its networks are used
RHO = 0.92
class LogEq(EnvelopeEqualiser):
    def _gains(self, frames, env):
        spec = torch.fft.rfft(frames, dim=-1)
        mono = spec.abs().mean(dim=1)
        own = torch.log10((mono @ self.analysis.fb.T).clamp_min(self.analysis.floor))
        log_gain = (env.transpose(1, 2) - own).clamp(-self.MAX_LOG_GAIN, self.MAX_LOG_GAIN)
        return spec, (10.0 ** (log_gain @ self.spread))[:, None]
coders = {}
for bands in [int(a) for a in sys.argv[1:]]:
    t0 = time.time()
    c = EnvelopeCoder(24000, 320, 128, bands, 6, 1024, 640, RHO)
    s = CropSampler('data/corpus24', 24000, 1.0, 0, AugmentConfig())
    seqs = torch.cat([c.analysis(m.pad_to_frames(s.batch(8)))[0][:, :, 2:] for _ in range(200)])
    c.fit(seqs, iters=15, closed_loop_stages=3)
    coders[bands] = c
    print('fit', bands, round(time.time() - t0), flush=True)
rows = {}
def add(name, y, a):
    d = y.numpy()[:len(a)]
    sc = speech_scores(a, d, 24000); sc.update(lsd_bands(a, d, 24000))
    rows.setdefault(name, []).append(sc)
for path in sorted(glob.glob('data/deveval/speech/*'))[:20]:
    a, sr = sf.read(path, always_2d=True)
    a = resample(to_mono(a.T), sr, 24000)
    a = (a * 10 ** (-23 / 20) / (np.sqrt(np.mean(a ** 2)) + 1e-9)).astype(np.float32)
    x = m.pad_to_frames(torch.from_numpy(a)[None, None])
    with torch.no_grad():
        z, _ = m.encoder(x)
        ys = {L: m.decoder(m.quantizer.decode(m.quantizer.encode(z, L)))[0] for L in (4, 5)}
        for bands, c in coders.items():
            env = c.analysis(x)[0]
            for k, L in ((3, 5), (4, 4)):
                q = c.decode(c.encode(env, k)[0])[0]
                for tag, cls in (('lin', EnvelopeEqualiser), ('log', LogEq)):
                    if tag == 'log' and (bands != 20 or k != 3):
                        continue
                    eq = cls(c.analysis, 1)
                    add(f'bands{bands} env{k}+learned{L} {tag}', torch.cat([eq.push(ys[L], q), eq.flush(1)], -1)[0, 0], a)
for k, v in rows.items():
    print(k, {kk: round(float(np.mean([r[kk] for r in v])), 3) for kk in v[0] if kk != 'lsd_12_20k'}, flush=True)
