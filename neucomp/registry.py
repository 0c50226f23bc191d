"""Model, LM and table files: where they live, their formats and hashes, and the
per-process cache. The one :func:`load_model`, and the checks that a stream is decoded
by exactly the weights (and LM or tables) that made it.

A model file (`models/<name>.pt`) holds the config needed to rebuild the network, the
inference weights (fp16, weight norm folded in) and a sha256 over both; an LM file
(`models/<name>.lm`, npz) holds the integer LM's arrays, its config, the hash of the
codec weights it was trained for, and a sha256 over all of it; a table file
(`models/<name>.fct`, the fast coder's, format in neucomp.coding.tables) likewise names
its codec and is hashed whole. The model hash and the coder's go into every .ecdc
header. torch is imported only when a model is really loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neucomp import DEFAULT_MODEL, MODEL_ALIASES, MODELS
from neucomp.errors import FormatError, ModelError, UsageError

if TYPE_CHECKING:
    from torch import Tensor

    from neucomp.coding.base import ChunkCoder
    from neucomp.coding.intlm import IntLM
    from neucomp.coding.range import LMCoder
    from neucomp.coding.tables import FastCoder
    from neucomp.container import Header
    from neucomp.model import Codec

MODEL_FILE_FORMAT = "neucomp-model"
MODEL_FILE_VERSION = 1
LM_FILE_FORMAT = "neucomp-lm"
LM_FILE_VERSION = 1  # files of LMs without intra-frame conditioning (what older readers know)
LM_FILE_VERSION_INTRA = 2  # intra-frame LMs: older readers refuse them instead of misdecoding
_META = "__meta__"

_MODELS: dict[str, Codec] = {}  # loaded models by resolved path, one load per process
_LMS: dict[str, LMCoder] = {}  # LM coders likewise
_TABLES: dict[str, tuple[tuple[int, int], FastCoder]] = {}  # fast coders, by path and (size, mtime)
_threads: int | None = None  # torch threads asked for by the CLI, applied when torch loads
_blas_limit: object = None  # the BLAS thread limit in force (threadpoolctl), kept alive


def set_threads(threads: int) -> None:
    """Run inference on ``threads`` CPU threads (the CLI's --threads, default 1).

    torch is only imported once there is work to do, so that errors about bad inputs
    come back instantly; the setting is applied then.
    """
    global _threads, _blas_limit
    _threads = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
        # numpy's BLAS too: the envelope's search and the postfilter run small matrix
        # products, which OpenBLAS would spread over all cores; with another job on the
        # second core that made them ~25x slower (docs/EXPERIMENTS.md E20).
        from threadpoolctl import threadpool_limits

        _blas_limit = threadpool_limits(limits=threads, user_api="blas")


# ------------------------------------------------------------------------ where they are


def models_dir() -> Path:
    """Where shipped models live: $NEUCOMP_MODEL_DIR, else <repo>/models."""
    env = os.environ.get("NEUCOMP_MODEL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


def canonical_model_name(name: str) -> str:
    """The full name of a model a user names: "48khz" → "neucomp_48khz"; other names as
    given (aliases are matched without regard to case)."""
    return MODEL_ALIASES.get(name.lower(), name)


def resolve_model_path(name_or_path: str | os.PathLike | None) -> Path:
    """A model name or alias (looked up in models_dir()) or a path to a model file: for
    names the user gives (--model, the Python API), never for names read from a .ecdc
    file. An alias is always a name, even where a file of that name exists."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if isinstance(name_or_path, str) and name_or_path.lower() in MODEL_ALIASES:
        return installed_model_path(canonical_model_name(name_or_path))
    candidate = Path(name_or_path)
    if candidate.suffix == ".pt" or candidate.is_file():
        if not candidate.is_file():
            raise ModelError(f"model file not found: {candidate}")
        return candidate
    return installed_model_path(str(name_or_path))


def installed_model_path(name: str) -> Path:
    """The file of the installed model ``name``: only ever inside models_dir()."""
    path = models_dir() / f"{name}.pt"
    if Path(name).name != name or name in ("", ".", "..") or not path.is_file():
        raise ModelError(f"model '{name}' is not installed in {models_dir()} ({_offered(name)})")
    return path


def _offered(name: str) -> str:
    """What a user could give instead of a model ``name`` that is not installed."""
    installed = sorted(p.stem for p in models_dir().glob("*.pt"))
    have = f"installed: {', '.join(installed)}" if installed else "none installed"
    if name in MODELS:  # one of ours, not (yet) in this models folder
        return f"the {MODELS[name]} model; {name}.pt is missing; {have}"
    short = {full: alias for alias, full in MODEL_ALIASES.items()}
    known = ", ".join(f"{short[n]} ({MODELS[n]})" if n in short else n for n in MODELS)
    return f"{have}; the project's models: {known}; or give the path of a .pt file"


def lm_path(codec_name: str) -> Path:
    """Where the LM for a codec lives: <models_dir>/<codec_name>.lm."""
    return models_dir() / f"{codec_name}.lm"


def tables_path(codec_name: str) -> Path:
    """Where the fast coder's tables for a codec live: <models_dir>/<codec_name>.fct."""
    return models_dir() / f"{codec_name}.fct"


def legacy_path(codec_name: str, weights_hash: str, suffix: str) -> Path:
    """Where a coder file of an earlier model of that name is kept, for the streams it
    made: <models_dir>/legacy/<codec_name>-<first 12 hex of its weights hash><suffix>."""
    return models_dir() / "legacy" / f"{codec_name}-{weights_hash[:12]}{suffix}"


def _coder_file(model: Codec, installed: Path) -> Path:
    """The installed coder file, or, for a model that stands in for an earlier one
    (Codec.without_envelope), that model's kept file when there is one."""
    kept = legacy_path(model.config.name, model.weights_hash, installed.suffix)
    return kept if kept.is_file() else installed


# --------------------------------------------------------------------------- model files


def _hash_weights(config: dict, state: dict[str, Tensor]) -> str:
    import torch

    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for key in sorted(state):
        t = state[key].contiguous().cpu()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")  # no copy
    return h.hexdigest()


def save_model(codec: Codec, path: str | os.PathLike) -> str:
    """Write an inference model file (atomic) and return its hash."""
    import torch

    from neucomp.audio.writers import atomic_write
    from neucomp.model import inference_copy, inference_state

    plain = inference_copy(codec)
    config = plain.config.to_dict()
    state = inference_state(plain)
    digest = _hash_weights(config, state)
    payload = {
        "format": MODEL_FILE_FORMAT,
        "version": MODEL_FILE_VERSION,
        "config": config,
        "state_dict": state,
        "hash": digest,
    }
    with atomic_write(path) as fp:
        torch.save(payload, fp)
    return digest


def load_model(name_or_path: str | os.PathLike | None = None, *, cached: bool = True) -> Codec:
    """The codec model called ``name_or_path`` (or at that path; None = the default
    model), its hash verified. Loaded once per process and shared (batch workers and
    repeated API calls pay the load cost once); ``cached=False`` reads a fresh copy
    that the caller may change (training)."""
    path = resolve_model_path(name_or_path)
    key = str(path.resolve())
    if cached and key in _MODELS:
        return _MODELS[key]
    if _threads is not None:
        import torch  # noqa: F401  (set_threads applies the setting once torch is loaded)

        set_threads(_threads)
    codec = _read_model(path)
    if cached:
        _MODELS[key] = codec
    return codec


def _read_model(path: Path) -> Codec:
    import torch

    from neucomp.model import TRAINING_STATE, Codec, CodecConfig

    try:
        payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ModelError(f"cannot load model file {path}: {type(err).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FILE_FORMAT:
        raise ModelError(f"{path} is not a neucomp model file")
    if payload.get("version") != MODEL_FILE_VERSION:
        raise ModelError(f"{path}: unsupported model file version {payload.get('version')}")
    config, state = payload["config"], payload["state_dict"]
    if _hash_weights(config, state) != payload["hash"]:
        raise ModelError(f"{path} is damaged: its weights do not match the recorded hash")
    with _random_init_skipped():
        codec = Codec(CodecConfig.from_dict(config))
    # assign: the file's tensors become the parameters (a copy into the freshly built
    # ones would be a second pass over every weight before the first audio)
    missing, unexpected = codec.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
        strict=False,
        assign=True,
    )
    missing = [k for k in missing if not k.endswith(TRAINING_STATE)]
    if missing or unexpected:
        raise ModelError(
            f"{path} does not fit its config (missing {missing[:3]}, extra {unexpected[:3]})"
        )
    # The codebooks' usage statistics are not stored: start them from the loaded
    # codebooks (they only matter to training that goes on from this model).
    for module in codec.modules():
        if hasattr(module, "restart_statistics"):
            module.restart_statistics()
    codec.weights_hash = payload["hash"]
    return codec.eval()


#: The random initialisers that torch's layers (and ours) call when they are built.
_RANDOM_INITS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "orthogonal_",
)


