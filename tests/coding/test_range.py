"""LM range coder: exact round trips, bit-exact across processes/ISAs/threads, damage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from neucomp.coding.intlm import code_bits
from neucomp.coding.range import LMCoder
from neucomp.errors import CorruptDataError, FormatError, ModelError
from neucomp.nn.lm import LMConfig
from neucomp.registry import LM_FILE_VERSION, read_lm, save_lm
from neucomp.train.quantize import random_lm

SMALL = LMConfig(dim=32, layers=2, heads=4, ff=64, window=16, max_codebooks=32)
# Wide enough that BLAS takes its blocked, vectorised paths (they differ between ISAs).
WIDE = LMConfig(dim=128, layers=2, heads=4, ff=512, window=24, max_codebooks=8)
INTRA = [False, True]  # every coder test runs without and with intra-frame conditioning


def structured_codes(k: int, t: int, seed: int = 0) -> np.ndarray:
    """Skewed values, repeated frames and ties between codebooks, like real codes."""
    rng = np.random.default_rng(seed)
    vocab = rng.permutation(1024)[:40]
    codes = vocab[np.minimum(rng.geometric(0.2, size=(k, t)) - 1, 39)]
    for i in np.flatnonzero(rng.random(t) < 0.3):
        codes[:, i] = codes[:, i - 1]
    return codes


@pytest.fixture(scope="module", params=INTRA, ids=["plain", "intra"])
def coder(tmp_path_factory, request) -> LMCoder:
    path = tmp_path_factory.mktemp("lm") / "small.lm"
    save_lm(random_lm(replace(SMALL, intra=request.param), seed=1), path, codec_hash="c0dec")
    return read_lm(path)


@pytest.fixture(scope="module", params=INTRA, ids=["plain", "intra"])
def wide_path(tmp_path_factory, request) -> Path:
    path = tmp_path_factory.mktemp("lm") / "wide.lm"
    lm = random_lm(replace(WIDE, intra=request.param), seed=2, spread=0.05)
    save_lm(lm, path, codec_hash="c0dec")
    return path


@pytest.mark.parametrize("k", [2, 8, 32])
@pytest.mark.parametrize("frames", [1, 2, 300, 750])
def test_round_trip_is_exact(coder, k, frames):
    for codes in (
        np.random.default_rng(k * frames).integers(0, 1024, size=(k, frames)),
        structured_codes(k, frames, seed=frames),
    ):
        payload = coder.encode(codes)
        out = coder.decode(payload, k, frames)
        assert out.shape == (k, frames)
        np.testing.assert_array_equal(out, codes)


def test_payload_size_matches_the_model_probabilities(coder):
    codes = structured_codes(8, 300, seed=5)
    ideal = code_bits(coder.lm.forward(torch.from_numpy(codes)), torch.from_numpy(codes)).item()
    bits = 8 * len(coder.encode(codes))
    assert ideal <= bits <= ideal * 1.001 + 64


def test_empty_chunk_and_bad_shapes(coder):
    assert coder.encode(np.zeros((4, 0), dtype=np.int64)) == b""
    assert coder.decode(b"", 4, 0).shape == (4, 0)
    with pytest.raises(FormatError):
        coder.decode(b"\0" * 8, 33, 10)
    with pytest.raises(FormatError):
        coder.decode(b"\0" * 8, 0, 10)
    with pytest.raises(ValueError):
        coder.encode(np.full((2, 3), 1024))


def test_damaged_payloads_give_clean_errors_or_codes(coder):
    k, frames = 8, 200
    codes = structured_codes(k, frames, seed=9)
    payload = coder.encode(codes)
    rng = np.random.default_rng(0)
    damaged = [
        payload[:-4],
        payload[: len(payload) // 2],
        payload + b"\xff" * 4,
        b"",
        payload[:-1],  # not whole words
        rng.bytes(len(payload)),
        b"\xff" * len(payload),
    ]
    for pos in (0, 5, len(payload) // 2, len(payload) - 1):
        flipped = bytearray(payload)
        flipped[pos] ^= 0x5A
        damaged.append(bytes(flipped))
    start = time.monotonic()
    for bad in damaged:
        try:
            out = coder.decode(bad, k, frames)
        except CorruptDataError:
            continue
        assert out.shape == (k, frames)
        assert out.min() >= 0 and out.max() < 1024
    assert time.monotonic() - start < 60
    with pytest.raises(CorruptDataError):
        coder.decode(payload[:-1], k, frames)


def test_only_the_exact_payload_of_some_codes_decodes(coder):
    k, frames = 8, 200
    payload = coder.encode(structured_codes(k, frames, seed=3))
    for bad in (
        b"",
        bytes(len(payload)),  # all zero
        payload[: len(payload) // 2 // 4 * 4],  # half length
        payload + bytes(4),  # a word too many
    ):
        with pytest.raises(CorruptDataError):
            coder.decode(bad, k, frames)


def test_a_tiny_payload_cannot_buy_many_frames_of_work(coder, monkeypatch):
    steps = []
    step = coder.lm.step
    monkeypatch.setattr(coder.lm, "step", lambda *a, **kw: steps.append(1) or step(*a, **kw))
    with pytest.raises(CorruptDataError, match="too short for the frames"):
        coder.decode(bytes(8), 8, 1024)
    assert len(steps) < 10  # gave up after a few frames, not after 1024


def test_load_checks_the_hash(tmp_path, coder):
    good = tmp_path / "good.lm"
    digest = save_lm(coder.lm, good, codec_hash="c0dec")
    assert read_lm(good).hash == digest and len(digest) == 32
    # same meta, one weight changed → the recorded hash no longer matches
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["l0.qkv_w"] = arrays["l0.qkv_w"].copy()
    arrays["l0.qkv_w"].flat[7] ^= 1
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    tampered = tmp_path / "tampered.lm"
    tampered.write_bytes(buf.getvalue())
    with pytest.raises(ModelError, match="damaged"):
        read_lm(tampered)
    # a different codec hash in the meta also breaks it
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["codec_hash"] = "other"
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with np.load(good) as npz:
        arrays["l0.qkv_w"] = npz["l0.qkv_w"]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    tampered.write_bytes(buf.getvalue())
    with pytest.raises(ModelError, match="damaged"):
        read_lm(tampered)
    for junk in (b"", b"not a zip", good.read_bytes()[:1000]):
        tampered.write_bytes(junk)
        with pytest.raises(ModelError):
            read_lm(tampered)
    with pytest.raises(ModelError, match="not found"):
        read_lm(tmp_path / "missing.lm")


def test_codec_mismatch_is_refused(coder):
    coder.check_codec("c0dec")
    with pytest.raises(ModelError, match="train-lm"):
        coder.check_codec("another-codec")


# --------------------------------------------------------------------------------------
# Bit-exactness across processes, thread counts and instruction sets

_WORKER = r"""
import hashlib, os, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from neucomp.coding import intlm
from neucomp.registry import read_lm
intlm.USE_INT_MM = intlm.USE_INT_MM and os.environ["LM_MATMUL"] == "int8"
coder = read_lm(sys.argv[2])
codes = np.load(sys.argv[3])
k, f = codes.shape
if sys.argv[4] == "encode":
    payload = coder.encode(codes)
    open(sys.argv[5], "wb").write(payload)
