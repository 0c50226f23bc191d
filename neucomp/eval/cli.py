"""`neucomp eval`: rate–quality of neucomp against Opus and MP3 on reference files.

Only click is imported here; numpy, torch, visqol and matplotlib load when the command
runs, so `neucomp --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from neucomp import BANDWIDTHS
from neucomp.errors import UsageError

if TYPE_CHECKING:
    from neucomp.eval import runner as runner_types
    from neucomp.eval.runner import MetricSet

DEFAULT_BANDWIDTHS = ",".join(f"{b:g}" for b in BANDWIDTHS)  # the 24 kHz model's
DEFAULT_BASELINES = "opus,mp3"


def _parse_bandwidths(text: str) -> list[float]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(
            f"--bandwidth wants numbers like {DEFAULT_BANDWIDTHS}, got '{text}'"
        ) from None


def _parse_baselines(text: str) -> list[str]:
    from neucomp.eval.baselines import TOOLS

    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise UsageError(f"unknown baseline {', '.join(unknown)} (choose from opus, mp3, none)")
    return names


def _note(message: str) -> None:
    click.echo(f"neucomp eval: {message}", err=True)


@click.command("eval")
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@click.option(
    "-b",
    "--bandwidth",
    "bandwidths",
    default=None,
    help="neucomp bandwidths in kbps, comma-separated ('none': baselines only).  "
    f"[default: the model's; 24 kHz: {DEFAULT_BANDWIDTHS}]",
)
@click.option(
    "--baselines",
    default=DEFAULT_BASELINES,
    show_default=True,
    help="Baseline codecs: opus (6/12/24 kbps), mp3 (32/64 kbps), or none.",
)
@click.option("--lm/--no-lm", default=False, help="Entropy-code neucomp with the LM.")
@click.option(
    "--postfilter/--no-postfilter",
    default=None,
    help="neucomp's decoder postfilter, for speech, on or off for every chunk  "
    "[default: on the chunks the encoder flagged speech].",
)
@click.option(
    "--model",
    metavar="NAME|PATH",
    default=None,
    help="Codec model (default: 24khz, scored in mono at 24 kHz; 48khz is scored in "
    "stereo at 48 kHz, every codec on the same stereo reference).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write all rows here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Rate–quality PNG.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Save the tables.")
@click.option(
    "--visqol/--no-visqol", default=True, help="Compute ViSQOL (the slowest metric, ~0.3 s/s)."
)
@click.option(
    "--speech-metrics/--no-speech-metrics",
    default=True,
    help="PESQ-wb and STOI on speech files (~0.05 s/s).",
)
@click.option(
    "--dnsmos/--no-dnsmos",
    default=True,
    help="DNSMOS P.835/P.808 on speech files, reference included (~0.1 s/s).",
)
@click.option(
    "--spectrograms",
    "spectrogram_dir",
    type=click.Path(file_okay=False),
    help="Write one spectrogram PNG per file here (reference, neucomp, Opus).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def eval_command(
    refs: tuple[str, ...],
    bandwidths: str | None,
    baselines: str,
    lm: bool,
    postfilter: bool | None,
    model: str | None,
    json_path: str | None,
    plot_path: str | None,
    md_path: str | None,
    visqol: bool,
    speech_metrics: bool,
    dnsmos: bool,
    spectrogram_dir: str | None,
    quiet: bool,
) -> None:
    """Compare neucomp with Opus and MP3 on REF files or folders (speech/music/sfx).

    Prints markdown tables per category and overall: actual bitrate, PESQ-wb and STOI
    (speech), log-spectral distance per band, ViSQOL, SI-SNR, mel distance and DNSMOS
    (speech, with the reference's own). --json keeps every file's row, --plot draws
    bitrate against PESQ, LSD, ViSQOL and DNSMOS, --spectrograms draws every file.
    """
    import torch  # noqa: F401  (set_threads applies to a loaded torch)

    from neucomp import registry
    from neucomp.eval import baselines as B
    from neucomp.eval import metrics, report, runner

    # One thread, like the rest of the CLI: on a small busy machine more threads only
    # contend (torch.stft for the mel distance was ~100x slower with 2 under load, and
    # numpy's BLAS likewise).
    registry.set_threads(1)
    domain, offered = _domain(model)
    bws = offered if bandwidths is None else _parse_bandwidths(bandwidths)
    if model is not None:  # an unoffered bandwidth: one line now, not after the first file
        import neucomp

        for bw in bws:
            neucomp.load_model(model).config.n_codebooks_for(bw)
    plan, notes = B.plan_baselines(_parse_baselines(baselines))
    for n in notes:
        _note(n)
    if visqol and not metrics.visqol_available():
        _note("ViSQOL skipped: visqol-python is not installed (pip install 'neucomp[eval]')")
        visqol = False
    files = runner.find_files(refs)
    # These score speech files only: without any, nothing to check or record.
    speech = any(f.category == "speech" for f in files)
    wanted = {"pesq": speech_metrics, "stoi": speech_metrics, "dnsmos": dnsmos}
    wanted = {m: on and speech for m, on in wanted.items()}
    names = {"pesq": "PESQ", "stoi": "STOI", "dnsmos": "DNSMOS"}
    for metric in [m for m, on in wanted.items() if on]:
        why = metrics.missing_for(metric)
        if why:
            _note(f"{names[metric]} skipped: {why}")
            wanted[metric] = False
    use = runner.MetricSet(visqol=visqol, **wanted)
    spectrogram_path = Path(spectrogram_dir) if spectrogram_dir else None
    if spectrogram_path is not None and not _has_matplotlib():
        _note("spectrograms skipped: matplotlib is not installed (pip install 'neucomp[eval]')")
        spectrogram_path = None
    codec = runner.neucomp_codec(lm=lm, model=model, postfilter=postfilter) if bws else None
    label = "neucomp+lm" if lm else "neucomp"
    meta = _meta(bws, plan, lm, model, use, domain)
    meta["postfilter"] = "default" if postfilter is None else postfilter

    rows = runner.evaluate(
        files,
        bws,
        plan,
        codec,
        label,
        progress=not quiet,
        use=use,
        spectrogram_dir=spectrogram_path,
        domain=domain,
    )

    table = report.markdown(rows, note=runner.table_note(domain))
    click.echo(table)
    if md_path:
        Path(md_path).write_text(table)
    if json_path:
        doc = report.to_json(rows, meta)
        Path(json_path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    if plot_path:
        try:
            report.plot(rows, plot_path, title=f"rate–quality, {len(files)} files")
        except metrics.MissingDependencyError as err:
            _note(f"plot skipped: {err}")


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _domain(model: str | None) -> tuple[runner_types.Domain, list[float]]:
    """Where the codecs are scored (the model's rate and channels) and the model's
    bandwidths; the default model's without loading it."""
    from neucomp.eval import runner

    if model is None:
        return runner.DEFAULT_DOMAIN, [float(b) for b in BANDWIDTHS]
    import neucomp

    config = neucomp.load_model(model).config
    return runner.Domain.of(config), [float(b) for b in config.bandwidths]


def _model_meta(model: str | None) -> dict:
    """Name and weights hash of the model the neucomp rows come from."""
    import neucomp

    codec = neucomp.load_model(model)
    return {"name": codec.config.name, "hash": codec.weights_hash}


def _meta(
    bws: list[float],
    plan: list,
    lm: bool,
    model: str | None,
    use: MetricSet,
    domain: runner_types.Domain | None = None,
) -> dict:
    """What the numbers depend on, for the JSON file."""
    import datetime
    from importlib.metadata import PackageNotFoundError, version

    from neucomp.eval import metrics, runner

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    meta: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rate": (domain or runner.DEFAULT_DOMAIN).rate,
        "channels": (domain or runner.DEFAULT_DOMAIN).channels,
        "note": runner.table_note(domain or runner.DEFAULT_DOMAIN),
        "bandwidths": bws,
        "lm": lm,
        "baselines": [b.label for b in plan],
        "mel_distance": {"fft_sizes": metrics.MEL_FFT_SIZES, "mels": metrics.MEL_BANDS},
        "lsd": {
            "bands_hz": metrics.LSD_BANDS,
            "n_fft_at_24k": 1024,
            "active_within_db": metrics.LSD_ACTIVE_DB,
        },
    }
    if domain is not None and domain.channels == 2:
        meta["stereo"] = {
            "side": "S = (L - R) / 2",
            "fmax_hz": metrics.STEREO_FMAX,
            "ild_bands": metrics.ILD_BANDS,
            "ild_clip_db": metrics.ILD_CLIP_DB,
        }
    if bws:
        meta["model"] = _model_meta(model)
    if use.visqol:
        meta["visqol"] = {
            "version": installed("visqol-python"),
            "speech_mapper": metrics.visqol_speech_mapper(),
        }
    if use.pesq:
        meta["pesq"] = {"version": installed("pesq"), "mode": "wb", "rate": metrics.SPEECH_RATE}
    if use.stoi:
        meta["stoi"] = {"version": installed("pystoi"), "extended": False}
    if use.dnsmos:
        meta["dnsmos"] = {
            "speechmos": installed("speechmos"),
            "onnxruntime": installed("onnxruntime"),
            "peak_normalised": True,
            "personalized": False,
        }
    return meta
