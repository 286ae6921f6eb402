"""benchmarks/plots.py: each figure drawn from the committed results JSON (a copy in tmp_path)
is a PNG of the agreed size, and results without the figure's data give "skipped: why"."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from benchmarks import plots, report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = [
    (results_name, function)
    for results_name, functions in plots.FIGURES.items()
    for function in functions
]


def png_size(png: Path) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk."""
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{png.name} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def copy_results(results_name: str, into: Path) -> Path:
    source = report.RESULTS_DIR / f"{results_name}.json"
    if not source.exists():
        pytest.skip(f"benchmarks/results/{results_name}.json is not in the repository")
    return Path(shutil.copy(source, into / source.name))


@pytest.mark.parametrize(
    ("results_name", "function"), FIGURES, ids=[f.__name__ for _, f in FIGURES]
)
def test_each_figure_is_drawn_from_the_committed_results(
    results_name: str, function: plots.FigureFunction, tmp_path: Path
) -> None:
    json_path = copy_results(results_name, tmp_path)
    png = function(json_path)
    assert png.parent == tmp_path and png.suffix == ".png"
    width, height = png_size(png)
    assert width == plots.FIGURE_SIZE[0] * plots.DPI and height >= 400
    assert png.stat().st_size > 20_000  # drawn, not an empty canvas


def test_results_without_the_figures_data_are_skipped_with_the_reason(tmp_path: Path) -> None:
    # checkpointer.json as a run from before the peers' bytes per turn were measured wrote it
    data = json.loads((report.RESULTS_DIR / "checkpointer.json").read_text())
    data.pop("growth_by_saver", None)
    json_path = tmp_path / "checkpointer.json"
    json_path.write_text(json.dumps(data))
    outcome = plots.draw(plots.checkpointer_bytes_figure, json_path)
    assert outcome.startswith("skipped checkpointer_bytes: ")
    assert "no growth_by_saver" in outcome
    assert not (tmp_path / "checkpointer_bytes.png").exists()
    # the other figure of the same results still draws
    assert plots.draw(plots.checkpointer_throughput_figure, json_path).startswith("wrote ")


def test_the_command_redraws_what_exists_and_names_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_results("asgi", tmp_path)
    (tmp_path / "store.json").write_text(json.dumps({"date": "2026-01-01 00:00 UTC"}))
    assert plots.main(["--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == sum(len(functions) for functions in plots.FIGURES.values())
    assert f"wrote {tmp_path / 'asgi.png'} (run " in "\n".join(lines)
    assert "skipped store: store.json has no sizes" in lines
    assert "skipped checkpointer_bytes: no checkpointer.json (its benchmark has not been run)" in (
        lines
    )


def test_a_benchmark_keeps_its_results_when_its_figure_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    (tmp_path / "asgi.json").write_text(json.dumps({"date": "x", "best": {"a": {"rps": "?"}}}))
    plots.write_figures("asgi")  # a figure that cannot be drawn is reported, not raised
    assert (tmp_path / "asgi.json").exists()
