import pandas as pd
import pytest

from lib.data.splits import LeakageError, assign, check_leakage, load_splits, make_splits


def _cohort(n_ad=30, n_hc=34, visits=3):
    rows = []
    for i in range(n_ad + n_hc):
        for v in range(1 + i % visits):
            rows.append({"subject_id": f"s{i:03d}", "scan_id": f"s{i:03d}_v{v}", "diagnosis": "AD" if i < n_ad else "HC"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_splits_never_share_a_subject(seed):
    cohort = _cohort()
    splits = make_splits(cohort, seed=seed)
    check_leakage(cohort, splits)
    parts = assign(cohort, splits)
    per_subject = parts.groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    assert set(parts["split"]) == {"train", "validation", "test"}
    folds = parts.groupby("subject_id")["fold"].nunique()
    assert (folds == 1).all()


def test_test_set_is_balanced_and_stratified():
    cohort = _cohort(n_ad=20, n_hc=40)
    splits = make_splits(cohort, test_fraction=0.2, seed=5)
    subjects = assign(cohort, splits).drop_duplicates("subject_id")
    test = subjects[subjects["split"] == "test"]["diagnosis"].value_counts()
    assert test["AD"] == test["HC"] == 6
    folds = subjects.groupby(["fold", "diagnosis"]).size().unstack()
    assert (folds.max() - folds.min() <= 1).all()  # each fold has a share of both diagnoses


def test_leakage_is_detected():
    cohort = _cohort()
    splits = make_splits(cohort)
    check_leakage(assign(cohort, splits))  # the cohort's own split column, consistent
    newcomer = pd.concat([cohort, pd.DataFrame([{"subject_id": "new", "scan_id": "x", "diagnosis": "AD"}])])
    with pytest.raises(LeakageError, match="without a split"):
        check_leakage(newcomer, splits)
    # a lab's predefined split that was made per scan: one subject's visits in two parts
    per_scan = assign(cohort, splits)
    multi = per_scan.groupby("subject_id").filter(lambda g: len(g) > 1)["subject_id"].iat[0]
    first_visit = per_scan.index[per_scan["subject_id"] == multi][0]
    per_scan.loc[first_visit, "split"] = "test" if per_scan.loc[first_visit, "split"] != "test" else "train"
    with pytest.raises(LeakageError, match=f"more than one part: {multi}"):
        check_leakage(per_scan)


def test_load_splits_checks_on_every_load(demo_ws):
    cohort = pd.read_csv(demo_ws.cohort_csv)
    splits = load_splits(demo_ws, cohort)
    assert set(splits["parts"]) == set(cohort["subject_id"])
    extra = pd.concat([cohort, cohort.iloc[[0]].assign(subject_id="sub-999", scan_id="sub-999_ses-1")])
    with pytest.raises(LeakageError):
        load_splits(demo_ws, extra)
