"""Integer twin of the code LM: the same network in arithmetic whose result is exact.

Why: an entropy decoder must rebuild, to the last bit, the probability tables the
encoder used; float results change with thread count, SIMD width, FMA and library
version (EnCodec lost files that way). Here every value is an integer and every
operation is exact, so the tables depend only on the model file and the codes:

- Activations entering a matmul are int8 (|v| ≤ 127) and weights are int8. The weight
  matmuls run as int8 x int8 → int32 (`torch._int_mm`, exact by definition, and 4x less
  memory traffic than float32); where that is unavailable they run as float32 BLAS on
  the same integer values, which is exact too: a product is ≤ 127² = 16129 and an inner
  dimension ≤ 1040 keeps every partial sum below 2^24, where float32 represents all
  integers exactly, so any summation order, blocking, SIMD width or FMA gives the same
  integer. Both paths therefore give identical results (tested). The small attention
  matmuls use the float32 form: q·k over a head (≤ 25 terms here, bound checked), and
  attention weights that are integers summing to ≤ 2^16, so a weighted sum of int8
  values stays below 2^23 however long the window. The constructors assert the bounds.
- Everything else is int64 tensor arithmetic (multiply, add, shift, floor division,
  table lookup), exact by definition: requantisation is `(acc * mult + 2^(s-1)) >> s`,
  RMSNorm divides by an exact integer square root, softmax and GELU are lookup tables
  stored in the model file (never recomputed with libm at load time).
- The only float beyond matmuls is `sqrt` on a float64 < 2^53 in `_isqrt`, whose result
  is corrected by ±1 with integer comparisons, so it is exact even for a sloppy sqrt.
- `step` (one frame, key/value cache) and `forward` (whole sequence) run the same
  row-wise operations, and both give identical integers (tested).
- With intra-frame conditioning (`LMConfig.intra`) head k's int8 input is requantised
  from the final norm's int8 output h and W norm(c_k), c_k being the exact int64 sum of
  the embedding rows of codes 0..k-1 of the frame and norm the integer RMSNorm: the same
  kinds of operation, so the same guarantees. `step` then produces the tables
  one code at a time and asks its caller for each code before the next table.

`neucomp.train.quantize.quantize_lm` converts a trained float `CodesLM` into this form
from activation ranges measured on calibration codes; this module only runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from neucomp.nn.lm import LMConfig

FREQ_BITS = 24  # frequency tables sum to 2^24 (constriction's default precision)
Q8 = 127  # int8 range used by every matmul input and weight
ACC_LIMIT = 1 << 24  # float32 represents every integer up to here
ATT_ONE = 1 << 16  # attention weights of a query sum to at most this
ATT_EXP_ONE = 1 << 15  # exp table value at distance 0 from the max (attention)
OUT_EXP_ONE = 1 << 16  # exp table value at distance 0 from the max (output)
LOGIT_STEP = 1.0 / 64  # nats per unit of an integer logit (attention and output)
GELU_HALF = 1024  # GELU table covers integer inputs -1024..1024
RESID_BITS = 20  # residual stream: calibrated max maps to 2^20
RESID_CLAMP = 1 << 22  # keeps dim * x^2 < 2^53 for the exact square root
NORM_SHIFT = 8  # fixed-point bits of the RMSNorm multipliers


def _isqrt(n: Tensor) -> Tensor:
    """floor(sqrt(n)) for int64 n in [0, 2^53): float estimate, then exact ±1 fix-up."""
    r = torch.sqrt(n.double()).long()
    r = r - (r * r > n).long()  # a correctly rounded sqrt can only land one too high …
    return r + ((r + 1) * (r + 1) <= n).long()  # … but do not rely on it


def _rq(acc: Tensor, mult: Tensor, shift: int) -> Tensor:
    """round(acc * mult / 2^shift), half up, in int64."""
    return (acc * mult + (1 << (shift - 1))) >> shift


def _matmul(x: Tensor, w: Tensor) -> Tensor:
    """Exact integer matmul of int8-range values through float32 BLAS (see module doc)."""
    return torch.matmul(x.float(), w).long()


def _int_mm_works() -> bool:
    """torch._int_mm exists here and agrees with the float32 path on extreme values."""
    if not hasattr(torch, "_int_mm"):
        return False
    gen = torch.Generator().manual_seed(0)
    for m, k, n in ((1, 200, 24), (5, 800, 16)):
        x = torch.randint(-Q8, Q8 + 1, (m, k), generator=gen, dtype=torch.int8)
        w = torch.randint(-Q8, Q8 + 1, (k, n), generator=gen, dtype=torch.int8)
        x[0], w[:, 0] = Q8, -Q8  # the largest sum the bounds allow in one column
        try:
            if not torch.equal(torch._int_mm(x, w).long(), _matmul(x, w.float())):
                return False
        except RuntimeError:
            return False
    return True


USE_INT_MM = _int_mm_works()  # tests switch it off to check the float32 path


class _Linear:
    """int8 weights [in, out] and the requantisation of the int32 accumulator."""

    def __init__(self, a: dict[str, Tensor], name: str) -> None:
        self.name = name
        w = torch.as_tensor(a[name + "_w"])
        if w.abs().max() > Q8:
            raise ValueError(f"{name}: weights outside int8 range")
        if w.shape[-2] * Q8 * Q8 >= ACC_LIMIT:
            raise ValueError(f"{name}: inner dimension {w.shape[-2]} breaks the 2^24 bound")
        self.w8 = w.to(torch.int8)
        self._wf: Tensor | None = None  # float32 copy, made only if int8 matmul fails
        self.mult = a[name + "_mult"].long()
        self.shift = int(a[name + "_shift"])
        self.half = torch.tensor(1 << (self.shift - 1))
        if self.mult.abs().max() >= 1 << 31:
            raise ValueError(f"{name}: multiplier too large")

    def matmul(self, x: Tensor, columns: slice = slice(None)) -> Tensor:
        """Exact x [T, in] @ w[:, columns] as int64, x holding int8-range integers."""
        if USE_INT_MM:
            try:
                return torch._int_mm(x.to(torch.int8), self.w8[:, columns]).long()
            except RuntimeError:  # shape or build not supported: the float32 path is exact too
                pass
        if self._wf is None:
            self._wf = self.w8.float()
        return _matmul(x, self._wf[:, columns])

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.half, self.matmul(x), self.mult) >> self.shift


class _Norm:
    """RMSNorm to int8: gain * x / rms(x) / (input scale of the next matmul), all folded
    into per-channel multipliers; divides by the exact integer square root."""

    ONE_BITS = 38  # reciprocal precision: |x| * 2^38 / isqrt(sum x²) ≤ 2^38

    def __init__(self, mult: Tensor, shift: Tensor | None = None) -> None:
        self.mult = mult.long()
        if self.mult.abs().max() >= 1 << 24:  # keeps |x * inv * mult| < 2^62
            raise ValueError("norm multiplier too large")
        # NORM_SHIFT fixed-point bits, or fewer where a norm's file says so (a norm with a
        # gain too large for 24 bits at NORM_SHIFT; files without it are as before)
        norm_shift = NORM_SHIFT if shift is None else int(shift)
        if not 0 <= norm_shift <= NORM_SHIFT:
            raise ValueError("norm shift out of range")
        self.shift = self.ONE_BITS + norm_shift
        self.half = torch.tensor(1 << (self.shift - 1))

    def __call__(self, x: Tensor) -> Tensor:
        root = _isqrt((x * x).sum(-1, keepdim=True)).clamp_(min=1)
        inv = torch.div(1 << self.ONE_BITS, root, rounding_mode="floor")
        y = torch.addcmul(self.half, x * inv, self.mult) >> self.shift
        return y.clamp_(-Q8, Q8)


@dataclass
class LMState:
    """Per-chunk decoding state: key/value caches (twice the window, compacted) and t."""

    num_codebooks: int
    keys: list[Tensor]  # per layer [H, 2W, hd] float32 holding int8 values
    values: list[Tensor]
    filled: int = 0  # entries used in the caches
    frame: int = 0  # frames stepped so far


class _Layer:
    """One Transformer block's integer parameters."""

    def __init__(self, a: dict[str, Tensor], i: int, config: LMConfig) -> None:
        p = f"l{i}."
        self.norm1 = _Norm(a[p + "norm1_mult"], a.get(p + "norm1_shift"))
        self.qkv = _Linear(a, p + "qkv")
        self.att_mult = a[p + "att_mult"].long()
        self.att_shift = int(a[p + "att_shift"])
        self.alibi = a[p + "alibi"].long()  # [H, window]: penalty by distance
        self.alibi_step = self.alibi.flip(-1)[:, None, :]  # [H, 1, window], oldest first
        self.proj = _Linear(a, p + "proj")
        self.norm2 = _Norm(a[p + "norm2_mult"], a.get(p + "norm2_shift"))
        self.fc1 = _Linear(a, p + "fc1")
        self.gelu = a[p + "gelu"].long()
        self.fc2 = _Linear(a, p + "fc2")


