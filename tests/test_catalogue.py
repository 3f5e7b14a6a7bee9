"""The catalogues: every method, atlas and class is declared once, and everything reads the declarations."""

import dataclasses
import inspect
import json

import pytest

from lib.data import atlases
from lib.data.classes import DEFAULT_CLASSES, Classes
from lib.explain import METHODS, canonical_params, catalogue
from lib.explain.composites import make_rule
from lib.explain.rules import RULES

SETTINGS = dict(beta=0.5, epsilon=0.01, stabilizer=1e-5, low=-1.0, high=2.0, bias=True)


def test_every_method_declares_label_paper_controls_reading_and_presets():
    assert {"lrp", "guided_backprop", "sensitivity", "gradient_x_input", "occlusion", "area_occlusion", "gradcam",
            "smoothgrad", "integrated_gradients"} <= set(METHODS)
    labels = [m.label for m in METHODS.values()]
    assert len(set(labels)) == len(labels)  # a label names one method
    for name, m in METHODS.items():
        assert m.name == name and m.label and m.description and m.citation and m.fn.__doc__, name
        assert inspect.getmodule(m.fn) is not None and isinstance(m.absolute, bool) and isinstance(m.needs_atlas, bool)
        fields = {f.name: f.default for f in dataclasses.fields(m.params)}
        for c in m.controls:  # a control is a real parameter, with the dataclass's default inside its range
            assert c.name in fields and c.default == fields[c.name], (name, c.name)
            assert c.label and c.help and (c.low is None or c.low <= c.default <= c.high), (name, c.name)
        for h in m.headline:
            assert h in fields, (name, h)
        for p in m.presets:  # every preset is a valid call
            assert set(p.params) <= set(fields), (name, p)
            if not m.needs_atlas:
                assert json.loads(json.dumps(canonical_params(name, **p.params)))["method"] == name
    assert [m.order for m in METHODS.values()] == sorted(m.order for m in METHODS.values())
    assert list(METHODS)[0] == "lrp"
    # the readings that used to be spelled out in three modules
    assert {n for n, m in METHODS.items() if m.absolute} >= {"guided_backprop", "sensitivity", "gradient_x_input",
                                                            "smoothgrad"}
    assert not METHODS["lrp"].absolute and not METHODS["integrated_gradients"].absolute
    assert [n for n, m in METHODS.items() if m.needs_atlas] == ["area_occlusion"]


def test_labels_come_from_the_catalogue():
    assert catalogue.method_label({"method": "lrp", "beta": 0.25}) == "LRP β=0.25"
    assert catalogue.method_label({"method": "lrp"}) == "LRP β=0"
    assert catalogue.method_label(canonical_params("integrated_gradients")) == "Integrated Gradients"
    assert catalogue.store_label(canonical_params("smoothgrad", noise=0.1)) == "SmoothGrad (noise=0.1)"
    assert catalogue.store_label({"method": "area_occlusion", "labels": "sha256:…", "atlas": "aal"}) == \
        "Brain-area occlusion (atlas=aal)"
    assert catalogue.store_label(canonical_params("gradcam"), "HC", "AD") == "Grad-CAM, HC explained"
    assert catalogue.label_in_text("guided_backprop") == "guided backprop"
    assert catalogue.label_in_text("lrp") == "LRP" and catalogue.label_in_text("gradcam") == "Grad-CAM"
    assert catalogue.absolute_by_default("smoothgrad") and not catalogue.absolute_by_default("unknown")


def test_a_method_registers_once():
    m = METHODS["gradcam"]
    assert catalogue.register(m) is m and list(METHODS).count("gradcam") == 1
    with pytest.raises(ValueError, match="registered twice"):
        catalogue.register(dataclasses.replace(m, label="Other"))
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of lrp"):
        catalogue.get("nope")


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_is_built_from_its_name_with_the_settings_its_class_takes(name):
    rule = make_rule(name, **SETTINGS)
    assert type(rule) is RULES[name] and rule.bias is True
    for key in inspect.signature(RULES[name]).parameters:
        assert getattr(rule, key) == SETTINGS[key], (name, key)
    with pytest.raises(ValueError, match="unknown LRP rule"):
        make_rule("nope", **SETTINGS)


def test_atlas_registry():
    assert atlases.DEFAULT_ATLAS == "neuromorphometrics"
    assert atlases.shipped_atlases() == ["neuromorphometrics", "aal", "harvard_oxford"]
    assert atlases.display_name("neuromorphometrics") == "Neuromorphometrics (the paper's)"
    assert atlases.display_name("my_atlas") == "my_atlas"
    assert atlases.segmentation_labels() == {"neuromorphometrics": {"left": (48,), "right": (47,)},
                                             "freesurfer": {"left": (17,), "right": (53,)}}
    from lib.data.templates import ATLAS_FILES, data_dir
    assert set(ATLAS_FILES) == set(atlases.shipped_atlases())
    for image, names in ATLAS_FILES.values():
        assert (data_dir() / image).is_file() and (data_dir() / names).is_file()


def test_classes_from_one_place(tmp_path):
    from lib.data.workspace import Workspace
    from lib.learn.models import CLASSES

    assert CLASSES == DEFAULT_CLASSES.names == ("HC", "AD")
    assert DEFAULT_CLASSES.index("AD") == 1 and DEFAULT_CLASSES.other("AD") == "HC"
    with pytest.raises(ValueError, match="unknown class 'MCI'"):
        DEFAULT_CLASSES.index("MCI")
    assert Workspace.create(tmp_path / "ws").classes == Classes("AD", "HC")


@pytest.mark.parametrize("method,params", [("integrated_gradients", ["steps=4"]),
                                           ("smoothgrad", ["n_samples=2", "noise=0.1"])])
def test_cli_explains_with_the_new_methods(demo_ws, demo_run, method, params, capsys):
    import numpy as np

    from lib.cli import main
    from lib.explain import heatmaps
    from lib.views import viewer

    args = [a for p in params for a in ("--param", p)]
    assert main(["--workspace", str(demo_ws.root), "explain", "--run", demo_run.id, "--method", method, *args]) == 0
    kwargs = {k: json.loads(v) for k, v in (p.split("=") for p in params)}
    store = heatmaps.find_store(demo_ws, demo_run, method, **kwargs)
    assert store is not None and str(store.folder) in capsys.readouterr().out
    assert store.params == canonical_params(method, **kwargs) and len(store) >= 4
    maps = store.batch(store.scan_ids[:4])
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0
    if METHODS[method].absolute:
        assert maps.min() >= 0
    assert viewer.store_label(store.params).startswith(METHODS[method].label)
    assert store.folder.name in {s.folder.name for s in viewer.stores_of(demo_ws, store.meta["checkpoint_sha256"])}


def test_labels_inside_a_sentence():
    assert catalogue.method_label({"method": "guided_backprop"}, in_text=True) == "guided backprop"
    assert catalogue.method_label({"method": "lrp", "beta": 1}, in_text=True) == "LRP β=1"
    assert catalogue.method_label({"method": "integrated_gradients"}, in_text=True) == "Integrated Gradients"
    assert catalogue.label_in_text("smoothgrad") == "SmoothGrad" and catalogue.label_in_text("occlusion") == "occlusion"
