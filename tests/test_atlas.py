"""Atlases on the template grid: user files, hemisphere merging, errors that name the file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lib.data.atlas import (AtlasError, atlas_from_arrays, atlas_from_files, hemisphere_of, load_atlas,
                       merge_hemispheres)
from lib.data.templates import Grid

RES = 3.0


@pytest.mark.parametrize("name, side, base", [
    ("Left_Hippocampus", "left", "Hippocampus"),
    ("Right_Accumbens_Area", "right", "Accumbens_Area"),
    ("Hippocampus_L", "left", "Hippocampus"),
    ("Frontal_Inf_Oper_R", "right", "Frontal_Inf_Oper"),
    ("Left-Cerebral-White-Matter", "left", "Cerebral-White-Matter"),
    ("ctx-rh-bankssts", "right", "ctx-bankssts"),
    ("lh.insula", "left", "insula"),
    ("Amygdala (R)", "right", "Amygdala"),
    ("Right Amygdala", "right", "Amygdala"),
    ("G_Frontal_Sup-1-L", "left", "G_Frontal_Sup-1"),
    ("Vermis_1_2", "none", "Vermis_1_2"),
    ("Cerebellar_Vermal_Lobules_I-V", "none", "Cerebellar_Vermal_Lobules_I-V"),
    ("3rd_Ventricle", "none", "3rd_Ventricle"),
])
def test_hemisphere_parsing(name, side, base):
    assert hemisphere_of(name) == (side, base)


def _box_atlas(spacing: float = 4.0, shift: float = 1.0):
    """A labels image on its own grid (not the template's) with boxes at known MNI places."""
    shape = (40, 50, 40)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = (-80 + shift, -110 + shift, -70 + shift)
    data = np.zeros(shape, np.int16)
    ijk = lambda xyz: np.rint((np.asarray(xyz) - aff[:3, 3]) / spacing).astype(int)  # noqa: E731
    boxes = {17: (-30, -20, -15), 53: (30, -20, -15), 7: (0, -60, -30), 5: (-40, 20, 30)}
    for label, centre in boxes.items():
        i, j, k = ijk(centre)
        data[i - 3:i + 4, j - 3:j + 4, k - 3:k + 4] = label
    names = pd.DataFrame({"index": [17, 53, 7, 5, 99],
                          "name": ["Hippocampus_L", "Hippocampus_R", "Vermis", "Left_Frontal_Pole", "Nowhere_R"]})
    return nib.Nifti1Image(data, aff), names, boxes


def _write(tmp_path, img, names, sep=","):
    lp = tmp_path / "user_atlas.nii.gz"
    nib.save(img, lp)
    np_ = tmp_path / ("names.tsv" if sep == "\t" else "names.csv")
    names.to_csv(np_, sep=sep, index=False)
    return lp, np_


def test_user_atlas_resampled_nearest_with_counts_and_lookup(tmp_path):
    img, names, boxes = _box_atlas()
    lp, np_ = _write(tmp_path, img, names, sep="\t")
    atlas = atlas_from_files(lp, np_, resolution=RES)
    assert atlas.labels.shape == Grid(RES).shape and atlas.labels.dtype == np.int32
    # Nearest neighbour: only original label values, never blends of them.
    assert set(np.unique(atlas.labels)) == {0, 5, 7, 17, 53}
    counts = np.bincount(atlas.labels.ravel())
    assert (atlas.table["voxels"].to_numpy() == counts[atlas.table["index"]]).all()
    assert np.allclose(atlas.table["volume_mm3"], atlas.table["voxels"] * RES ** 3)
    # A 28 mm box holds about (28/3)^3 voxels of 3 mm.
    assert atlas.table["voxels"].between(600, 1400).all()
    for label, centre in boxes.items():
        expected = names.set_index("index").loc[label, "name"]
        assert atlas.region_at_mni(centre) == expected
        assert atlas.region_of(atlas.grid.mni_to_voxel(centre)) == expected
    assert atlas.region_at_mni((60, 60, 60)) is None
    assert atlas.region_of((-1, 0, 0)) is None
    assert dict(zip(atlas.table["name"], atlas.table["hemisphere"])) == {
        "Left_Frontal_Pole": "left", "Vermis": "none", "Hippocampus_L": "left", "Hippocampus_R": "right"}
    # The table row without voxels is dropped and said so; the resampling is reported.
    assert "Nowhere_R" not in set(atlas.table["name"])
    assert any("Nowhere_R" in w for w in atlas.warnings)
    assert any("resampled" in w for w in atlas.warnings)
    assert not atlas.labels.flags.writeable


def test_merging_left_and_right(tmp_path):
    img, names, _ = _box_atlas()
    lp, np_ = _write(tmp_path, img, names)
    atlas = atlas_from_files(lp, np_, resolution=RES)
    merged = atlas_from_files(lp, np_, resolution=RES, merge=True)
    t, m = atlas.table.set_index("name"), merged.table.set_index("name")
    assert m.loc["Hippocampus", "voxels"] == t.loc["Hippocampus_L", "voxels"] + t.loc["Hippocampus_R", "voxels"]
    assert m.loc["Hippocampus", "hemisphere"] == "both"
    assert m.loc["Hippocampus", "index"] == 17
    # An unpaired left region and a side-less one are kept as they are.
    assert m.loc["Left_Frontal_Pole", "hemisphere"] == "left" and m.loc["Vermis", "hemisphere"] == "none"
    assert ((merged.labels > 0) == (atlas.labels > 0)).all()
    assert merged.region_at_mni((30, -20, -15)) == "Hippocampus"
    assert (np.bincount(merged.labels.ravel())[merged.table["index"]] == merged.table["voxels"]).all()


def test_merging_pairs_nearly_identical_names():
    grid = Grid(RES)
    labels = np.zeros(grid.shape, np.int32)
    labels[10:15, 10:15, 10:15] = 1
    labels[40:45, 10:15, 10:15] = 2
    labels[20:25, 30:35, 10:15] = 3
    labels[30:35, 30:35, 10:15] = 4
    names = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["Left_Lateral_Ventrical", "Right_Lateral_Ventricle",
                                                          "Left_Thalamus", "Right_Caudate"]})
    merged = merge_hemispheres(atlas_from_arrays(labels, names, resolution=RES))
    assert set(merged.table["name"]) == {"Lateral_Ventrical", "Left_Thalamus", "Right_Caudate"}
    assert merged.table.set_index("name").loc["Lateral_Ventrical", "voxels"] == 250


