"""Accuracy benchmark: forecasting new tasks from their first points.

Run ``python benchmarks/accuracy.py [--data-dir DIR] [--dataset synth_dev|weight|swimmers]
[--quick]``.

Every method is trained on the training tasks; each test task is then conditioned on its
observed points and its target points are forecast. One table is printed (and written to
``benchmarks/results/accuracy_<dataset>.md``) with one row per method:

(a) a per-task GP: scikit-learn ``GaussianProcessRegressor(ConstantKernel * RBF +
    WhiteKernel, normalize_y=True)`` fitted on each test task's observed points alone;
(b) Magma (MagmaClust with K = 1);
(c) MagmaClust with the true K (synthetic data) or ``--n-clusters`` (real data);
(d) MagmaClust with K chosen by VBIC (:func:`mimosa_sklearn.selection.select_n_clusters`
    over ``1..--max-k``);
(e) on synth_dev, the reference results of MagmaClustR and mimosa-ml shipped with the data.

Columns: RMSE, mean NLPD (Gaussian with the predictive mean and variance, noise
included), coverage of the 95% intervals, ARI of the training clusters against the true
ones (when known), and wall-clock fit and predict (condition + predict) seconds. Our fit
times include JIT compilation (the first fit of each shape in the process).

Data sets and splits
--------------------
synth_dev, or ``--data-dir DIR`` in the same format: ``train.csv``, ``test_observed.csv``,
``test_target.csv`` (columns ``ID, Input, Output``) and optionally ``clusters.csv`` (``ID,
Cluster``) and ``reference_magmaclustr.json`` / ``reference_mimosa_ml.json``. The split is
the one in the files.

weight, swimmers: a deterministic task-level split. The task ids (in order of first
appearance) are permuted with ``numpy.random.default_rng(--seed)``; the first 20% are test
tasks, the rest training tasks. A test task is observed up to a cutoff input and forecast
after it: weight ``age_months <= 12`` observed, ``age_months > 12`` targets; swimmers
``age_years <= 15`` observed, ``age_years > 15`` targets. Test tasks with fewer than 2 observed points or no
target are dropped. ``--quick`` first keeps 300 swimmers (the first 300 ids of the same
permutation, then split 80/20 as above); the weight data are small and always used in full.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.metrics import adjusted_rand_score

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn.datasets import (
    load_swimmers,
    load_synth_dev,
    load_synth_dev_reference,
    load_weight,
)
from mimosa_sklearn.metrics import coverage, nlpd
from mimosa_sklearn.selection import select_n_clusters

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Acceptance on synth_dev (the better reference is MagmaClustR): MagmaClust with the
# true K must match it within 2% in RMSE and 0.02 in NLPD, with calibrated intervals.
REFERENCE_RMSE = 1.176
REFERENCE_NLPD = 1.534
RMSE_SLACK = 1.02
NLPD_SLACK = 0.02
COVERAGE_RANGE = (0.90, 0.99)

SPLITS = {"weight": ("age_months", 12.0), "swimmers": ("age_years", 15.0)}
TEST_FRACTION = 0.2
QUICK_SWIMMERS = 300


@dataclass
class Split:
    """Training tasks, the observed and target parts of the test tasks, and labels."""

    name: str
    description: str
    X_train: pd.DataFrame
    y_train: pd.Series
    X_obs: pd.DataFrame
    y_obs: pd.Series
    X_target: pd.DataFrame
    y_target: pd.Series
    clusters: pd.Series | None = None  # true cluster of the training tasks, by id
    references: dict = field(default_factory=dict)

    @property
    def input_col(self) -> str:
        return [c for c in self.X_train.columns if c != "ID"][0]


# ---------------------------------------------------------------------------- data


def _read_dir(data_dir: Path) -> Split:
    def read(name: str) -> tuple[pd.DataFrame, pd.Series]:
        df = pd.read_csv(data_dir / name, dtype={"ID": str})
        X = pd.DataFrame({"ID": df["ID"], "Input": df["Input"].astype(np.float64)})
        return X, df["Output"].astype(np.float64).rename("Output")

    X_train, y_train = read("train.csv")
    X_obs, y_obs = read("test_observed.csv")
    X_target, y_target = read("test_target.csv")
    clusters = None
    if (data_dir / "clusters.csv").exists():
        table = pd.read_csv(data_dir / "clusters.csv", dtype={"ID": str})
        clusters = table.set_index("ID")["Cluster"]
    references = {}
    for key, label in (("magmaclustr", "MagmaClustR"), ("mimosa_ml", "mimosa-ml")):
        path = data_dir / f"reference_{key}.json"
        if path.exists():
            references[label] = json.loads(path.read_text(encoding="utf-8"))
    return Split(
        name=data_dir.name,
        description=f"files in {data_dir}",
        X_train=X_train,
        y_train=y_train,
        X_obs=X_obs,
        y_obs=y_obs,
        X_target=X_target,
        y_target=y_target,
        clusters=clusters,
        references=references,
    )


def _synth_dev() -> Split:
    X_train, y_train, clusters = load_synth_dev("train", return_clusters=True)
    X_obs, y_obs = load_synth_dev("test_observed")
    X_target, y_target = load_synth_dev("test_target")
    return Split(
        name="synth_dev",
        description="bundled synth_dev: 60 training tasks; 30 new tasks observed at "
        "Input <= 6, forecast at Input > 6",
        X_train=X_train,
        y_train=y_train,
        X_obs=X_obs,
        y_obs=y_obs,
        X_target=X_target,
        y_target=y_target,
        clusters=clusters,
        references={
            "MagmaClustR": load_synth_dev_reference("magmaclustr"),
            "mimosa-ml": load_synth_dev_reference("mimosa_ml"),
        },
    )


def _task_split(name: str, X: pd.DataFrame, y: pd.Series, quick: bool, seed: int) -> Split:
    """Deterministic task-level split of a real data set (see the module docstring)."""
    col, cutoff = SPLITS[name]
    ids = pd.unique(X["ID"].to_numpy())
    perm = ids[np.random.default_rng(seed).permutation(ids.size)]
    note = ""
    if quick and name == "swimmers":
        perm = perm[:QUICK_SWIMMERS]
        keep = X["ID"].isin(perm).to_numpy()
        X, y = X.loc[keep].reset_index(drop=True), y.loc[keep].reset_index(drop=True)
        note = f" (--quick: {QUICK_SWIMMERS} swimmers drawn by the same permutation)"
    n_test = int(round(TEST_FRACTION * perm.size))
    test_ids = set(perm[:n_test])
    is_test = X["ID"].isin(test_ids).to_numpy()
    observed = is_test & (X[col] <= cutoff).to_numpy()
    target = is_test & (X[col] > cutoff).to_numpy()
    n_obs = X.loc[observed].groupby("ID").size()
    n_tgt = X.loc[target].groupby("ID").size()
    usable = set(n_obs.index[n_obs >= 2]) & set(n_tgt.index[n_tgt >= 1])
    in_use = X["ID"].isin(usable).to_numpy()
    observed, target = observed & in_use, target & in_use
    train = ~is_test
    description = (
        f"{name}{note}: task ids permuted with default_rng({seed}); "
        f"{perm.size - n_test} training tasks, {n_test} test tasks of which {len(usable)} "
        f"have >= 2 points with {col} <= {cutoff:g} (observed) and >= 1 after (targets)"
    )
    return Split(
        name=name,
        description=description,
        X_train=X.loc[train].reset_index(drop=True),
        y_train=y.loc[train].reset_index(drop=True),
        X_obs=X.loc[observed].reset_index(drop=True),
        y_obs=y.loc[observed].reset_index(drop=True),
        X_target=X.loc[target].reset_index(drop=True),
        y_target=y.loc[target].reset_index(drop=True),
    )


def load_split(dataset: str, data_dir: str | None, quick: bool, seed: int) -> Split:
    if data_dir is not None:
        return _read_dir(Path(data_dir))
    if dataset == "synth_dev":
        return _synth_dev()
    if dataset == "weight":
        X, y = load_weight()
        return _task_split("weight", X, y, quick, seed)
    X, y = load_swimmers()
    return _task_split("swimmers", X, y, quick, seed)


# ------------------------------------------------------------------------- methods


def _scores(split: Split, mean: np.ndarray, std: np.ndarray) -> dict:
    y = split.y_target.to_numpy()
    return {
        "RMSE": float(np.sqrt(np.mean((y - mean) ** 2))),
        "NLPD": nlpd(y, mean, std),
        "cov95": coverage(y, mean, std, level=0.95),
    }


def per_task_gp(split: Split, seed: int) -> dict:
    """(a) One scikit-learn GP per test task, fitted on its observed points only."""
    col = split.input_col
    x_train = split.X_train[col].to_numpy()
    scale = float(np.ptp(x_train)) / 4 or 1.0
    mean = np.empty(len(split.y_target))
    std = np.empty(len(split.y_target))
    fit_s = predict_s = 0.0
    obs_groups = split.X_obs.groupby("ID").indices
    for task, rows in split.X_target.groupby("ID").indices.items():
        obs = obs_groups[task]
        kernel = ConstantKernel(1.0) * RBF(length_scale=scale) + WhiteKernel(0.1)
        gp = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(split.X_obs[[col]].to_numpy()[obs], split.y_obs.to_numpy()[obs])
        fit_s += time.perf_counter() - start
        start = time.perf_counter()
        # The WhiteKernel is part of the kernel, so the std includes the noise.
        mean[rows], std[rows] = gp.predict(split.X_target[[col]].to_numpy()[rows], return_std=True)
        predict_s += time.perf_counter() - start
    return {
        **_scores(split, mean, np.maximum(std, 1e-12)),
        "ARI": None,
        "fit s": fit_s,
        "predict s": predict_s,
    }


def _forecast(model: MagmaClusterRegressor, split: Split) -> tuple[np.ndarray, np.ndarray, float]:
    start = time.perf_counter()
    model.condition(split.X_obs, split.y_obs)
    mean, std = model.predict(split.X_target, return_std=True)
    return np.asarray(mean), np.asarray(std), time.perf_counter() - start


def _ari(model: MagmaClusterRegressor, split: Split) -> float | None:
    if split.clusters is None:
        return None
    truth = split.clusters.reindex(model.task_ids_).to_numpy()
    return float(adjusted_rand_score(truth, model.labels_))


def magma(split: Split, n_clusters: int, seed: int, verbose: int = 0, grid=None) -> dict:
    """(b)/(c) MagmaClust with a fixed number of clusters (default settings)."""
    model = MagmaClusterRegressor(
        n_clusters=n_clusters, random_state=seed, verbose=verbose, grid=grid
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(split.X_train, split.y_train)
    fit_s = time.perf_counter() - start
    mean, std, predict_s = _forecast(model, split)
    return {
        **_scores(split, mean, std),
        "ARI": _ari(model, split),
        "fit s": fit_s,
        "predict s": predict_s,
        "_model": model,
    }


def magma_vbic(split: Split, max_k: int, seed: int, verbose: int = 0, grid=None) -> dict:
    """(d) MagmaClust with K chosen by VBIC over 1..max_k."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table, model = select_n_clusters(
            MagmaClusterRegressor(random_state=seed, verbose=verbose, grid=grid),
            split.X_train,
            split.y_train,
            candidates=range(1, max_k + 1),
        )
    fit_s = time.perf_counter() - start
    mean, std, predict_s = _forecast(model, split)
    return {
        **_scores(split, mean, std),
        "ARI": _ari(model, split),
        "fit s": fit_s,
        "predict s": predict_s,
        "_model": model,
        "_table": table,
    }


