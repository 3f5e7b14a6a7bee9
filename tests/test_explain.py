"""The non-LRP methods of lib.explain against Captum and plain loops; batching, threads, model integrity."""

import copy
import json
import threading

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop, InputXGradient, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import nn

from explain_nets import GRID, rel_l2, small_net, volumes
from lib.explain import METHODS, canonical_params, explain
from lib.explain.occlusion import infer_voxel_size, patch_starts
from lib.learn.models import build_model, default_device
from lib.data.templates import Grid

AD = 1
FAST = {"occlusion": dict(voxel_size=1.0, patch_mm=4, stride_mm=3, batch_size=5),
        "area_occlusion": dict(batch_size=3)}


def labels_for(shape, n=5, seed=0):
    return np.random.default_rng(seed).integers(0, n, size=shape).astype(np.int32)


def params_for(method, shape=GRID):
    p = dict(FAST.get(method, {}))
    if method == "area_occlusion":
        p["labels"] = labels_for(shape)
    return p


def with_softmax(model):
    return nn.Sequential(copy.deepcopy(model).eval(), nn.Softmax(dim=1))


@pytest.mark.parametrize("output", ["logit", "probability"])
def test_guided_backprop_matches_captum(output):
    model, x = small_net(), volumes()
    ref_model = copy.deepcopy(model).eval() if output == "logit" else with_softmax(model)
    ref = GuidedBackprop(ref_model).attribute(x.clone().requires_grad_(True), target=AD).detach()
    ours = explain(model, x, "guided_backprop", output=output, absolute=False)
    assert rel_l2(ours, ref) <= 1e-5
    assert torch.allclose(explain(model, x, "guided_backprop", output=output), ref.abs(), atol=1e-7)


def test_sensitivity_and_gradient_x_input_match_captum():
    model, x = small_net(1), volumes(seed=2)
    ref = Saliency(with_softmax(model)).attribute(x.clone().requires_grad_(True), target=AD).detach()  # |gradient|
    assert rel_l2(explain(model, x, "sensitivity"), ref) <= 1e-5
    ref = InputXGradient(copy.deepcopy(model).eval()).attribute(x.clone().requires_grad_(True), target=AD).detach()
    assert rel_l2(explain(model, x, "gradient_x_input", output="logit"), ref) <= 1e-5


@pytest.mark.parametrize("layer", [-1, 0, 1])
def test_gradcam_matches_captum(layer):
    model, x = small_net(2), volumes(seed=3)
    ref_model = copy.deepcopy(model).eval()
    relus = [m for m in ref_model[0] if isinstance(m, nn.ReLU)]
    for relu in (False, True):
        cam = LayerGradCam(ref_model, relus[layer]).attribute(x, target=AD, relu_attributions=relu).detach()
        ref = LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="trilinear")
        ours = explain(model, x, "gradcam", layer=layer, relu=relu)
        assert ours.shape == x.shape
        if not relu:
            assert ref.abs().sum() > 0
            assert rel_l2(ours, ref) <= 1e-5
        else:  # may be all zero for a random network
            assert torch.allclose(ours, ref, atol=1e-6 * float(ref.abs().max() + 1e-3))
            assert (ours >= 0).all()


def naive_occlusion(model, x, patch, stride, fill=0.0):
    """Rieke et al.'s loop: one occluded copy per forward pass; each voxel gets the mean drop over its patches."""
    model = copy.deepcopy(model).eval()
    out = torch.zeros_like(x)
    with torch.no_grad():
        for n in range(x.shape[0]):
            base = model(x[n:n + 1]).softmax(1)[0, AD]
            acc, cnt = torch.zeros(x.shape[2:]), torch.zeros(x.shape[2:])
            for a in patch_starts(x.shape[2], patch, stride):
                for b in patch_starts(x.shape[3], patch, stride):
                    for c in patch_starts(x.shape[4], patch, stride):
                        box = (slice(a, a + patch), slice(b, b + patch), slice(c, c + patch))
                        occluded = x[n:n + 1].clone()
                        occluded[(0, 0) + box] = fill
                        acc[box] += base - model(occluded).softmax(1)[0, AD]
                        cnt[box] += 1
            out[n, 0] = acc / cnt
    return out


def test_batched_occlusion_equals_the_one_patch_loop_for_any_batch_size():
    model, x = small_net(3), volumes(2, seed=4)
    ref = naive_occlusion(model, x, patch=4, stride=3, fill=-0.5)
    assert ref.abs().max() > 0
    maps = [explain(model, x, "occlusion", voxel_size=1.0, patch_mm=4, stride_mm=3, fill=-0.5, batch_size=b)
            for b in (1, 4, 1000)]
    for m in maps:
        assert rel_l2(m, ref) <= 1e-5
    assert torch.allclose(maps[0], maps[2], atol=1e-6)  # crops differ with the batch: float rounding only
    clipped = explain(model, x, "occlusion", voxel_size=1.0, patch_mm=4, stride_mm=3, fill=-0.5, positive_only=True,
                      batch_size=1)
    assert torch.allclose(clipped, maps[0].clamp(min=0), atol=1e-7)


