"""Classification metrics and outcomes of the workspace's positive class (AD in the paper).

Outcomes follow Böhle et al. 2019 §2.4: TP = a positive scan called positive (AD predicted AD), FP = a
negative one called positive, TN = negative called negative, FN = positive called negative.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def outcome(y_true_ad: np.ndarray, y_pred_ad: np.ndarray) -> np.ndarray:
    """Per scan "TP"/"FP"/"TN"/"FN" from boolean arrays (True = AD)."""
    t = np.asarray(y_true_ad, bool)
    p = np.asarray(y_pred_ad, bool)
    return np.where(t & p, "TP", np.where(~t & p, "FP", np.where(~t & ~p, "TN", "FN")))


def roc_auc(y_true_ad: np.ndarray, score_ad: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties); NaN with one class only."""
    t = np.asarray(y_true_ad, bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score_ad, float))
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true_ad, score_ad, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, balanced_accuracy, auc, sensitivity (AD recall), specificity (HC recall) and counts."""
    t = np.asarray(y_true_ad, bool)
    p = np.asarray(score_ad, float) >= threshold
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    tn, fn = int((~t & ~p).sum()), int((t & ~p).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return {
        "accuracy": (tp + tn) / len(t) if len(t) else float("nan"),
        "balanced_accuracy": float(np.nanmean([sens, spec])) if len(t) else float("nan"),
        "auc": roc_auc(t, score_ad),
        "sensitivity": sens, "specificity": spec,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def roc_curve(y_true_ad, score_ad) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` from (1, 1) down to (0, 0), one point per distinct score."""
    t = np.asarray(y_true_ad, bool)
    s = np.asarray(score_ad, float)
    thresholds = np.r_[-np.inf, np.unique(s), np.inf]
    n_pos, n_neg = max(int(t.sum()), 1), max(int((~t).sum()), 1)
    tpr = np.array([(s[t] >= th).sum() / n_pos for th in thresholds])
    fpr = np.array([(s[~t] >= th).sum() / n_neg for th in thresholds])
    return fpr, tpr, thresholds


def confusion_matrix(y_true_ad, y_pred_ad) -> np.ndarray:
    """2×2 counts, rows = true (HC, AD), columns = predicted (HC, AD), the class order of the model."""
    t = np.asarray(y_true_ad, bool)
    p = np.asarray(y_pred_ad, bool)
    return np.array([[int((~t & ~p).sum()), int((~t & p).sum())],
                     [int((t & ~p).sum()), int((t & p).sum())]])