class IntLM:
    """Integer inference LM; `arrays` holds every tensor of the model file (see to_arrays)."""

    def __init__(self, config: LMConfig, arrays: dict[str, Tensor]) -> None:
        c = self.config = config
        a = {k: torch.as_tensor(v) for k, v in arrays.items()}
        self.arrays = a
        if (c.dim // c.heads) * Q8 * Q8 >= ACC_LIMIT or ATT_ONE * Q8 >= ACC_LIMIT:
            raise ValueError("attention shape breaks the exactness bounds")
        self.layers = [_Layer(a, i, c) for i in range(c.layers)]
        self.norm_f = _Norm(a["norm_f_mult"], a.get("norm_f_shift"))
        self.head = _Linear(a, "head")  # [dim, Kmax * card]
        self.head_bias = a["head_bias"].long()
        self.emb = a["emb"].to(torch.int8)  # [Kmax * card, dim], row scales in emb_mult
        self.emb_mult = a["emb_mult"].long()
        self.emb_shift = int(a["emb_shift"])
        self.start_vec = a["start"].long()
        self.k_emb = a["k_emb"].long()
        self.att_exp = a["att_exp"].long()
        self.out_exp = a["out_exp"].long()
        if c.intra:
            # context c_k: sum of emb * emb_mult (< 32 * 127 * 2^31 < 2^43), rounded to the
            # residual scale as _embed does, clamped as the residual is, RMS-normed to int8
            self.intra_norm = _Norm(a["intra_norm_mult"], a.get("intra_norm_shift"))
            self.intra = _Linear(a, "intra")  # W [dim, dim]; mult: its accumulator's share
            self.intra_hmult = a["intra_hmult"].long()  # h's share, same shift
            if self.intra_hmult.abs().max() >= 1 << 31:
                raise ValueError("intra multipliers too large")

    # -- building blocks shared by step() and forward() ---------------------------------

    def _attend(
        self, layer: _Layer, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, visible: Tensor | None
    ) -> Tensor:
        """q [H, Tq, hd], k/v [H, Tk, hd] (int8 as float32), bias [H, Tq, Tk] ALiBi
        penalties; `visible` [Tq, Tk] masks keys (None: all visible) → [Tq, dim] int8."""
        scores = torch.matmul(q, k.transpose(1, 2)).long()  # exact: hd * 127² < 2^24
        z = _rq(scores, layer.att_mult, layer.att_shift) - bias
        if visible is not None:
            z = z.masked_fill(~visible, -(1 << 40))
        lut = self.att_exp
        gap = (z.amax(-1, keepdim=True) - z).clamp_(max=lut.numel() - 1)
        e = lut[gap] if visible is None else lut[gap] * visible
        weights = torch.div(e * ATT_ONE, e.sum(-1, keepdim=True), rounding_mode="floor")
        out = torch.matmul(weights.float(), v).long()  # exact: sum(weights) * 127 < 2^24
        out = (out + ATT_ONE // 2) >> 16  # back to the int8 scale of v
        return out.transpose(0, 1).reshape(q.shape[1], -1)

    def _qkv(self, layer: _Layer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [T, dim] residual → q, k, v [H, T, hd] int8-valued float32."""
        c = self.config
        qkv = layer.qkv(layer.norm1(x)).clamp_(-Q8, Q8).float()
        q, k, v = qkv.view(x.shape[0], 3, c.heads, c.dim // c.heads).permute(1, 2, 0, 3)
        return q, k, v

    def _finish_block(self, layer: _Layer, x: Tensor, att: Tensor) -> Tensor:
        x = (x + layer.proj(att)).clamp_(-RESID_CLAMP, RESID_CLAMP)
        u = layer.fc1(layer.norm2(x)).clamp_(-GELU_HALF, GELU_HALF)
        g = layer.gelu[u + GELU_HALF]
        return (x + layer.fc2(g)).clamp_(-RESID_CLAMP, RESID_CLAMP)

    def _frequencies(self, x: Tensor, num_codebooks: int) -> Tensor:
        """x [T, dim] → integer frequency tables [K, T, card], each ≥ 1, summing to 2^24."""
        k, card = num_codebooks, self.config.card
        # head weights are [dim, Kmax * card]: the first K heads are a column slice.
        acc = self.head.matmul(self.norm_f(x), slice(0, k * card))  # [T, K * card]
        z = torch.addcmul(self.head.half, acc, self.head.mult[: k * card]) >> self.head.shift
        z = (z + self.head_bias[: k * card]).view(-1, k, card).transpose(0, 1)
        return self._tables(z)

    def _code_table(self, h: Tensor, ctx: Tensor, k: int) -> Tensor:
        """Intra: tables [T, card] of code k from h [T, dim] (the final norm's int8 output)
        and ctx [T, dim] (sum of emb * emb_mult of the frame's codes 0..k-1, int64)."""
        acc = h * self.intra_hmult
        if k:  # at k = 0 the context is 0 and so is its product: skipping it changes nothing
            c = ((ctx + (1 << (self.emb_shift - 1))) >> self.emb_shift).clamp_(
                -RESID_CLAMP, RESID_CLAMP
            )
            acc = torch.addcmul(acc, self.intra.matmul(self.intra_norm(c)), self.intra.mult)
        hk = ((acc + self.intra.half) >> self.intra.shift).clamp_(-Q8, Q8)
        cols = slice(k * self.config.card, (k + 1) * self.config.card)
        z = torch.addcmul(self.head.half, self.head.matmul(hk, cols), self.head.mult[cols])
        return self._tables((z >> self.head.shift) + self.head_bias[cols])

    def _emb_raw(self, rows: Tensor) -> Tensor:
        """Embedding rows at their exact int64 scale (before emb_shift): [..., dim]."""
        return self.emb[rows].long() * self.emb_mult[rows][..., None]

    def _tables(self, z: Tensor) -> Tensor:
        """Integer logits z [..., card] (1/64 nat) → frequency tables ≥ 1 summing to 2^24."""
        card = self.config.card
        lut = self.out_exp
        gap = (z.amax(-1, keepdim=True) - z).clamp_(max=lut.numel() - 1)
        e = lut[gap]
        spare = (1 << FREQ_BITS) - card  # what is left after every symbol's floor of 1
        freq = 1 + torch.div(e * spare, e.sum(-1, keepdim=True), rounding_mode="floor")
        short = (1 << FREQ_BITS) - freq.sum(-1, keepdim=True)  # 0 ≤ short < card
        top = z.argmax(-1, keepdim=True)  # first maximum: its e is the table's largest
        return freq.scatter_add_(-1, top, short)

    def _embed(self, prev: Tensor | None, num_codebooks: int) -> Tensor:
        """prev [K, T] codes of the previous frames (None: the start frame) → [T, dim]."""
        kvec = self.k_emb[num_codebooks]
        if prev is None:
            return (self.start_vec + kvec)[None]
        rows = prev + torch.arange(num_codebooks)[:, None] * self.config.card  # [K, T]
        summed = self._emb_raw(rows).sum(0)
        return ((summed + (1 << (self.emb_shift - 1))) >> self.emb_shift) + kvec

    # -- public API -----------------------------------------------------------------------

    def start(self, num_codebooks: int) -> LMState:
        """Fresh state at the beginning of a chunk."""
        c = self.config
        if not 1 <= num_codebooks <= c.max_codebooks:
            raise ValueError(f"{num_codebooks} codebooks, the LM handles 1..{c.max_codebooks}")
        shape = (c.heads, 2 * c.window, c.dim // c.heads)
        return LMState(
            num_codebooks,
            [torch.zeros(shape) for _ in range(c.layers)],
            [torch.zeros(shape) for _ in range(c.layers)],
        )

    def step(
        self,
        state: LMState,
        prev: Tensor | None,
        choose: Callable[[int, Tensor], int] | None = None,
    ) -> Tensor:
        """Frequencies [K, card] for the next frame given the codes [K] of the frame before.

        With intra-frame conditioning the table of code k depends on codes 0..k-1 of this
        frame, so `choose` is required: it is called as choose(k, table_k) for k = 0..K-1 in
        turn and returns code k (the encoder its known code, the decoder the decoded one)
        before table k+1 is made. Without intra, `choose` is not used.
        """
        w = self.config.window
        if self.config.intra and choose is None:
            raise ValueError("an intra-frame LM needs choose() to step")
        if (prev is None) != (state.frame == 0):
            raise ValueError("prev must be None exactly at the first frame")
        x = self._embed(None if prev is None else prev.long()[:, None], state.num_codebooks)
        if state.filled == 2 * w:  # compact: keep the last window-1 entries
            for cache in state.keys + state.values:
                cache[:, : w - 1] = cache[:, w + 1 :].clone()
            state.filled = w - 1
        n = state.filled
        lo = max(0, n + 1 - w)
        for layer, keys, values in zip(self.layers, state.keys, state.values, strict=True):
            q, k, v = self._qkv(layer, x)
            keys[:, n] = k[:, 0]
            values[:, n] = v[:, 0]
            bias = layer.alibi_step[:, :, w - (n + 1 - lo) :]
            att = self._attend(layer, q, keys[:, lo : n + 1], values[:, lo : n + 1], bias, None)
            x = self._finish_block(layer, x, att)
        state.filled = n + 1
        state.frame += 1
        if not self.config.intra:
            return self._frequencies(x, state.num_codebooks)[:, 0]
        h, ctx, card = self.norm_f(x), torch.zeros_like(x), self.config.card
        tables = []
        for k in range(state.num_codebooks):
            tables.append(self._code_table(h, ctx, k)[0])
            code = int(choose(k, tables[-1]))
            if not 0 <= code < card:
                raise ValueError(f"code {code} out of range")
            if k + 1 < state.num_codebooks:
                ctx = ctx + self._emb_raw(torch.tensor([k * card + code]))
        return torch.stack(tables)

    def forward(self, codes: Tensor) -> Tensor:
        """Frequencies [K, T, card] for every frame of codes [K, T] (teacher forcing).

        Gives exactly the integers of `step` run frame by frame; used for tests and for
        measuring bits per code quickly, never by the coder.
        """
        k, t = codes.shape
        x = self._embed(None, k)
        if t > 1:
            x = torch.cat([x, self._embed(codes[:, :-1].long(), k)])
        pos = torch.arange(t)
        dist = pos[:, None] - pos[None, :]
        visible = (dist >= 0) & (dist < self.config.window)
        dist = dist.clamp(0, self.config.window - 1)
        for layer in self.layers:
            q, kk, v = self._qkv(layer, x)
            att = self._attend(layer, q, kk, v, layer.alibi[:, dist], visible)
            x = self._finish_block(layer, x, att)
        if not self.config.intra:
            return self._frequencies(x, k)
        h = self.norm_f(x)
        rows = codes[: k - 1].long() + torch.arange(k - 1)[:, None] * self.config.card
        ctx = torch.cat([torch.zeros_like(x)[None], self._emb_raw(rows).cumsum(0)])  # [K, T, dim]
        return torch.stack([self._code_table(h, ctx[i], i) for i in range(k)])


def code_bits(freqs: Tensor, codes: Tensor) -> Tensor:
    """Ideal coded size in bits of codes [K, T] under frequency tables [K, T, card]."""
    f = freqs.gather(-1, codes.long()[..., None])[..., 0].double()
    return (FREQ_BITS - torch.log2(f)).sum()


def to_arrays(lm: IntLM) -> dict[str, Tensor]:
    """Compact tensors for the model file: int8 weights and embeddings, int64 elsewhere."""
    return {
        k: v.to(torch.int8) if k.endswith("_w") or k == "emb" else v.long()
        for k, v in lm.arrays.items()
    }
