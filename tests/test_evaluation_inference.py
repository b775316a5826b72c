"""A vendor's model on secret rows: every supported scikit-learn model's secure output
against scikit-learn's own on the plaintext (breast-cancer data, shipped with
scikit-learn), and the refusals of models that cannot be run as given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, make_regression
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from concilium.errors import ModelError, UnsupportedModel
from concilium.evaluation import from_sklearn
from concilium.evaluation.inference import predict, share_model
from concilium.evaluation.models import Model
from concilium.testing import run_parties

FEATURES, LABELS = load_breast_cancer(return_X_y=True)


def _on_grid(values: np.ndarray) -> np.ndarray:
    """Values with at most the codec's 16 fractional bits, as data with four decimals
    are: on them the tree comparisons take scikit-learn's branch exactly (see
    ``inference._floor_to_grid``)."""
    return np.round(values * 65536.0) / 65536.0


FEATURES = _on_grid(StandardScaler().fit_transform(FEATURES))
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
TRAIN, TEST = slice(0, 300), slice(300, None)
VENDOR, OWNER = 2, 0
# Fixed point has 16 fractional bits: products and sigmoids agree to about 1e-4.
TOLERANCE = 2e-4


def _secure(description: Model, rows: np.ndarray, protocol: str = "rep3") -> Any:
    """(decision, probability or None, predicted class or None), revealed at party 0."""
    shape = description.shape()

    def program(session: Any) -> Any:
        model = share_model(session, VENDOR, description if session.party == VENDOR else None,
                            shape)
        features = session.input(OWNER, rows if session.party == OWNER else None, fixed=True)
        prediction = predict(model, features)
        if description.task == "regression":
            return prediction.decision.reveal(), None, None
        return (prediction.decision.reveal(), prediction.probability().reveal(),
                prediction.predicted_class().reveal())
    return run_parties(program, protocol=protocol)[0]


def _fit(estimator: Any) -> Any:
    return estimator.fit(FEATURES[TRAIN], LABELS[TRAIN])


CLASSIFIERS = {
    "logistic": lambda: _fit(LogisticRegression(max_iter=2000)),
    "mlp": lambda: _fit(MLPClassifier(hidden_layer_sizes=(12, 6), max_iter=600,
                                      random_state=0)),
    "tree": lambda: _fit(DecisionTreeClassifier(max_depth=4, random_state=0)),
    "forest": lambda: _fit(RandomForestClassifier(n_estimators=6, max_depth=5,
                                                  random_state=0)),
    "boosting": lambda: _fit(GradientBoostingClassifier(n_estimators=12, max_depth=3,
                                                        random_state=0)),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_binary_classifiers_match_scikit_learn(name: str) -> None:
    estimator = CLASSIFIERS[name]()
    rows = FEATURES[TEST]
    decision, probability, predicted = _secure(from_sklearn(estimator), rows)
    assert np.allclose(probability, estimator.predict_proba(rows)[:, 1], atol=TOLERANCE)
    assert np.array_equal(predicted, estimator.predict(rows))
    if hasattr(estimator, "decision_function"):
        assert np.allclose(decision, estimator.decision_function(rows), atol=5 * TOLERANCE)


@pytest.mark.parametrize("backend_name", ["rep4", "additive"])
def test_a_boosted_ensemble_on_the_other_protocols(backend_name: str) -> None:
    estimator = CLASSIFIERS["boosting"]()
    rows = FEATURES[300:360]
    description = from_sklearn(estimator)
    if backend_name == "additive":  # two parties: the vendor is party 1
        shape = description.shape()

        def program(session: Any) -> Any:
            model = share_model(session, 1, description if session.party == 1 else None,
                                shape)
            features = session.input(0, rows if session.party == 0 else None, fixed=True)
            return predict(model, features).predicted_class().reveal()
        predicted = run_parties(2, program, protocol="additive")[0]
    else:
        predicted = _secure(description, rows, backend_name)[2]
    assert np.array_equal(predicted, estimator.predict(rows))


def test_three_classes_softmax_and_argmax_match_scikit_learn() -> None:
    classes = np.digitize(FEATURES[:, 0], [-0.5, 0.5])  # three classes from a feature
    rows = FEATURES[TEST][:120]
    for estimator in (LogisticRegression(max_iter=2000),
                      GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0),
                      RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0)):
        estimator.fit(FEATURES[TRAIN][:, 1:], classes[TRAIN])
        _, probability, one_hot = _secure(from_sklearn(estimator), rows[:, 1:])
        expected = estimator.predict_proba(rows[:, 1:])
        assert np.allclose(probability, expected, atol=5 * TOLERANCE)
        assert np.array_equal(one_hot.argmax(axis=1), estimator.predict(rows[:, 1:]))
        assert np.array_equal(one_hot.sum(axis=1), np.ones(len(rows)))


def test_regressors_match_scikit_learn() -> None:
    rows, targets = make_regression(n_samples=400, n_features=8, noise=5.0, random_state=3)
    rows = _on_grid(rows / 2.0)
    for estimator in (LinearRegression(), MLPRegressor(hidden_layer_sizes=(8,), max_iter=800,
                                                       random_state=0),
                      RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0),
                      GradientBoostingRegressor(n_estimators=8, max_depth=3, random_state=0)):
        estimator.fit(rows[:300], targets[:300])
        decision, _, _ = _secure(from_sklearn(estimator), rows[300:])
        expected = estimator.predict(rows[300:])
        assert np.allclose(decision, expected, atol=1e-3 * np.abs(expected).max())


def test_padding_keeps_shallow_leaves_and_reveals_only_the_stated_shape() -> None:
    estimator = CLASSIFIERS["tree"]()
    description = from_sklearn(estimator)
    assert description.shape()["depth"] == estimator.get_depth()
    assert description.shape()["node_features"] == description.node_features.tolist()
    assert set(description.shape()) == {"model", "task", "features", "trees", "depth",
                                        "outputs", "aggregate", "link", "node_features"}


def test_models_that_cannot_be_run_are_refused_before_sharing() -> None:
    with pytest.raises(UnsupportedModel, match="SVC"):
        from_sklearn(_fit(SVC()))
    with pytest.raises(ModelError, match="integers 0, 1"):
        from_sklearn(LogisticRegression().fit(FEATURES[:50], LABELS[:50] + 1))
    description = from_sklearn(CLASSIFIERS["logistic"]())
    wrong = dict(description.shape(), features=29)

    def program(session: Any) -> Any:
        return share_model(session, VENDOR, description if session.party == VENDOR else None,
                           wrong)
    with pytest.raises(ModelError, match="shape the computation spec states"):
        run_parties(program)