def test_occlusion_matches_captum_where_the_patches_tile_the_grid():
    model, x = small_net(4), volumes(1, seed=5)
    assert patch_starts(GRID[0], 4, 1) == list(range(GRID[0] - 3))  # stride 1: Captum's windows are ours
    ours = explain(model, x, "occlusion", voxel_size=1.0, patch_mm=4, stride_mm=1, output="logit", batch_size=64)
    ref = Occlusion(copy.deepcopy(model).eval()).attribute(x, sliding_window_shapes=(1, 4, 4, 4),
                                                          strides=(1, 1, 1, 1), baselines=0.0, target=AD,
                                                          perturbations_per_eval=64)
    assert rel_l2(ours, ref) <= 1e-5


def test_area_occlusion_equals_a_loop_over_areas():
    model, x = small_net(5), volumes(2, seed=6)
    labels = labels_for(GRID, n=6, seed=1)
    ref = torch.zeros_like(x)
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        base = m(x).softmax(1)[:, AD]
        for v in range(1, 6):
            mask = torch.from_numpy(labels == v)
            occluded = x.clone()
            occluded[:, :, mask] = 0
            drop = base - m(occluded).softmax(1)[:, AD]
            for n in range(2):
                ref[n, 0][mask] = drop[n]
    for b in (1, 4):
        ours = explain(model, x, "area_occlusion", labels=labels, batch_size=b)
        assert rel_l2(ours, ref) <= 1e-5
        assert (ours[:, :, torch.from_numpy(labels == 0)] == 0).all()  # background is never occluded


def test_occlusion_patch_defaults_follow_the_grid():
    assert infer_voxel_size(Grid(1).shape) == 1.0 and infer_voxel_size(Grid(3).shape) == 3.0
    p = METHODS["occlusion"].params()
    assert p.voxels(Grid(1).shape) == (40, 20)  # Rieke et al.: 40³ at 1 mm
    assert p.voxels(Grid(2).shape) == (20, 10)
    assert p.voxels((96, 114, 96)) == (20, 10)
    assert patch_starts(10, 4, 3) == [0, 3, 6] and patch_starts(11, 4, 3) == [0, 3, 6, 7]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_results_do_not_depend_on_batch_size(method):
    model, x = small_net(6), volumes(3, seed=7)
    params = params_for(method)
    together = explain(model, x, method, **params)
    alone = torch.cat([explain(model, x[i:i + 1], method, **params) for i in range(3)])
    assert together.shape == x.shape and together.dtype == x.dtype
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-6 * float(together.abs().max()))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_threads_at_once_equal_serial_and_the_model_is_untouched(method):
    model = small_net(7).train()  # a model left in training mode must stay so, and is explained as in eval
    x1, x2 = volumes(2, seed=8), volumes(2, seed=9)
    params = params_for(method)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    serial = [explain(model, x1, method, **params), explain(model, x2, method, **params)]
    results = [None, None]
    barrier = threading.Barrier(2)

    def work(i, x):
        barrier.wait()
        for _ in range(3):
            results[i] = explain(model, x, method, **params)

    threads = [threading.Thread(target=work, args=(i, x)) for i, x in enumerate((x1, x2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        # interference between the threads would show as large differences; allow only the last-bit rounding
        # that a different number of intra-op workers may cause
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-9 * float(want.abs().max()))
    assert model.training and all(m.training for m in model.modules())
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    evaluated = explain(copy.deepcopy(model).eval(), x1, method, **params)
    assert torch.allclose(serial[0], evaluated, atol=1e-6 * float(evaluated.abs().max()))


def test_a_changed_model_is_canonised_again():
    model, x = small_net(8), volumes(2, seed=10)
    before = explain(model, x, "lrp")
    with torch.no_grad():
        model[0][0].weight.mul_(-1)  # in place, same storage
    after = explain(model, x, "lrp")
    fresh = explain(copy.deepcopy(model), x, "lrp")
    assert not torch.allclose(before, after) and torch.equal(after, fresh)


def test_canonical_params_are_json_and_cover_every_method():
    labels = labels_for(GRID)
    for name, spec in METHODS.items():
        extra = {"labels": labels} if name == "area_occlusion" else {}
        p = canonical_params(name, **extra)
        assert p["method"] == name
        assert json.loads(json.dumps(p)) == p
        assert spec.description and spec.citation and spec.fn.__doc__
    a = canonical_params("area_occlusion", labels=labels)
    assert a == canonical_params("area_occlusion", labels=labels.copy(), batch_size=64)  # batching is not a param
    changed = labels.copy()
    changed[0, 0, 0] += 1
    assert a != canonical_params("area_occlusion", labels=changed)
    assert canonical_params("occlusion")["stride_mm"] == 20.0


def test_every_method_runs_on_the_papers_model_at_3mm():
    grid = Grid(3).shape
    device = default_device()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("boehle2019", grid).to(device).eval()
    x = torch.randn((1, 1) + grid, generator=torch.Generator().manual_seed(0)).to(device)
    labels = np.zeros(grid, dtype=np.int32)
    labels[:32, :, :] = 1
    labels[32:, :38, :] = 2
    coarse = {"occlusion": dict(patch_mm=120.0, stride_mm=120.0), "area_occlusion": dict(labels=labels)}
    for method in METHODS:
        maps = [explain(model, x, method, target=t, **coarse.get(method, {})) for t in ("AD", "HC")]
        for r in maps:
            assert r.shape == x.shape and r.device == x.device and torch.isfinite(r).all(), method
        # an untrained network may give one class no positive evidence at all, never both
        assert sum(float(r.abs().sum()) for r in maps) > 0, method
