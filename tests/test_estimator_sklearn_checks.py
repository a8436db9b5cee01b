"""scikit-learn's common estimator checks.

Both configurations of the estimator are checked: ``task_col=0`` (the first column
holds the task ids: many tasks) and ``task_col=None`` (every row in one task). The
checks compile a new program for almost every data size they try, so the whole set
takes minutes: the multi-task configuration runs in the default tier, the single-task
one is marked ``slow`` (``bash scripts/run_tests.sh -m ""`` runs both).
"""

from __future__ import annotations

import functools

import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator

from mimosa_sklearn import MagmaClusterRegressor

ESTIMATORS = [
    MagmaClusterRegressor(task_col=0, n_clusters=1, max_iter=3, random_state=0),
    MagmaClusterRegressor(task_col=None, n_clusters=1, max_iter=3, random_state=0),
]

_PROBA = (
    "MagmaClust is a regressor that also reports cluster memberships: predict_proba "
    "returns each row's task memberships by design (docs/guide.md, "
    "'Workflow: fit, condition, predict'), so the regressor-has-no-predict_proba "
    "rule does not apply."
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


def _check_id(check) -> str:
    if isinstance(check, functools.partial):
        extra = ",".join(f"{k}={v}" for k, v in check.keywords.items())
        return f"{check.func.__name__}({extra})" if extra else check.func.__name__
    return check.__name__


def _cases():
    for estimator in ESTIMATORS:
        tier = [pytest.mark.slow] if estimator.task_col is None else []
        cases = estimator_checks_generator(
            estimator, expected_failed_checks=EXPECTED_FAILED[estimator.task_col], mark="xfail"
        )
        for case in cases:
            est, check = case.values if hasattr(case, "values") else case
            marks = list(getattr(case, "marks", ())) + tier
            yield pytest.param(
                est, check, marks=marks, id=f"task_col={estimator.task_col}-{_check_id(check)}"
            )


@pytest.mark.parametrize("estimator, check", list(_cases()))
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
