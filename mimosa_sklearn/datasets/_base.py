"""Loaders for the data sets bundled with the package (see the package docstring)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "load_swimmers",
    "load_synth_dev",
    "load_synth_dev_reference",
    "load_weight",
]

_SYNTH_SPLITS = ("train", "test_observed", "test_target")
_REFERENCES = ("magmaclustr", "mimosa_ml")


def _data_file(*parts: str) -> Any:
    """Traversable pointing at a bundled data file (works from wheels and zips)."""
    return resources.files(__package__).joinpath("data", *parts)


def _read_csv(*parts: str, **kwargs: Any) -> pd.DataFrame:
    """Read a bundled CSV (gzip inferred from the ``.gz`` suffix)."""
    compression = "gzip" if parts[-1].endswith(".gz") else None
    with _data_file(*parts).open("rb") as fh:
        return pd.read_csv(fh, compression=compression, **kwargs)


def load_synth_dev(
    split: Literal["train", "test_observed", "test_target"] = "train",
    return_clusters: bool = False,
) -> tuple[pd.DataFrame, pd.Series] | tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Load the small synthetic development data set.

    Sixty training tasks (10-20 points each) and thirty new tasks drawn from
    the MagmaClust generative model with three clusters; inputs lie on a
    0.05-step grid over [0, 10]. The new tasks are split in time: points with
    ``Input <= 6`` are observed, points with ``Input > 6`` are to be forecast.

    Parameters
    ----------
    split : {"train", "test_observed", "test_target"}, default="train"
        Which part to load: the training tasks, the observed part of the new
        tasks, or the part of the new tasks to forecast.
    return_clusters : bool, default=False
        Also return the true cluster of every task of the split.

    Returns
    -------
    X : DataFrame
        Columns ``"ID"`` (task id, str) and ``"Input"`` (float).
    y : Series
        ``"Output"`` (float), aligned with ``X``.
    clusters : Series
        Only when ``return_clusters``: true cluster (int, ``0 .. 2``) named
        ``"Cluster"``, indexed by task ID, for the tasks of the split in
        first-seen order.

    Examples
    --------
    >>> from mimosa_sklearn.datasets import load_synth_dev
    >>> X, y = load_synth_dev()
    >>> X.shape, X["ID"].nunique()
    ((921, 2), 60)
    """
    if split not in _SYNTH_SPLITS:
        raise ValueError(f"split must be one of {_SYNTH_SPLITS}, got {split!r}")
    df = _read_csv("synth_dev", f"{split}.csv", dtype={"ID": str})
    X = pd.DataFrame(
        {"ID": df["ID"], "Input": df["Input"].astype(np.float64)},
    )
    y = df["Output"].astype(np.float64).rename("Output")
    if not return_clusters:
        return X, y
    table = _read_csv("synth_dev", "clusters.csv", dtype={"ID": str})
    table = table.set_index(table["ID"])["Cluster"].astype(np.int64)
    ids = pd.unique(X["ID"].to_numpy())
    clusters = table.reindex(ids).rename("Cluster")
    clusters.index.name = "ID"
    return X, y, clusters


def load_synth_dev_reference(name: Literal["magmaclustr", "mimosa_ml"]) -> dict[str, Any]:
    """Load reference results obtained by other implementations on synth_dev.

    Parameters
    ----------
    name : {"magmaclustr", "mimosa_ml"}
        ``"magmaclustr"``: the R package MagmaClustR 1.2.1 (fitted
        hyperparameters, mixture weights, ELBO, forecast metrics, timings).
        ``"mimosa_ml"``: the Python package mimosa-ml 0.5.0a0 (metrics and
        timings).

    Returns
    -------
    dict
        The parsed JSON document; its ``"protocol"`` entry describes how the
        numbers were obtained.
    """
    if name not in _REFERENCES:
        raise ValueError(f"name must be one of {_REFERENCES}, got {name!r}")
    with _data_file("synth_dev", f"reference_{name}.json").open("r", encoding="utf-8") as fh:
        return json.load(fh)


def load_weight(
    return_sex: bool = False,
) -> tuple[pd.DataFrame, pd.Series] | tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Load the children's weight growth data set (GUSTO cohort, Singapore).

    342 children weighed 6 to 11 times between birth and 6 years, 3629 rows.
    Ages lie on the common set {0, 3, 6, 9, 12, 18, 24, 36, 48, 60, 72} months.

    Parameters
    ----------
    return_sex : bool, default=False
        Also return the sex of every child.

    Returns
    -------
    X : DataFrame
        Columns ``"ID"`` (child id, str) and ``"age_months"`` (age in months, float).
    y : Series
        ``"weight_kg"``: weight in kilograms.
    sex : Series
        Only when ``return_sex``: ``"Female"`` or ``"Male"``, named ``"sex"``,
        indexed by child ID in first-seen order.
    """
    df = _read_csv("real", "weight.csv", dtype={"ID": str, "sex": str})
    # The file keeps MagmaClustR's generic column names; the loader names the units.
    X = pd.DataFrame({"ID": df["ID"], "age_months": df["Input"].astype(np.float64)})
    y = df["Output"].astype(np.float64).rename("weight_kg")
    if not return_sex:
        return X, y
    first = ~X["ID"].duplicated()
    sex = pd.Series(
        df.loc[first, "sex"].to_numpy(),
        index=pd.Index(X.loc[first, "ID"].to_numpy(), name="ID"),
        name="sex",
    )
    return X, y, sex


def load_swimmers(gender: Literal[1, 2] | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Load French swimmers' 100 m freestyle performances (2002-2016).

    3456 swimmers with 16 to 61 races each (76,832 rows), at irregular ages
    between 10 and 20 years: a realistic test of scale with irregular inputs.

    Parameters
    ----------
    gender : {1, 2} or None, default=None
        Keep only one gender (1 has the faster mean time, most likely men);
        None keeps everybody.

    Returns
    -------
    X : DataFrame
        Columns ``"ID"`` (swimmer id, str) and ``"age_years"`` (age in years, float).
    y : Series
        ``"time_s"``: 100 m race time in seconds.
    """
    if gender not in (None, 1, 2):
        raise ValueError(f"gender must be None, 1 or 2, got {gender!r}")
    df = _read_csv("real", "swimmers.csv.gz", dtype={"ID": str})
    if gender is not None:
        df = df.loc[df["Gender"] == gender].reset_index(drop=True)
    X = pd.DataFrame({"ID": df["ID"], "age_years": df["Age"].astype(np.float64)})
    y = df["Performance"].astype(np.float64).rename("time_s")
    return X, y
