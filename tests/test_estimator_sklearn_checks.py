"""scikit-learn's common estimator checks (``parametrize_with_checks``)."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from mimosa_sklearn import MagmaClusterRegressor

ESTIMATORS = [
    MagmaClusterRegressor(task_col=None, n_clusters=1, max_iter=3, random_state=0),
    MagmaClusterRegressor(task_col=0, n_clusters=1, max_iter=3, random_state=0),
]

EXPECTED_FAILED: dict[object, dict[str, str]] = {None: {}, 0: {}}


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED[est.task_col]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
