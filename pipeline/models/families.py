"""The model families rayline trains, which problem types each fits, and how readable each is.

No heavy imports: the spec reads these lists when it loads.
"""

from __future__ import annotations

SKLEARN_FAMILIES = ("logistic_regression", "linear_regression", "random_forest")
TORCH_FAMILIES = ("neural_network", "transformer")
AVAILABLE = (*SKLEARN_FAMILIES, "xgboost", *TORCH_FAMILIES)

CLASSIFICATION_FAMILIES = ("logistic_regression", "random_forest", "xgboost", "neural_network",
                           "transformer")
REGRESSION_FAMILIES = ("linear_regression", "random_forest", "xgboost", "neural_network",
                       "transformer")

# Selection ties are broken towards models a person can read: linear, then trees, then neural.
INTERPRETABILITY = {"logistic_regression": 3, "linear_regression": 3, "random_forest": 2,
                    "xgboost": 2, "neural_network": 1, "transformer": 1}


def families_for(problem_type: str) -> tuple[str, ...]:
    return CLASSIFICATION_FAMILIES if problem_type == "classification" else REGRESSION_FAMILIES


def unavailable(families: list[str]) -> list[str]:
    return [f for f in families if f not in AVAILABLE]