else:
    payload = open(sys.argv[5], "rb").read()
    np.save(sys.argv[6], coder.decode(payload, k, f))
state, h = coder.lm.start(k), hashlib.sha256()
for t in range(f):
    prev = torch.from_numpy(codes[:, t - 1]) if t else None
    h.update(coder.lm.step(state, prev, lambda i, _: int(codes[i, t])).numpy())
print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), h.hexdigest())
print(intlm.USE_INT_MM)
"""

# Each run forces a different code path: ATen kernels, MKL and oneDNN instruction sets,
# and int8 versus float32 weight matmuls. (On the development machine a float32 matmul
# and softmax give different bits under these two settings: the switches do bite.)
_ENVS = [
    ("1", {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
           "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1", "LM_MATMUL": "int8"}),
    ("2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
           "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2", "LM_MATMUL": "float32"}),
]  # fmt: skip


def _run(tmp_path, threads, env, *args) -> list[str]:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    full_env = {**os.environ, **env}
    done = subprocess.run(
        [sys.executable, str(script), threads, *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_bit_exact_across_processes_threads_and_instruction_sets(tmp_path, wide_path):
    codes = structured_codes(8, 120, seed=3)
    np.save(tmp_path / "codes.npy", codes)
    (t1, env1), (t2, env2) = _ENVS
    cap1, n1, hash1, _ = _run(
        tmp_path, t1, env1, wide_path, tmp_path / "codes.npy", "encode", tmp_path / "a.bin"
    )
    cap2, n2, hash2, int_mm2 = _run(
        tmp_path,
        t2,
        env2,
        wide_path,
        tmp_path / "codes.npy",
        "decode",
        tmp_path / "a.bin",
        tmp_path / "out.npy",
    )
    assert (cap1, n1) == ("DEFAULT", "1")
    assert (n2, int_mm2) == ("2", "False")
    # the decoder got back every code, and every table matched to the last bit
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), codes)
    assert hash1 == hash2
    # and this process (its own default ISA, default threads) writes the same bytes
    here = read_lm(wide_path).encode(codes)
    assert here == (tmp_path / "a.bin").read_bytes()


@pytest.mark.parametrize("intra", INTRA, ids=["plain", "intra"])
def test_worst_case_payload_stays_under_32_bits_per_code(intra):
    # adversarial codes: always the least likely symbol of a very peaked LM (~24 bits each)
    lm = random_lm(replace(SMALL, intra=intra), seed=4, spread=1.0)
    coder = LMCoder(lm, "c0dec", b"\0" * 32)
    k, frames = 8, 60
    state, prev, codes = coder.lm.start(k), None, np.zeros((k, frames), dtype=np.int64)
    for t in range(frames):
        tables = coder.lm.step(state, prev, lambda i, table: int(table.argmin()))
        codes[:, t] = tables.argmin(-1).numpy()
        prev = torch.from_numpy(codes[:, t])
    payload = coder.encode(codes)
    assert 8 * len(payload) >= 23 * k * frames
    assert len(payload) <= 4 * k * frames + 8  # the bound a container reader may enforce
    np.testing.assert_array_equal(coder.decode(payload, k, frames), codes)


def test_plain_lm_files_keep_their_format_and_intra_files_say_so(tmp_path):
    """A model without intra writes the version-1 file it always did (same meta config, so
    the same hash for the same weights); an intra model writes version 2, which readers
    from before intra refuse instead of misdecoding; a file claiming the wrong one fails."""
    paths = {}
    for intra in INTRA:
        paths[intra] = tmp_path / f"{intra}.lm"
        save_lm(random_lm(replace(SMALL, intra=intra), seed=6), paths[intra], codec_hash="c")
        with np.load(paths[intra]) as npz:
            meta = json.loads(npz["__meta__"].tobytes())
        assert meta["version"] == (2 if intra else LM_FILE_VERSION)
        assert ("intra" in meta["config"]) == intra
        assert read_lm(paths[intra]).lm.config.intra == intra
    with np.load(paths[True]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["version"] = 1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "bad.lm").write_bytes(buf.getvalue())
    with pytest.raises(ModelError, match="intra"):
        read_lm(tmp_path / "bad.lm")