def reference_rows(references: dict) -> list[dict]:
    rows = []
    ref = references.get("MagmaClustR")
    if ref:
        rows.append(
            {
                "method": f"MagmaClustR {ref.get('package_version', '')} (reference)",
                "K": ref.get("K"),
                "RMSE": ref.get("rmse"),
                "NLPD": ref.get("nlpd"),
                "cov95": ref.get("coverage95"),
                "ARI": ref.get("ari"),
                "fit s": ref.get("fit_seconds"),
                "predict s": ref.get("predict_seconds"),
            }
        )
    ref = references.get("mimosa-ml")
    if ref:
        for key, label in (("basic_50_iterations", "50 it"), ("early_stopping", "early stop")):
            run = ref.get(key)
            if run:
                rows.append(
                    {
                        "method": f"mimosa-ml {ref.get('package_version', '')} "
                        f"(reference, {label})",
                        "K": ref.get("K"),
                        "RMSE": run.get("rmse"),
                        "NLPD": run.get("nlpd"),
                        "cov95": run.get("coverage95"),
                        "ARI": run.get("ari_train"),
                        "fit s": run.get("fit_seconds_cold"),
                        "predict s": None,
                    }
                )
    return rows


# ------------------------------------------------------------------------- output

COLUMNS = ["method", "K", "RMSE", "NLPD", "cov95", "ARI", "fit s", "predict s"]
FORMATS = {
    "RMSE": ".3f",
    "NLPD": ".3f",
    "cov95": ".3f",
    "ARI": ".3f",
    "fit s": ".1f",
    "predict s": ".2f",
    "elbo": ".2f",
    "penalty": ".2f",
    "vbic": ".2f",
}


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if column in FORMATS:
        return format(float(value), FORMATS[column])
    return str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(columns)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(r) for r in cells)])


