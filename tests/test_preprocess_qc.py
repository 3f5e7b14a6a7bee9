"""The Cohort page's preprocessing QC computations: the table, the summary, the edges figure, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from lib.data.workspace import Workspace
from lib.views import preprocess_qc as qc
from preprocess_fakes import SCANS, fake_preprocessed


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return fake_preprocessed(tmp_path_factory.mktemp("preprocessed"))


def test_table_puts_failures_and_flags_first_with_their_reason(ws):
    table = qc.qc_table(qc.load_qc(ws))
    assert list(table["status"]) == ["failed", "flagged", "passed_through", "ok"]
    assert table["check"][0] == "✖ failed" and table["check"][1] == "⚠ flagged"
    assert "diverged" in table["message"][0] and table["message"][3] == ""
    assert table["corr_template"].dtype.kind == "f"
    text = qc.summary(qc.load_qc(ws))
    assert text.startswith("4 scans: 1 failed, 1 flagged, 1 passed through, 1 ok")
    assert "Training uses the 2 ok or passed-through scans" in text
    assert set(qc.needs_attention(qc.load_qc(ws))["scan_id"]) == {"sub-02_ses-1", "sub-03_ses-1"}


def test_a_workspace_without_preprocessing_has_no_qc(tmp_path):
    assert qc.load_qc(Workspace.create(tmp_path / "plain")) is None


def test_a_bad_qc_table_is_named_with_its_problem(tmp_path):
    plain = Workspace.create(tmp_path / "bad")
    qc.qc_csv(plain).parent.mkdir(parents=True)
    qc.qc_csv(plain).write_text("scan_id,state\na,ok\n")
    with pytest.raises(qc.QCError, match=r"qc\.csv lacks the column\(s\) status"):
        qc.load_qc(plain)
    qc.qc_csv(plain).write_text("scan_id,status\na,great\n")
    with pytest.raises(qc.QCError, match="unknown status great"):
        qc.load_qc(plain)


def _edge_hits(ws, scan_id) -> float:
    """Mean image brightness under the drawn edge colour, a proxy for lines lying on the brain outline."""
    img = np.asarray(qc.edges_figure(ws, scan_id)).astype(int)
    orange = (img[..., 0] > 200) & (img[..., 1] > 100) & (img[..., 1] < 200) & (img[..., 2] < 120)
    return orange.sum()


def test_edges_are_drawn_over_the_registered_scan_in_three_slices(ws):
    img = qc.edges_figure(ws, "sub-01_ses-1", "left hippocampus")
    assert img.width > 2 * img.height   # three panels side by side
    assert _edge_hits(ws, "sub-01_ses-1") > 200
    tissue = qc.template_tissue(3.0)
    assert set(np.unique(tissue)) == {0, 1, 2}
    # the outline is the template's brain; white matter is a plausible share of it
    from lib.data.templates import brain_mask
    assert np.array_equal(tissue > 0, brain_mask(3.0))
    assert 0.3 < (tissue == 2).sum() / (tissue > 0).sum() < 0.7


def test_a_scan_that_was_not_registered_is_refused_by_name(ws, tmp_path):
    with pytest.raises(qc.QCError, match="sub-03_ses-1/t1.nii.gz does not exist"):
        qc.edges_figure(ws, "sub-03_ses-1")
    (qc.registered_path(ws, "sub-05")).parent.mkdir(parents=True)
    qc.registered_path(ws, "sub-05").write_bytes(b"not a nifti")
    with pytest.raises(qc.QCError, match="sub-05/t1.nii.gz cannot be read"):
        qc.edges_figure(ws, "sub-05")
    assert len(SCANS) == 4


def test_registered_path_follows_the_pipelines_folder_rule(ws, monkeypatch):
    """The view asks the pipeline where a scan's folder is, so a change of the naming rule cannot split them."""
    from lib.data.preprocess import table

    assert qc.registered_path(ws, "sub/01 a").parent.name == table.folder_name("sub/01 a") == "sub_01_a"
    monkeypatch.setattr(table, "folder_name", lambda scan_id: f"scan-{scan_id}")
    assert qc.registered_path(ws, "07") == qc.preprocessed_dir(ws) / "scan-07" / "t1.nii.gz"


def test_caption_says_the_atlas_hippocampus_dice_is_reported_not_judged(ws):
    frame = qc.load_qc(ws)
    caption = qc.measures_caption(frame)
    assert "hippocampus Dice against the template atlas is reported, not judged" in caption
    assert "unaligned by design" not in caption
    assert "unaligned by design" in qc.measures_caption(frame.assign(registration="none"))
