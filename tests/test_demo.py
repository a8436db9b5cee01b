"""End-to-end test of the quick-start demo (python -m mimosa_sklearn.demo)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from mimosa_sklearn import demo  # noqa: E402


@pytest.mark.slow
def test_demo_synth_dev(tmp_path, capsys):
    assert demo.main(["--out", tmp_path]) == 0
    printed = capsys.readouterr().out
    figure = tmp_path / "forecast_synth_dev.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert str(figure) in printed
    for header in ("RMSE", "NLPD", "coverage95", "ARI", "fit_s", "predict_s"):
        assert header in printed
    assert "GP per task (sklearn)" in printed and "MagmaClust (K=3)" in printed


def test_demo_rejects_unknown_dataset(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--dataset", "nope", "--out", tmp_path])
    with pytest.raises(ValueError, match="dataset"):
        demo.run_demo("nope", tmp_path)


def test_figure_is_named_after_the_data_set():
    assert demo.default_output("weight") == Path("outputs") / "forecast_weight.png"
    assert demo.default_output("synth_dev", "out") == Path("out") / "forecast_synth_dev.png"


def test_output_option_reaches_run_demo(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_run_demo(dataset, out, output):
        calls.append((dataset, out, output))
        path = demo.default_output(dataset, out) if output is None else Path(output)
        return {"title": "t", "table": pd.DataFrame(), "figure": path, "model": None}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    monkeypatch.setattr(demo, "_format", lambda table: "")
    target = tmp_path / "figures" / "mine.png"
    assert demo.main(["--dataset", "weight", "--output", target]) == 0
    assert demo.main(["--dataset", "weight"]) == 0
    assert calls == [("weight", "outputs", str(target)), ("weight", "outputs", None)]
    printed = capsys.readouterr().out
    assert f"Figure saved to {target}" in printed
    assert f"Figure saved to {Path('outputs') / 'forecast_weight.png'}" in printed