def acceptance(row: dict) -> list[tuple[str, bool]]:
    """The synth_dev acceptance checks for MagmaClust with the true K."""
    lo, hi = COVERAGE_RANGE
    return [
        (
            f"RMSE {row['RMSE']:.4f} <= {REFERENCE_RMSE} * {RMSE_SLACK} = "
            f"{REFERENCE_RMSE * RMSE_SLACK:.4f}",
            row["RMSE"] <= REFERENCE_RMSE * RMSE_SLACK,
        ),
        (
            f"NLPD {row['NLPD']:.4f} <= {REFERENCE_NLPD} + {NLPD_SLACK} = "
            f"{REFERENCE_NLPD + NLPD_SLACK:.4f}",
            row["NLPD"] <= REFERENCE_NLPD + NLPD_SLACK,
        ),
        (f"coverage {row['cov95']:.4f} in [{lo}, {hi}]", lo <= row["cov95"] <= hi),
    ]


def _machine() -> str:
    import jax

    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"JAX {jax.__version__} ({jax.default_backend()}); 1-min load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="directory in synth_dev format (overrides --dataset)")
    parser.add_argument(
        "--dataset", choices=["synth_dev", "weight", "swimmers"], default="synth_dev"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"swimmers: subsample {QUICK_SWIMMERS} swimmers"
    )
    parser.add_argument(
        "--n-clusters",
        type=int,
        default=3,
        help="K of row (c) when the true K is unknown (real data; default 3)",
    )
    parser.add_argument("--max-k", type=int, default=6, help="VBIC candidates 1..MAX_K")
    parser.add_argument("--seed", type=int, default=0, help="split permutation and random_state")
    parser.add_argument("--output", help="markdown file (default benchmarks/results/...)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the synth_dev acceptance fails"
    )
    parser.add_argument("--verbose", action="store_true", help="EM progress bars (stderr)")
    parser.add_argument(
        "--grid",
        type=int,
        default=None,
        help="approximate grid with this many inducing inputs (default: exact grid; "
        "swimmers' 994 distinct ages make the exact grid slow, use e.g. 100)",
    )
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    split = load_split(args.dataset, args.data_dir, args.quick, args.seed)
    true_k = None if split.clusters is None else int(split.clusters.nunique())
    k_fixed = true_k if true_k is not None else args.n_clusters
    k_label = "true K" if true_k is not None else "fixed K"
    n_train = split.X_train["ID"].nunique()
    n_test = split.X_target["ID"].nunique()
    print(f"# Accuracy benchmark: {split.name}", flush=True)
    print(split.description, flush=True)
    if args.grid is not None:
        print(f"MagmaClust on an approximate grid of {args.grid} inducing inputs", flush=True)
    print(
        f"{n_train} training tasks ({len(split.y_train)} points), {n_test} test tasks "
        f"({len(split.y_obs)} observed, {len(split.y_target)} target points)",
        flush=True,
    )

    rows = []
    print("(a) per-task GP ...", flush=True)
    rows.append({"method": "per-task GP (sklearn)", "K": None, **per_task_gp(split, args.seed)})
    print("(b) Magma K=1 ...", flush=True)
    magma_1 = magma(split, 1, args.seed, args.verbose, args.grid)
    rows.append({"method": "Magma (K=1)", "K": 1, **magma_1})
    print(f"(c) MagmaClust {k_label}={k_fixed} ...", flush=True)
    row_c = {
        "method": f"MagmaClust ({k_label})",
        "K": k_fixed,
        **magma(split, k_fixed, args.seed, args.verbose, args.grid),
    }
    rows.append(row_c)
    print(f"(d) MagmaClust, K by VBIC over 1..{args.max_k} ...", flush=True)
    row_d = magma_vbic(split, args.max_k, args.seed, args.verbose, args.grid)
    rows.append(
        {
            "method": f"MagmaClust (VBIC over 1..{args.max_k})",
            "K": row_d["_model"].n_clusters,
            **row_d,
        }
    )
    rows.extend(reference_rows(split.references))
    total = time.perf_counter() - t_start

    table = markdown_table(rows, COLUMNS)
    vbic = row_d["_table"].reset_index()
    vbic_rows = vbic.to_dict("records")
    vbic_md = markdown_table(
        vbic_rows, ["n_clusters", "elbo", "n_parameters", "penalty", "vbic", "converged"]
    )
    lines = [
        f"# Accuracy benchmark: {split.name}",
        "",
        f"Data: {split.description}.",
        f"{n_train} training tasks ({len(split.y_train)} points); {n_test} test tasks with "
        f"{len(split.y_obs)} observed and {len(split.y_target)} target points.",
        "",
        # snippet section: README (scripts/sync_readme.py) and docs/benchmarks.md copy it
        "<!-- --8<-- [start:table] -->",
        table,
        "<!-- --8<-- [end:table] -->",
        "",
        "RMSE, NLPD (mean Gaussian negative log predictive density, noise included) and "
        "cov95 (fraction of targets inside the 95% interval) over all target points. ARI: "
        "training clusters against the true ones. fit s / predict s: wall clock; our fit "
        "times include JIT compilation, the VBIC row sums one fit per candidate; reference "
        "timings come from other machines (see their protocols).",
        "",
        f"VBIC (ELBO of the standardised outputs; T = {n_train}):",
        "",
        vbic_md,
        "",
    ]
    checks = []
    if split.name == "synth_dev" and args.data_dir is None:
        checks = acceptance(row_c)
        lines += ["Acceptance (MagmaClust with the true K vs MagmaClustR):", ""]
        lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
        lines.append("")
    lines += [
        f"Machine: {_machine()}. Total benchmark time: {total:.0f} s.",
        f"Command: `{' '.join(['python benchmarks/accuracy.py', *(argv or sys.argv[1:])])}`",
        "",
    ]
    text = "\n".join(lines)
    print()
    print(text)

    if args.output:
        out = Path(args.output)
    else:
        name = args.dataset if args.data_dir is None else split.name
        suffix = "_quick" if args.quick and split.name == "swimmers" else ""
        out = RESULTS_DIR / f"accuracy_{name}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")
    if args.check and not all(ok for _, ok in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
