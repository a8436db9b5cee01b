"""Date and duration input columns (mimosa_sklearn._dates through the estimator).

Dates are read as days since the earliest date at fit, durations as days: a model fitted
on dates must give exactly what it gives on those numbers, in every method, and refuse
another kind of values in the column.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from mimosa_sklearn import MagmaClusterRegressor
from mimosa_sklearn._dates import InputScale
from mimosa_sklearn.datasets import load_synth_dev

START = pd.Timestamp("2024-03-01 06:00")
DAYS = 10.0  # one unit of synth_dev's input (0..10) is ten days
ESTIMATOR = "mimosa_sklearn._estimator.MagmaClusterRegressor"
# Forecasts of tasks never seen are what these tests compare.
pytestmark = pytest.mark.filterwarnings("ignore::mimosa_sklearn.UnseenTaskWarning")


def _fit(X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=4
        return MagmaClusterRegressor(2, max_iter=4, random_state=0).fit(X, y)


def _dates(X, tz=None):
    dates = START + pd.to_timedelta(X["Input"] * DAYS, unit="D")
    return X.assign(Input=dates if tz is None else dates.dt.tz_localize(tz))


def _days(X, first):
    """The same inputs as numbers: days since the earliest training date."""
    return X.assign(Input=(X["Input"] - first) * DAYS)


@pytest.fixture(scope="module")
def data():
    X, y = load_synth_dev()
    keep = X["ID"].isin(X["ID"].unique()[:10]).to_numpy()
    X_obs, y_obs = load_synth_dev("test_observed")
    new = X_obs["ID"].isin(X_obs["ID"].unique()[:2]).to_numpy()
    X_new, _ = load_synth_dev("test_target")
    X_new = X_new[X_new["ID"].isin(X_obs["ID"][new])]
    X, y = X[keep], y[keep]
    return {
        "X": X,
        "y": y,
        "X_obs": X_obs[new],
        "y_obs": y_obs[new],
        "X_new": X_new,
        "first": float(X["Input"].min()),
    }


@pytest.fixture(scope="module")
def pair(data):
    """The same model fitted on dates and on the equivalent days."""
    dated = _fit(_dates(data["X"]), data["y"])
    numeric = _fit(_days(data["X"], data["first"]), data["y"])
    return dated, numeric


def test_scale_recorded_at_fit(pair, data):
    dated, numeric = pair
    first = START + pd.Timedelta(data["first"] * DAYS, "D")
    assert dated.input_scales_ == (
        InputScale("Input", "datetime", "days", first.isoformat(), None),
    )
    assert numeric.input_scales_ == (InputScale("Input"),)


def test_dates_fit_and_predict_as_the_same_numbers(pair, data):
    dated, numeric = pair
    first = data["first"]
    np.testing.assert_array_equal(dated.elbo_, numeric.elbo_)
    np.testing.assert_array_equal(np.asarray(dated.model_.grid), np.asarray(numeric.model_.grid))
    for X in (data["X"], data["X_new"]):
        m1, s1 = dated.predict(_dates(X), return_std=True)
        m2, s2 = numeric.predict(_days(X, first), return_std=True)
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(s1, s2)
    f1 = dated.forecast(_dates(data["X_obs"]), data["y_obs"], _dates(data["X_new"]))
    f2 = numeric.forecast(_days(data["X_obs"], first), data["y_obs"], _days(data["X_new"], first))
    np.testing.assert_array_equal(f1, f2)


def test_condition_and_sample_y_take_dates(data):
    first = data["first"]
    dated = _fit(_dates(data["X"]), data["y"]).condition(_dates(data["X_obs"]), data["y_obs"])
    numeric = _fit(_days(data["X"], first), data["y"])
    numeric.condition(_days(data["X_obs"], first), data["y_obs"])
    X_new = data["X_new"]
    np.testing.assert_array_equal(
        dated.predict(_dates(X_new)), numeric.predict(_days(X_new, first))
    )
    np.testing.assert_array_equal(
        dated.sample_y(_dates(X_new), 3, random_state=1),
        numeric.sample_y(_days(X_new, first), 3, random_state=1),
    )
    np.testing.assert_array_equal(
        dated.predict_proba(_dates(X_new)), numeric.predict_proba(_days(X_new, first))
    )


def test_tables_give_dates_back(pair, data):
    dated, numeric = pair
    X = _dates(data["X_new"]).set_index(pd.Index(np.arange(len(data["X_new"])) * 3))
    frame = dated.predict_frame(X)
    assert frame["Input"].dtype == X["Input"].dtype
    pd.testing.assert_series_equal(frame["Input"], X["Input"])
    expected = numeric.predict_frame(_days(data["X_new"], data["first"]))
    np.testing.assert_array_equal(frame["mean"].to_numpy(), expected["mean"].to_numpy())
    table = dated.mean_processes_
    assert pd.api.types.is_datetime64_dtype(table["Input"].dtype)
    days = (table["Input"] - table["Input"].min()) / pd.Timedelta(1, "D")
    np.testing.assert_allclose(days, numeric.mean_processes_["Input"], atol=1e-9)


def test_timezones_compare_instants(data):
    """Aware dates are read as UTC instants: another timezone at predict gives the same
    instants, hence the same predictions."""
    y = data["y"]
    zone = "Etc/GMT-3"  # UTC+3 all year (no daylight saving within the data)
    model = _fit(_dates(data["X"], tz=zone), y)
    scale = model.input_scales_[0]
    assert scale.tz == zone
    # The origin is the first instant, written in UTC.
    first = START + pd.Timedelta(data["first"] * DAYS, "D") - pd.Timedelta(3, "h")
    assert scale.origin == first.isoformat()
    local = _dates(data["X_new"], tz=zone)
    tokyo = local.assign(Input=local["Input"].dt.tz_convert("Asia/Tokyo"))
    np.testing.assert_array_equal(model.predict(local), model.predict(tokyo))
    frame = model.predict_frame(tokyo)
    assert str(frame["Input"].dt.tz) == "Asia/Tokyo"
    pd.testing.assert_series_equal(frame["Input"], tokyo["Input"])
    # All dates shifted by the same three hours: the same days since the origin.
    naive = _fit(_dates(data["X"]), y)
    np.testing.assert_array_equal(model.predict(local), naive.predict(_dates(data["X_new"])))
    back = scale.to_user(np.array([0.0, 1.5]))
    assert str(back.tz) == zone
    assert back[0] == first.tz_localize("UTC")
    assert back[1] - back[0] == pd.Timedelta(36, "h")


def test_mixed_kinds_are_refused_naming_the_column(pair, data):
    dated, numeric = pair
    X_new = data["X_new"]
    with pytest.raises(TypeError, match=r"'Input'.*numbers.*dates \(datetime64\) at fit"):
        dated.predict(_days(X_new, data["first"]))
    with pytest.raises(TypeError, match=r"'Input'.*dates.*numbers at fit"):
        numeric.predict(_dates(X_new))
    with pytest.raises(TypeError, match=r"'Input'.*timezone UTC.*naive dates at fit"):
        dated.sample_y(_dates(X_new, tz="UTC"))
    with pytest.raises(TypeError, match="'Input'.*pass X as a DataFrame"):
        dated.predict(np.c_[np.zeros(3), np.arange(3.0)].astype(object))
    with pytest.raises(TypeError, match=r"'Input'.*durations.*dates"):
        dated.condition(data["X_obs"].assign(Input=pd.to_timedelta(1, "D")), data["y_obs"])


def test_mixed_timezones_in_a_column_are_refused(data):
    X, y = data["X"], data["y"]
    dates = _dates(X, tz="UTC")["Input"].astype(object)
    dates.iloc[0] = dates.iloc[0].tz_convert("Europe/Paris")
    with pytest.raises(ValueError, match=r"'Input'.*several timezones.*utc=True"):
        MagmaClusterRegressor(2).fit(X.assign(Input=dates), y)
    naive = _dates(X)["Input"].astype(object)
    naive.iloc[0] = naive.iloc[0].tz_localize("UTC")
    with pytest.raises(ValueError, match="'Input'.*naive and timezone-aware"):
        MagmaClusterRegressor(2).fit(X.assign(Input=naive), y)


def test_missing_dates_are_named(data):
    X = _dates(data["X"])
    X.iloc[3, 1] = pd.NaT
    with pytest.raises(ValueError, match="NaN in column 'Input' at row 3"):
        MagmaClusterRegressor(2).fit(X, data["y"])


def test_durations_are_days(data):
    first, y = data["first"], data["y"]
    X = data["X"].assign(Input=pd.to_timedelta((data["X"]["Input"] - first) * DAYS, unit="D"))
    model = _fit(X, y)
    assert model.input_scales_ == (InputScale("Input", "timedelta", "days"),)
    numeric = _fit(_days(data["X"], first), y)
    np.testing.assert_array_equal(model.predict(X), numeric.predict(_days(data["X"], first)))
    assert pd.api.types.is_timedelta64_dtype(model.predict_frame(X)["Input"].dtype)


def test_skops_round_trip_keeps_the_date_scale(pair, data, tmp_path):
    dated, _ = pair
    sio.dump(dated, tmp_path / "dated.skops")
    assert sio.get_untrusted_types(file=tmp_path / "dated.skops") == [ESTIMATOR]
    loaded = sio.load(tmp_path / "dated.skops", trusted=[ESTIMATOR])
    assert loaded.input_scales_ == dated.input_scales_
    X_new = _dates(data["X_new"])
    np.testing.assert_array_equal(loaded.predict(X_new), dated.predict(X_new))
    with pytest.raises(TypeError, match="'Input'"):
        loaded.predict(_days(data["X_new"], data["first"]))


def test_warm_start_from_dates_to_numbers_starts_over(pair, data):
    dated, _ = pair
    again = copy.deepcopy(dated).set_params(warm_start=True, max_iter=2)
    with pytest.warns(UserWarning, match="the input columns changed"):
        again.fit(_days(data["X"], data["first"]), data["y"])
    assert again.input_scales_ == (InputScale("Input"),)
