"""scikit-learn estimators the simulated models are trained with.

Input is ``ModelSpec.matrix``: numeric columns (NaN = missing) followed by categorical codes.
"""
from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon.simulate.spec import ModelSpec


def one_hot_linear(spec: ModelSpec) -> Pipeline:
    """Impute + scale numerics, one-hot categoricals, then logistic regression (classification)
    or ridge regression."""
    n_num, n_cat = len(spec.numeric), len(spec.categorical)
    pre = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(range(n_num))),
        ("categorical", OneHotEncoder(handle_unknown="ignore"), list(range(n_num, n_num + n_cat))),
    ])
    model = Ridge(alpha=1.0) if spec.task == "regression" else LogisticRegression(max_iter=1000)
    return Pipeline([("preprocess", pre), ("model", model)])


def gradient_boosting(spec: ModelSpec) -> HistGradientBoostingClassifier | HistGradientBoostingRegressor:
    """Histogram gradient boosting with native categorical and missing-value support."""
    mask = [False] * len(spec.numeric) + [True] * len(spec.categorical)
    cls = HistGradientBoostingRegressor if spec.task == "regression" else HistGradientBoostingClassifier
    return cls(max_iter=80, learning_rate=0.1, max_leaf_nodes=15, categorical_features=mask,
               early_stopping=False, random_state=0)
