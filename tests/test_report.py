"""Evaluation report: every file × codec × bitrate reaches the JSON, every mean the tables."""

from __future__ import annotations

import json

import pytest

from neucomp.eval import report
from neucomp.eval.report import Row

SETTINGS = [("neucomp", bw) for bw in (1.5, 3.0, 6.0, 12.0, 24.0)] + [
    ("opus", 6.0),
    ("opus", 12.0),
    ("opus", 24.0),
    ("mp3", 32.0),
    ("mp3", 64.0),
]
FILES = [("a.flac", "speech"), ("b.flac", "speech"), ("c.flac", "music")]


def _rows() -> list[Row]:
    rows = []
    for i, (name, category) in enumerate(FILES):
        for codec, setting in SETTINGS:
            rows.append(
                Row(
                    file=name,
                    category=category,
                    codec=codec,
                    setting=setting,
                    seconds=8.0,
                    kbps=setting * (1.1 + 0.1 * i),
                    si_snr=setting / 2 + i,
                    mel_distance=1 / setting,
                    visqol_audio=1 + setting / 20 + 0.1 * i,
                    visqol_speech=2.0 + i if category == "speech" else None,
                    pesq=1.0 + setting / 10 + i if category == "speech" else None,
                    stoi=0.5 + setting / 100 if category == "speech" else None,
                    lsd_0_4k=20 / setting + i,
                    lsd_4_8k=30 / setting,
                    lsd_8_12k=40 / setting,
                )
            )
    return rows


def _table_rows(md: str, heading: str) -> list[list[str]]:
    """The data rows of the table under `**heading**`, as lists of cells."""
    block = md.split(f"**{heading}**", 1)[1].split("\n\n", 2)[1]
    lines = [line for line in block.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_json_has_every_file_codec_and_bitrate() -> None:
    rows = _rows()
    doc = json.loads(json.dumps(report.to_json(rows, {"rate": 24000})))
    keys = {(r["file"], r["codec"], r["setting"]) for r in doc["rows"]}
    assert len(doc["rows"]) == len(keys) == len(FILES) * len(SETTINGS)
    assert doc["meta"] == {"rate": 24000}
    assert set(doc["summary"]) == {"speech", "music", "all"}
    assert report.rows_from_json(doc) == rows


def test_markdown_has_a_table_per_category_and_overall() -> None:
    md = report.markdown(_rows(), note="scored at 24 kHz mono")
    assert md.startswith("scored at 24 kHz mono")
    order = [md.index(f"**{c}**") for c in ("speech", "music", "all")]
    assert order == sorted(order)
    for category in ("speech", "music", "all"):
        table = _table_rows(md, category)
        assert [(r[0], float(r[1])) for r in table] == SETTINGS
    assert "(2 files)" in md and "(1 file)" in md and "(3 files)" in md


def test_markdown_cells_are_means_over_files() -> None:
    md = report.markdown(_rows())
    header = md.split("**all**", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = dict(zip(columns, _table_rows(md, "all")[2], strict=True))  # neucomp 6 kbps
    assert float(row["actual kbps"]) == pytest.approx(6 * 1.2, abs=0.01)
    assert float(row["SI-SNR dB ↑"]) == pytest.approx(4.0, abs=0.05)
    # ViSQOL speech: mean of the speech files only (2.0 and 3.0).
    assert float(row["ViSQOL speech ↑"]) == pytest.approx(2.5)


def test_columns_without_values_are_left_out() -> None:
    md = report.markdown(_rows())
    music = md.split("**music**", 1)[1].split("**all**", 1)[0]
    assert "ViSQOL speech" not in music
    rows = [Row("x.wav", "other", "neucomp", 6.0, 1.0, 6.1, 10.0, 0.2)]
    md = report.markdown(rows)
    assert "ViSQOL" not in md
    assert "**all** (1 file)" in md and "**other**" not in md


def test_plot_writes_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "rq.png"
    report.plot(_rows(), path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speech_scores_are_means_over_speech_files_and_lsd_over_all() -> None:
    md = report.markdown(_rows())
    header = md.split("**all**", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:5] == ["codec", "nominal kbps", "actual kbps", "PESQ-wb ↑", "STOI ↑"]
    row = dict(zip(columns, _table_rows(md, "all")[2], strict=True))  # neucomp 6 kbps
    # PESQ: speech files only (1.6 and 2.6); LSD 0–4k: all three (20/6 + 0, 1, 2).
    assert float(row["PESQ-wb ↑"]) == pytest.approx(2.1, abs=0.01)
    assert float(row["LSD 0–4k ↓"]) == pytest.approx(20 / 6 + 1, abs=0.05)
    music = md.split("**music**", 1)[1].split("**all**", 1)[0]
    assert "PESQ" not in music and "STOI" not in music and "LSD 8–12k ↓" in music


def test_reference_rows_show_dnsmos_only_and_lead_the_table() -> None:
    rows = _rows()
    for name, category in FILES:
        if category == "speech":
            rows.append(
                Row(name, category, "reference", 0.0, 8.0, None, None, None, dnsmos_ovrl=3.0)
            )
            for r in rows:
                if r.file == name and r.codec != "reference":
                    r.dnsmos_ovrl = 1.0 + r.setting / 24
    md = report.markdown(rows)
    for category in ("speech", "all"):
        table = _table_rows(md, category)
        assert table[0][:3] == ["reference", "–", "–"]
        assert table[0][-1] == "3.00" and table[1][-1] == f"{1 + 1.5 / 24:.2f}"
    assert "DNSMOS" not in md.split("**music**", 1)[1].split("**all**", 1)[0]
    doc = json.loads(json.dumps(report.to_json(rows)))
    assert report.rows_from_json(doc) == rows


def test_old_json_without_the_new_metrics_still_loads() -> None:
    old = {
        "rows": [
            {k: v for k, v in r.items() if k not in ("pesq", "stoi", "lsd_0_4k")}
            for r in report.to_json(_rows())["rows"]
        ]
    }
    rows = report.rows_from_json(old)
    assert len(rows) == len(_rows()) and all(r.pesq is None for r in rows)


def test_plot_has_a_row_per_measured_metric(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    shapes = []
    real = plt.subplots

    def spy(*args, **kwargs):
        fig, axes = real(*args, **kwargs)
        shapes.append(axes.shape)
        return fig, axes

    monkeypatch.setattr(plt, "subplots", spy)
    report.plot(_rows(), tmp_path / "rq.png")
    # PESQ, LSD 0–4k and ViSQOL audio have values (no DNSMOS); speech, music, all.
    assert shapes == [(3, 3)]
    assert (tmp_path / "rq.png").stat().st_size > 10_000