@contextlib.contextmanager
def _random_init_skipped() -> Iterator[None]:
    """Build modules without drawing their random initial weights.

    A model read from a file gets every weight from the file, so the draws (a third of
    the model's build time, paid by every batch worker and before the first audio of a
    pipe) are wasted. Only the initialisers are skipped: tensors are still allocated,
    and the load that follows is strict, so nothing can keep an undrawn value.
    """
    from torch.nn import init

    saved = {name: getattr(init, name) for name in _RANDOM_INITS}
    try:
        for name in saved:
            setattr(init, name, _leave_as_is)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def _leave_as_is(tensor: Tensor, *args: object, **kwargs: object) -> Tensor:
    return tensor


# ----------------------------------------------------------------------------- LM files


def _lm_hash(config: dict, codec_hash: str, arrays: dict[str, np.ndarray]) -> bytes:
    """sha256 over everything that shapes the frequency tables."""
    h = hashlib.sha256()
    h.update(json.dumps({"config": config, "codec_hash": codec_hash}, sort_keys=True).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.digest()


def save_lm(lm: IntLM, path: str | Path, codec_hash: str, card: dict | None = None) -> bytes:
    """Write an LM model file (npz: integer arrays + JSON meta, atomic); return its hash."""
    from neucomp.audio.writers import atomic_write
    from neucomp.coding.intlm import to_arrays

    arrays = {k: v.numpy() for k, v in to_arrays(lm).items()}
    config = lm.config.to_dict()
    digest = _lm_hash(config, codec_hash, arrays)
    meta = {
        "format": LM_FILE_FORMAT,
        "version": LM_FILE_VERSION_INTRA if lm.config.intra else LM_FILE_VERSION,
        "config": config,
        "codec_hash": codec_hash,
        "hash": digest.hex(),
        "card": card or {},
    }
    buf = io.BytesIO()
    # compressed: the int8 tables shrink by ~19 % (np.load reads either kind)
    np.savez_compressed(
        buf, **arrays, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    )
    with atomic_write(path) as fp:
        fp.write(buf.getvalue())
    return digest


def read_lm(path: str | os.PathLike) -> LMCoder:
    """Read and verify an LM file (ModelError if missing, damaged or not an LM file)."""
    from neucomp.coding.intlm import IntLM
    from neucomp.coding.range import LMCoder
    from neucomp.nn.lm import LMConfig

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"LM file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop(_META).tobytes())
    except Exception as err:  # zip/npz/json errors all mean the same thing here
        raise ModelError(f"cannot read LM file {path}: {type(err).__name__}") from None
    if not isinstance(meta, dict) or meta.get("format") != LM_FILE_FORMAT:
        raise ModelError(f"{path} is not a neucomp LM file")
    version = meta.get("version")
    if version not in (LM_FILE_VERSION, LM_FILE_VERSION_INTRA):
        raise ModelError(f"{path}: unsupported LM file version {version}")
    digest = _lm_hash(meta["config"], meta["codec_hash"], arrays)
    if digest.hex() != meta.get("hash"):
        raise ModelError(f"{path} is damaged: its weights do not match the recorded hash")
    try:
        config = LMConfig.from_dict(meta["config"])
        if config.intra != (version == LM_FILE_VERSION_INTRA):
            raise ValueError(f"version {version} with intra={config.intra}")
        lm = IntLM(config, arrays)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise ModelError(f"{path} does not fit its config: {err}") from None
    return LMCoder(lm, meta["codec_hash"], digest, meta.get("card"))


# ------------------------------------------------------- which model and coder a stream needs


def _require_file(
    path: Path, what: str, name: str, want_hash: bytes | None, verb: str = "is"
) -> None:
    """ModelError (one line) if a coder's file for model ``name`` is not installed."""
    if not path.is_file():
        hint = f" with hash {want_hash.hex()[:12]}…" if want_hash else ""
        raise ModelError(
            f"the {what} for model '{name}'{hint} {verb} not installed ({path} is missing)"
        )


def _check_recorded(what: str, name: str, want_hash: bytes | None, have: bytes) -> None:
    """ModelError if a stream records another coder file's hash than the installed one."""
    if want_hash is not None and have != want_hash:
        raise ModelError(
            f"this file was coded with {what} for model '{name}' "
            f"(hash {want_hash.hex()[:12]}…; installed: {have.hex()[:12]}…)"
        )


def _bound_hash(model: Codec, bound: str) -> str:
    """The codec hash a coder file must name to serve ``model``: the one it names when
    that is the model's own or a predecessor's (same codes), else the model's own (so
    the refusal names it)."""
    return bound if bound in model.coder_hashes else model.weights_hash


def lm_coder(model: Codec, want_hash: bytes | None = None) -> LMCoder:
    """The LM range coder of ``model`` (``<models>/<name>.lm``), cached, checked against
    the codec weights and, when decoding, against the LM hash the stream records."""
    try:
        import constriction  # noqa: F401 - the range coder's one optional dependency
    except ImportError:
        raise UsageError("the LM coder is not available in this installation") from None
    name = model.config.name
    path = _coder_file(model, lm_path(name))
    _require_file(path, "LM", name, want_hash)
    key = str(path.resolve())
    if key not in _LMS:
        _LMS[key] = read_lm(path)
    coder = _LMS[key]
    try:
        coder.check_codec(_bound_hash(model, coder.codec_hash))
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from None
    _check_recorded("a different LM", name, want_hash, coder.hash)
    return coder


def fast_coder(model: Codec, want_hash: bytes | None = None) -> FastCoder:
    """The fast coder of ``model`` (its tables ``<models>/<name>.fct``), cached, checked
    against the codec weights and, when decoding, against the table hash the stream
    records (ModelError, one line, for a missing, damaged or mismatched table file)."""
    from neucomp.coding.tables import FastCoder, Tables

    name = model.config.name
    path = _coder_file(model, tables_path(name))
    _require_file(path, "fast-coder tables", name, want_hash, verb="are")
    key = str(path.resolve())
    stat = path.stat()
    cached = _TABLES.get(key)
    if cached is None or cached[0] != (stat.st_size, stat.st_mtime_ns):
        _TABLES[key] = ((stat.st_size, stat.st_mtime_ns), FastCoder(Tables.load(path)))
    coder = _TABLES[key][1]
    try:
        coder.tables.check_codec(_bound_hash(model, coder.tables.codec_hash.hex()))
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from None
    if coder.max_codebooks < model.config.n_codebooks:
        raise ModelError(
            f"{path}: the tables cover {coder.max_codebooks} codebooks, model '{name}' "
            f"has {model.config.n_codebooks}"
        )
    _check_recorded("different fast-coder tables", name, want_hash, coder.hash)
    return coder


def coder(model: Codec, name: str | None = None) -> ChunkCoder:
    """The coder a compression uses: ``"plain"``, ``"fast"`` or ``"lm"`` (an error if
    what it needs is not installed), or None for the default: fast where the model's
    tables are installed, else plain (see :func:`default_coder`)."""
    from neucomp.coding.packing import PlainCoder

    if name is None:
        return default_coder(model)[0]
    if name == "lm":
        return lm_coder(model)
    if name == "fast":
        return fast_coder(model)
    if name == "plain":
        return PlainCoder()
    raise UsageError(f"unknown coder '{name}' (choose plain, fast or lm)")


def default_coder(model: Codec) -> tuple[ChunkCoder, str | None]:
    """The default coder and why it is not the fast one, if it is not: the fast coder
    when ``<models>/<name>.fct`` is installed for these weights; plain packing, silently,
    when no table file is installed (a model of one's own, say); plain packing with a
    warning when a table file is there but refused (damaged, or for other weights): a
    broken installation should be seen, but should not stop a compression."""
    from neucomp.coding.packing import PlainCoder

    if not tables_path(model.config.name).is_file():
        return PlainCoder(), None
    try:
        return fast_coder(model), None
    except ModelError as err:
        return PlainCoder(), f"{err}; compressed with plain packing instead"


def coder_for(header: Header, model: Codec) -> ChunkCoder:
    """The coder that reads this stream's payloads (an LM or table file checked against
    the hash the stream records)."""
    from neucomp.coding.base import CoderId
    from neucomp.coding.packing import PlainCoder

    if header.coder == CoderId.LM:
        return lm_coder(model, header.coder_hash)
    if header.coder == CoderId.FAST:
        return fast_coder(model, header.coder_hash)
    return PlainCoder()


def model_for(header: Header, model: Codec | str | os.PathLike | None) -> Codec:
    """The model that made this stream (installed, or the one given by name or path),
    or a ModelError saying what is missing."""
    want = header.model_hash.hex()
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if model is None:
        # A name read from a file is looked up in the models folder only, never as a path.
        try:
            path = installed_model_path(header.model_name)
        except ModelError:
            raise ModelError(
                f"this file needs model '{header.model_name}' with weights {want[:12]}…, "
                "which is not installed"
            ) from None
        model = load_model(path)
    if want not in model.code_hashes:
        raise ModelError(
            f"this file was made by different weights of model '{header.model_name}' "
            f"(hash {want[:12]}…; installed: {model.weights_hash[:12]}…)"
        )
    if want in model.config.plain_predecessors or want in model.config.envelope_predecessors:
        # made before the model had its envelope, or this envelope coder
        model = model.predecessor_view(want)  # a view: nothing is copied
    cfg = model.config
    mismatch = [
        label
        for label, ours, theirs in (
            ("sample rate", cfg.sample_rate, header.model_sample_rate),
            ("channels", cfg.channels, header.model_channels),
            ("hop length", cfg.hop_length, header.hop_length),
            ("codebook size", cfg.codebook_size, header.codebook_size),
        )
        if ours != theirs
    ]
    if mismatch or header.num_codebooks > cfg.n_codebooks:
        raise FormatError(
            f"the header does not fit model '{cfg.name}' "
            f"({', '.join(mismatch) or 'number of codebooks'} differ)"
        )
    return model
