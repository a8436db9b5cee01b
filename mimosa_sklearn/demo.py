"""Quick-start demo: forecast new tasks with MagmaClust and with one GP per task.

Run ``python -m mimosa_sklearn.demo`` (or ``bash scripts/quickstart.sh``). It fits
:class:`~mimosa_sklearn.MagmaClusterRegressor` on training tasks of a bundled data set,
conditions every held-out task on its first points, forecasts the rest, and prints a
table comparing it with scikit-learn's :class:`~sklearn.gaussian_process.GaussianProcessRegressor`
fitted on each held-out task's own points. A figure of the fitted mean processes and
a few forecasts is saved to ``outputs/forecast_<dataset>.png`` (``--output PATH`` to
choose the file), so that the data sets do not overwrite each other's figure.

Data sets:

``synth_dev`` (default)
    60 synthetic training tasks from 3 clusters; 30 new tasks observed for
    ``Input <= 6`` and forecast for ``Input > 6``. The table adds the adjusted Rand
    index (ARI) of the training clusters against the true ones.
``weight``
    Children's weight (``weight_kg``) against age (``age_months``). Children are split
    by id into 80% training and 20% held out (deterministically); each held-out child is
    observed up to 12 months and forecast from 18 months to 6 years.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Import the estimator first: it sets up JAX's CPU backend safely (see mimosa_sklearn.core.runtime).
from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import load_synth_dev, load_weight
from mimosa_sklearn.metrics import coverage, nlpd

__all__ = ["default_output", "main", "run_demo"]

DATASETS = ("synth_dev", "weight")
N_CLUSTERS = 3
RANDOM_STATE = 0
N_PANELS = 3  # forecast panels in the figure
WEIGHT_OBSERVED_UNTIL = 12.0  # months
WEIGHT_TEST_FRACTION = 0.2


# ---------------------------------------------------------------------- data


def _load_synth_dev() -> dict[str, Any]:
    X, y, clusters = load_synth_dev(return_clusters=True)
    X_obs, y_obs = load_synth_dev("test_observed")
    X_new, y_new = load_synth_dev("test_target")
    return {
        "title": "synth_dev: 30 new tasks observed for Input <= 6, forecast for Input > 6",
        "train": (X, y),
        "observed": (X_obs, y_obs),
        "target": (X_new, y_new),
        "true_clusters": clusters,
    }


def _load_weight() -> dict[str, Any]:
    X, y = load_weight()
    ids = np.sort(X["ID"].unique())
    rng = np.random.default_rng(RANDOM_STATE)
    n_test = int(round(WEIGHT_TEST_FRACTION * ids.size))
    test_ids = set(rng.permutation(ids)[:n_test].tolist())
    is_test = X["ID"].isin(test_ids).to_numpy()
    early = (X["age_months"] <= WEIGHT_OBSERVED_UNTIL).to_numpy()
    obs, tgt = is_test & early, is_test & ~early
    # Keep held-out children with something to condition on and something to forecast.
    both = np.intersect1d(X.loc[obs, "ID"].unique(), X.loc[tgt, "ID"].unique())
    obs &= X["ID"].isin(both).to_numpy()
    tgt &= X["ID"].isin(both).to_numpy()
    n_train = ids.size - n_test
    return {
        "title": (
            f"weight: {both.size} held-out children (of {ids.size}; {n_train} for training) "
            f"observed up to {WEIGHT_OBSERVED_UNTIL:g} months, forecast to 72 months"
        ),
        "train": (X[~is_test].reset_index(drop=True), y[~is_test].reset_index(drop=True)),
        "observed": (X[obs].reset_index(drop=True), y[obs].reset_index(drop=True)),
        "target": (X[tgt].reset_index(drop=True), y[tgt].reset_index(drop=True)),
        "true_clusters": None,
    }


# ---------------------------------------------------------------------- methods


def _per_task_gp(
    X_obs: pd.DataFrame, y_obs: pd.Series, X_new: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """One sklearn GP per task, fitted on that task's observed points alone.

    Returns the predictive mean and std at ``X_new`` (rows in order) and the total fit
    and predict seconds.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    mean = np.full(len(X_new), np.nan)
    std = np.full(len(X_new), np.nan)
    inputs = [c for c in X_obs.columns if c != "ID"]
    fit_s = predict_s = 0.0
    for task, rows in X_new.groupby("ID", sort=False).groups.items():
        seen = (X_obs["ID"] == task).to_numpy()
        kernel = ConstantKernel(1.0) * RBF(length_scale=1.0) + WhiteKernel(noise_level=0.1)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=RANDOM_STATE)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X_obs.loc[seen, inputs].to_numpy(), y_obs[seen].to_numpy())
        fit_s += time.perf_counter() - start
        start = time.perf_counter()
        pos = X_new.index.get_indexer(rows)
        mean[pos], std[pos] = gp.predict(X_new.loc[rows, inputs].to_numpy(), return_std=True)
        predict_s += time.perf_counter() - start
    return mean, std, fit_s, predict_s


def _magmaclust(
    data: dict[str, Any],
) -> tuple[MagmaClusterRegressor, np.ndarray, np.ndarray, float, float]:
    """Fit on the training tasks, condition the new ones, forecast their targets."""
    X, y = data["train"]
    model = MagmaClusterRegressor(n_clusters=N_CLUSTERS, random_state=RANDOM_STATE)
    start = time.perf_counter()
    model.fit(X, y)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    model.condition(*data["observed"])
    mean, std = model.predict(data["target"][0], return_std=True)
    predict_s = time.perf_counter() - start
    return model, np.asarray(mean), np.asarray(std), fit_s, predict_s


