"""The progress bar of a verbose fit (``mimosa_sklearn._progress``)."""

from __future__ import annotations

from mimosa_sklearn._progress import Progress


def test_silent_without_verbose():
    with Progress(0, 5) as callback:
        assert callback is None


def test_the_bar_counts_iterations_and_shows_the_elbo(capsys):
    with Progress(1, 4) as callback:
        callback(1, -12.5)
        callback(2, 3.25)
    err = capsys.readouterr().err
    assert "MagmaClust EM" in err and "2/4" in err and "ELBO=3.25" in err
