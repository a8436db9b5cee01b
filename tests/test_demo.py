"""End-to-end test of the quick-start demo (python -m mimosa_sklearn.demo)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from mimosa_sklearn import demo  # noqa: E402


@pytest.mark.slow
def test_demo_synth_dev(tmp_path, capsys):
    assert demo.main(["--out", tmp_path]) == 0
    printed = capsys.readouterr().out
    figure = tmp_path / "forecast.png"
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
