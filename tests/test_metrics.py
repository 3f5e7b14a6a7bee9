import numpy as np
from sklearn import metrics as sk

from lib.learn.metrics import classification_metrics, outcome, roc_auc


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.45
    score = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    score[:20] = 0.5  # ties, and scores exactly at the threshold
    m = classification_metrics(y, score)
    pred = score >= 0.5
    assert np.isclose(m["accuracy"], sk.accuracy_score(y, pred))
    assert np.isclose(m["balanced_accuracy"], sk.balanced_accuracy_score(y, pred))
    assert np.isclose(m["auc"], sk.roc_auc_score(y, score))
    assert np.isclose(m["sensitivity"], sk.recall_score(y, pred))
    assert np.isclose(m["specificity"], sk.recall_score(~y, ~pred))
    assert m["tp"] + m["fp"] + m["tn"] + m["fn"] == 200


def test_outcomes_follow_the_paper():
    truth = np.array([True, False, False, True])
    pred = np.array([True, True, False, False])
    assert outcome(truth, pred).tolist() == ["TP", "FP", "TN", "FN"]


def test_auc_undefined_for_one_class():
    assert np.isnan(roc_auc(np.ones(5, bool), np.linspace(0, 1, 5)))
