"""Fast coder (integer context tables + range coder): exact round trips, exact payload
use, clean errors on damage and on foreign table files, bit-exact across processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import constriction
import numpy as np
import pytest

from neucomp.coding.tables import MAGIC, TOTAL, Tables, quantize, train_tables
from neucomp.errors import CorruptDataError, FormatError, ModelError

CODEC = hashlib.sha256(b"test codec").digest()
OTHER = hashlib.sha256(b"another codec").digest()
KS = [2, 4, 8, 16, 32]
FRAMES = [0, 1, 749, 750, 751]


def rvq_like(k: int, t: int, seed: int = 0) -> np.ndarray:
    """Skewed codes where each codebook depends on the one below it, like RVQ codes."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((k, t), dtype=np.int64)
    codes[0] = np.minimum(rng.geometric(0.01, size=t) - 1, 1023)
    hold = rng.random(t) < 0.5  # the coarse stage often repeats
    for j in np.flatnonzero(hold[1:]) + 1:
        codes[0, j] = codes[0, j - 1]
    for i in range(1, k):
        codes[i] = (codes[i - 1] * 7 + np.minimum(rng.geometric(0.05, size=t), 300)) % 1024
    return codes


@pytest.fixture(scope="module")
def tables() -> Tables:
    return train_tables([rvq_like(32, 3000, seed=s) for s in range(3)], CODEC, n_ctx=16)


def test_quantize_keeps_every_symbol_and_sums_exactly():
    probs = np.random.default_rng(0).dirichlet(np.full(1024, 0.05), size=5)
    probs[0] = 0.0
    probs[0, 3] = 1.0  # one certain symbol: every other one must stay codable
    f = quantize(probs)
    assert f.dtype == np.uint32 and (f >= 1).all()
    assert (f.sum(1, dtype=np.int64) == TOTAL).all()


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("frames", FRAMES)
def test_round_trip_is_exact_and_uses_the_payload(tables, k, frames):
    for codes in (
        np.random.default_rng(k * 1000 + frames).integers(0, 1024, size=(k, frames)),
        rvq_like(k, frames, seed=frames + 7),
    ):
        payload = tables.encode(codes)
        assert len(payload) % 4 == 0 and (len(payload) > 0) == (frames > 0)
        out = tables.decode(payload, k, frames)
        assert out.shape == (k, frames) and out.dtype == np.int64
        np.testing.assert_array_equal(out, codes)
        if frames:
            # Exact use: one word more or less is refused.
            with pytest.raises(CorruptDataError):
                tables.decode(payload + b"\0\0\0\0", k, frames)
            with pytest.raises(CorruptDataError):
                tables.decode(payload[:-4], k, frames)


def test_payload_size_matches_the_table_probabilities(tables):
    codes = rvq_like(8, 750, seed=99)
    ideal = tables.ideal_bits(codes)
    bits = 8 * len(tables.encode(codes))
    assert ideal <= bits <= ideal * 1.001 + 64
    assert bits < 0.8 * 10 * codes.size  # the context pays on codes like these


def test_the_range_coder_gets_our_integer_table_exactly():
    """Categorical(f - 1, perfect=False) must code like the integer table f: the same
    bytes as the per-symbol family range.py relies on, at the ideal size."""
    rng = np.random.default_rng(3)
    f = quantize(rng.dirichlet(np.full(1024, 0.1))[None])[0]
    p = f.astype(np.float64) - 1
    symbols = rng.choice(1024, size=5000, p=f / TOTAL).astype(np.int32)
    a = constriction.stream.queue.RangeEncoder()
    a.encode(symbols, constriction.stream.model.Categorical(p, perfect=False))
    b = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    b.encode(symbols, family, np.tile(p, (len(symbols), 1)))
    np.testing.assert_array_equal(a.get_compressed(), b.get_compressed())
    ideal = float(np.sum(24 - np.log2(f[symbols].astype(float))))
    assert ideal <= 32 * len(a.get_compressed()) <= ideal * 1.001 + 64


def test_static_tables_round_trip():
    static = train_tables(rvq_like(4, 500), CODEC, n_ctx=1, n_ctx0=1)
    assert all(f.shape[0] == 1 for f in static.freqs)
    codes = rvq_like(4, 751, seed=5)
    np.testing.assert_array_equal(static.decode(static.encode(codes), 4, 751), codes)


