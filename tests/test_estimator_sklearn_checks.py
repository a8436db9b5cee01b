"""scikit-learn's common estimator checks (``parametrize_with_checks``)."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from mimosa_sklearn import MagmaClusterRegressor

ESTIMATORS = [
    MagmaClusterRegressor(task_col=None, n_clusters=1, max_iter=3, random_state=0),
    MagmaClusterRegressor(task_col=0, n_clusters=1, max_iter=3, random_state=0),
]

_PROBA = (
    "MagmaClust is a regressor that also reports cluster memberships: predict_proba "
    "returns them by design (DESIGN.md), so the regressor-has-no-predict_proba rule "
    "does not apply."
)
EXPECTED_FAILED: dict[object, dict[str, str]] = {
    None: {
        "check_regressors_no_decision_function": _PROBA,
        "check_methods_sample_order_invariance": (
            "The check sets n_clusters=2, but task_col=None puts every row in one task "
            "and n_clusters larger than the number of tasks is rejected with a ValueError."
        ),
    },
    0: {"check_regressors_no_decision_function": _PROBA},
}


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED[est.task_col]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