def _row(name: str, y: np.ndarray, mean: np.ndarray, std: np.ndarray, **extra: Any) -> dict:
    return {
        "method": name,
        "RMSE": float(np.sqrt(np.mean((y - mean) ** 2))),
        "NLPD": nlpd(y, mean, std),
        "coverage95": coverage(y, mean, std, level=0.95),
        **extra,
    }


# ---------------------------------------------------------------------- figure


def _figure(model: MagmaClusterRegressor, data: dict[str, Any], path: Path) -> Path:
    # A bare Figure (not pyplot) renders with Agg and never touches the user's backend.
    from matplotlib.figure import Figure

    from mimosa_sklearn.plotting import plot_forecast, plot_mean_processes

    X_obs, y_obs = data["observed"]
    X_new, y_new = data["target"]
    fig = Figure(figsize=(13, 9), layout="constrained")
    axes = fig.subplots(2, 2)
    plot_mean_processes(model, *data["train"], ax=axes[0, 0])
    tasks = pd.unique(X_obs["ID"])[:N_PANELS]
    # The plots label their axes from the data's columns (age_months -> "age (months)").
    for ax, task in zip(axes.flat[1:], tasks, strict=False):
        plot_forecast(model, task, X_obs, y_obs, X_new, y_true=y_new, ax=ax)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------- entry points


def default_output(dataset: str, out: str | Path = "outputs") -> Path:
    """Where the figure of ``dataset`` goes by default: ``<out>/forecast_<dataset>.png``.

    Parameters
    ----------
    dataset : str
        Name of the data set.
    out : str or Path, default="outputs"
        Folder of the figure.

    Returns
    -------
    path : Path
        The figure's path.
    """
    return Path(out) / f"forecast_{dataset}.png"


def run_demo(
    dataset: str = "synth_dev", out: str | Path = "outputs", output: str | Path | None = None
) -> dict[str, Any]:
    """Run the demo and return its results (also what :func:`main` prints).

    Parameters
    ----------
    dataset : {"synth_dev", "weight"}, default="synth_dev"
        Bundled data set to use.
    out : str or Path, default="outputs"
        Folder of the figure ``forecast_<dataset>.png`` (created if needed).
    output : str or Path or None, default=None
        Path of the figure, instead of the file in ``out`` (its folder is created
        if needed).

    Returns
    -------
    results : dict
        ``"title"`` (str), ``"table"`` (DataFrame: one row per method with RMSE,
        NLPD, coverage95, ARI, fit_s, predict_s), ``"figure"`` (Path of the PNG) and
        ``"model"`` (the fitted estimator).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    data = _load_synth_dev() if dataset == "synth_dev" else _load_weight()
    y_new = data["target"][1].to_numpy(dtype=np.float64)

    gp_mean, gp_std, gp_fit, gp_pred = _per_task_gp(*data["observed"], data["target"][0])
    model, mc_mean, mc_std, mc_fit, mc_pred = _magmaclust(data)

    ari = np.nan
    if data["true_clusters"] is not None:
        from sklearn.metrics import adjusted_rand_score

        truth = data["true_clusters"].reindex(model.task_ids_).to_numpy()
        ari = adjusted_rand_score(truth, model.labels_)

    table = pd.DataFrame(
        [
            _row(
                "GP per task (sklearn)",
                y_new,
                gp_mean,
                gp_std,
                ARI=np.nan,
                fit_s=gp_fit,
                predict_s=gp_pred,
            ),
            _row(
                f"MagmaClust (K={N_CLUSTERS})",
                y_new,
                mc_mean,
                mc_std,
                ARI=ari,
                fit_s=mc_fit,
                predict_s=mc_pred,
            ),
        ]
    ).set_index("method")
    path = default_output(dataset, out) if output is None else Path(output)
    figure = _figure(model, data, path)
    return {"title": data["title"], "table": table, "figure": figure, "model": model}


def _format(table: pd.DataFrame) -> str:
    formats = {
        "RMSE": "{:.3f}".format,
        "NLPD": "{:.3f}".format,
        "coverage95": "{:.1%}".format,
        "ARI": "{:.3f}".format,
        "fit_s": "{:.1f}".format,
        "predict_s": "{:.1f}".format,
    }
    return table.to_string(formatters=formats, na_rep="-")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m mimosa_sklearn.demo [--dataset] [--out] [--output]``.

    Parameters
    ----------
    argv : sequence of str, default=None
        Arguments (default: the command line's).

    Returns
    -------
    status : int
        0 on success.
    """
    parser = argparse.ArgumentParser(
        prog="python -m mimosa_sklearn.demo",
        description="Fit MagmaClust on bundled data, compare its forecasts of held-out "
        "tasks with one GP per task, and save a figure.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="synth_dev")
    parser.add_argument(
        "--out", default="outputs", help="folder of the figure forecast_<dataset>.png"
    )
    parser.add_argument(
        "--output", default=None, metavar="PATH", help="path of the figure (overrides --out)"
    )
    args = parser.parse_args(None if argv is None else [str(a) for a in argv])

    print(f"==> {args.dataset}: fitting (the first fit compiles JAX code) ...", flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        results = run_demo(args.dataset, args.out, args.output)
    print()
    print(results["title"])
    print(_format(results["table"]))
    print()
    print("RMSE/NLPD: lower is better; coverage95: share of targets inside the 95% band.")
    if args.dataset == "synth_dev":
        print("ARI: adjusted Rand index of the training clusters against the true ones.")
    print(f"Figure saved to {results['figure']}")
    print(f"Total time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through main()
    raise SystemExit(main())