def test_shipped_atlas_and_its_merge():
    atlas = load_atlas("neuromorphometrics", RES)
    merged = load_atlas("neuromorphometrics", RES, merge=True)
    names = set(atlas.table["name"])
    assert {"Left_Hippocampus", "Right_Hippocampus"} <= names
    assert atlas.region_at_mni((-26, -20, -16)) == "Left_Hippocampus"
    assert merged.region_at_mni((-26, -20, -16)) == "Hippocampus"
    sides = atlas.table["hemisphere"].value_counts()
    assert sides["left"] == sides["right"] and merged.n_regions == sides["left"] + sides.get("none", 0)
    assert merged.table["voxels"].sum() == atlas.table["voxels"].sum() == int((atlas.labels > 0).sum())


def _expect_error(fn, *fragments):
    with pytest.raises(AtlasError) as err:
        fn()
    for frag in fragments:
        assert frag in str(err.value), str(err.value)


def test_errors_name_the_file_and_the_problem(tmp_path):
    img, names, _ = _box_atlas()
    lp, np_ = _write(tmp_path, img, names)
    _expect_error(lambda: atlas_from_files(tmp_path / "nope.nii.gz", np_, resolution=RES), "nope.nii.gz",
                  "not found")
    _expect_error(lambda: atlas_from_files(lp, tmp_path / "nope.csv", resolution=RES), "nope.csv", "not found")

    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    _expect_error(lambda: atlas_from_files(broken, np_, resolution=RES), "broken.nii.gz", "NIfTI")

    prob = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * 0.37, img.affine), prob)
    _expect_error(lambda: atlas_from_files(prob, np_, resolution=RES), "prob.nii.gz", "non-integer")

    four_d = tmp_path / "fourd.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 3), np.float32), img.affine), four_d)
    _expect_error(lambda: atlas_from_files(four_d, np_, resolution=RES), "fourd.nii.gz", "probabilistic")

    far = tmp_path / "far.nii.gz"
    aff = img.affine.copy()
    aff[:3, 3] += 1000
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), far)
    _expect_error(lambda: atlas_from_files(far, np_, resolution=RES), "far.nii.gz", "MNI")

    short = tmp_path / "short.csv"
    names[names["index"] != 7].to_csv(short, index=False)
    _expect_error(lambda: atlas_from_files(lp, short, resolution=RES), "short.csv", "no row", "7")

    nocol = tmp_path / "nocol.csv"
    pd.DataFrame({"index": [1], "colour": ["red"]}).to_csv(nocol, index=False)
    _expect_error(lambda: atlas_from_files(lp, nocol, resolution=RES), "nocol.csv", "'name'")

    dup = tmp_path / "dup.csv"
    pd.concat([names, names.head(1)]).to_csv(dup, index=False)
    _expect_error(lambda: atlas_from_files(lp, dup, resolution=RES), "dup.csv", "twice", "17")

    text = tmp_path / "text.csv"
    text.write_text("index,name\n17,Hippocampus_L\nseventeen,Hippocampus_R\n")
    _expect_error(lambda: atlas_from_files(lp, text, resolution=RES), "text.csv", "integer", "seventeen")


def test_headerless_names_table_and_background_row(tmp_path):
    img, names, _ = _box_atlas()
    lp = tmp_path / "a.nii"
    nib.save(img, lp)
    np_ = tmp_path / "names.csv"
    np_.write_text("0,Background\n" + "".join(f"{i},{n}\n" for i, n in zip(names["index"], names["name"])))
    atlas = atlas_from_files(lp, np_, resolution=RES)
    assert set(atlas.table["index"]) == {5, 7, 17, 53}
    assert atlas.name == "a"