def test_damaged_payloads_give_the_clean_error(tables):
    codes = rvq_like(8, 750, seed=1)
    payload = tables.encode(codes)
    rng = np.random.default_rng(0)
    bad = [
        b"",
        b"\0" * 3,
        payload[:-1],
        payload[:-4],
        payload + b"\0" * 4,
        b"\0" * len(payload),
        b"\xff" * len(payload),
        payload[: len(payload) // 2],
    ]
    for _ in range(40):
        flipped = bytearray(payload)
        flipped[rng.integers(len(payload))] ^= 1 << int(rng.integers(8))
        bad.append(bytes(flipped))
    for data in bad:
        try:
            out = tables.decode(data, 8, 750)
        except CorruptDataError:
            continue
        # A flip can only ever pass if it decodes to other codes that re-encode to it.
        assert data != payload and tables.encode(out) == data
    with pytest.raises(CorruptDataError):
        tables.decode(b"\0" * 4, 8, 0)


def test_bad_shapes_and_codes(tables):
    assert tables.encode(np.zeros((4, 0), dtype=np.int64)) == b""
    with pytest.raises(FormatError):
        tables.decode(b"\0" * 8, 33, 10)
    with pytest.raises(FormatError):
        tables.decode(b"\0" * 8, 0, 10)
    with pytest.raises(ValueError):
        tables.encode(np.full((2, 3), 1024))
    with pytest.raises(ValueError):
        tables.encode(np.full((2, 3), -1))


def test_file_round_trip_and_refusals(tables, tmp_path):
    path = tmp_path / "t.fct"
    digest = tables.save(path)
    assert digest == tables.hash == hashlib.sha256(path.read_bytes()).digest()
    loaded = Tables.load(path, CODEC)
    assert loaded.hash == tables.hash
    codes = rvq_like(16, 751, seed=2)
    assert loaded.encode(codes) == tables.encode(codes)
    loaded.check_codec(CODEC.hex())

    with pytest.raises(ModelError, match="retrain"):
        Tables.load(path, OTHER)  # a table file for another codec
    with pytest.raises(ModelError, match="retrain"):
        loaded.check_codec(OTHER)
    data = path.read_bytes()
    for name, bad in {
        "magic": b"XXXX" + data[4:],
        "version": data[:4] + (99).to_bytes(2, "little") + data[6:],
        "crc": data[:-1] + bytes([data[-1] ^ 1]),
        "body": data[:100] + bytes([data[100] ^ 1]) + data[101:],
        "cut": data[: len(data) // 2],
        "empty": b"",
    }.items():
        (tmp_path / name).write_bytes(bad)
        with pytest.raises(ModelError):
            Tables.load(tmp_path / name)
    with pytest.raises(ModelError):
        Tables.load(tmp_path / "missing.fct")
    assert data[:4] == MAGIC


def test_tables_are_integers_and_small(tables):
    assert all(f.dtype == np.uint32 for f in tables.freqs)
    assert tables.nbytes < 4 << 20


_CHILD = """
import hashlib, json, sys
import numpy as np
import torch
from neucomp.coding.tables import Tables
sys.path.insert(0, {tests!r})
from test_fast_coder import rvq_like
torch.set_num_threads(int({threads!r}))
t = Tables.load({path!r})
out = {{}}
for k in (2, 8, 32):
    codes = rvq_like(k, 751, seed=k)
    payload = t.encode(codes)
    assert (t.decode(payload, k, 751) == codes).all()
    out[k] = hashlib.sha256(payload).hexdigest()
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "threads,env",
    [
        (
            "1",
            {
                "ATEN_CPU_CAPABILITY": "default",
                "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                "OMP_NUM_THREADS": "1",
            },
        ),
        ("2", {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2"}),
    ],
)
def test_bit_exact_across_processes_isas_and_threads(tables, tmp_path, threads, env):
    path = tmp_path / "t.fct"
    tables.save(path)
    code = _CHILD.format(tests=str(Path(__file__).parent), threads=threads, path=str(path))
    root = Path(__file__).resolve().parents[1]
    child_env = {**os.environ, **env, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    theirs = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    ours = {
        k: hashlib.sha256(tables.encode(rvq_like(k, 751, seed=k))).hexdigest() for k in (2, 8, 32)
    }
    assert theirs == ours


def test_shipped_tables_if_present():
    from neucomp.registry import models_dir

    path = models_dir() / "neucomp_24khz.fct"
    if not path.is_file():
        pytest.skip("no shipped table file")
    t = Tables.load(path)
    codes = rvq_like(min(32, t.num_codebooks), 751, seed=3)
    np.testing.assert_array_equal(t.decode(t.encode(codes), codes.shape[0], 751), codes)
