"""The patch-individual filter (PIF) network of Eitel et al. 2021a: the layer, its explanations, its training.

LRP through the PIF layer is checked against zennit on the same network written with plain modules: one
Conv3d (and BatchNorm3d) per patch applied to a slice of the zero-padded feature map, outputs concatenated.
zennit propagates relevance through the slicing, padding and concatenation by their gradients, so the
reference shares no code with the engine's patch handling.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import GuidedBackprop, LayerMapComposite
from zennit.rules import AlphaBeta, Epsilon, Flat, Pass, ZPlus
from zennit.types import Activation, BatchNorm, Convolution

from explain_nets import GRID, randomise, rel_l2, volumes
from test_explain_lrp import zennit_relevance
from lib.cli import main
from lib.explain import explain
from lib.explain.canonizers import PatchOp, plan_for
from lib.explain.lrp import LRPParams, lrp
from lib.learn.models import REGISTRY, PatchIndividualFilters3d, Pif2021, build_model

AD = 1


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    return randomise(net, torch.Generator().manual_seed(seed), weighted=(PatchIndividualFilters3d,))


def pif_net(seed: int = 0, *, patches=(2, 2, 2), overlap: bool = True, kernel: int = 3) -> nn.Sequential:
    """Conv block, then a PIF block (4×5×4 map cut 2×2×2: patches 2×3×2, the map zero-padded in y to 6; kernel
    3 makes the convolution pad x and z but not y), then a dense head. For ``GRID``."""
    pif = PatchIndividualFilters3d(4, (4, 5, 4), filters=2, patches=patches, kernel=kernel, overlap=overlap)
    c, *o = pif.out_shape
    net = nn.Sequential(
        nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2)),
        nn.Sequential(pif, nn.BatchNorm3d(c), nn.ReLU()),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(c * o[0] * o[1] * o[2], 7), nn.ReLU(), nn.Linear(7, 2))
    return _randomise(net, seed)


def pif_first_net(seed: int = 0) -> nn.Sequential:
    """A PIF layer straight on the (signed) volume: the αβ and z^B rules split its input by sign."""
    pif = PatchIndividualFilters3d(1, GRID, filters=2, patches=(2, 3, 2), kernel=3)
    net = nn.Sequential(pif, nn.ReLU(), nn.Flatten(), nn.Linear(int(torch.tensor(pif.out_shape).prod()), 2))
    return _randomise(net, seed)


class Patchwise(nn.Module):
    """``pif`` (optionally followed by its BatchNorm ``bn``) as one plain Conv3d (+ BatchNorm3d) per patch."""

    def __init__(self, pif: PatchIndividualFilters3d, bn: nn.BatchNorm3d | None):
        super().__init__()
        self.pif = pif
        f = pif.filters
        self.patches = nn.ModuleList()
        for p in range(pif.n_patches):
            conv = nn.Conv3d(pif.in_channels, f, pif.kernel, padding=pif.conv_padding)
            sl = slice(p * f, (p + 1) * f)
            with torch.no_grad():
                conv.weight.copy_(pif.weight[sl])
                conv.bias.copy_(pif.bias[sl])
            mods = [conv]
            if bn is not None:
                b = nn.BatchNorm3d(f, eps=bn.eps).eval()
                with torch.no_grad():
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(b, name).copy_(getattr(bn, name)[sl])
                mods.append(b)
            self.patches.append(nn.Sequential(*mods))

    def forward(self, x):
        pif = self.pif
        pad = []
        for s, p in zip(reversed(pif.input_shape), reversed(pif.padded)):
            pad += [0, p - s]
        x = F.pad(x, pad)
        outs = []
        for (ox, oy, oz), seq in zip(pif.origins, self.patches):
            px, py, pz = pif.patch_size
            outs.append(seq(x[:, :, ox:ox + px, oy:oy + py, oz:oz + pz]))
        return torch.cat(outs, 1)


def reference(net: nn.Sequential) -> nn.Sequential:
    """``net`` with its PIF layer (and the BatchNorm after it) written as per-patch plain modules."""
    ref = copy.deepcopy(net)
    for i, m in enumerate(ref):
        if isinstance(m, PatchIndividualFilters3d):
            ref[i] = Patchwise(m, None)
        elif isinstance(m, nn.Sequential) and isinstance(m[0], PatchIndividualFilters3d):
            bn = m[1] if isinstance(m[1], nn.BatchNorm3d) else None
            ref[i] = nn.Sequential(Patchwise(m[0], bn), *list(m)[2 if bn is not None else 1:])
    return ref.eval()


def layer_map(conv_rule, dense_rule=None):
    return LayerMapComposite([(Activation, Pass()), (BatchNorm, Pass()), (Convolution, conv_rule),
                              (nn.Linear, dense_rule or conv_rule)], canonizers=[SequentialMergeBatchNorm()])


def test_layer_splits_and_reassembles_like_per_patch_convolutions():
    net = pif_net(0)
    pif = net[1][0]
    assert pif.n_patches == 9 and pif.patch_size == (2, 3, 2) and pif.padded == (4, 6, 4)
    assert pif.conv_padding == (1, 0, 1) and pif.out_shape == (18, 2, 1, 2)
    assert pif.origins[-1] == (1, 1, 1)  # the one overlapping patch, shifted by half a patch
    x = torch.randn(2, 4, 4, 5, 4)
    assert torch.allclose(pif(x), Patchwise(pif, None)(x), atol=1e-6)
    x = volumes(2)
    assert torch.allclose(net(x), reference(net)(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"built for inputs \(N, 4, 4, 5, 4\)"):
        pif(torch.zeros(1, 4, 5, 5, 4))


def test_registry_model_follows_the_thesis_layout():
    assert "pif2021" in REGISTRY
    m = build_model("pif2021", (193, 229, 193))  # the 1 mm grid: the authors' 12 + 2 overlapping patches
    pif = m[1][0]
    assert (pif.grid, pif.n_patches, pif.filters, pif.kernel) == ((2, 3, 2), 14, 3, 3)
    small = build_model("pif2021", (65, 77, 65), filters=4, patches=(1, 2, 1), overlap=False)
    assert small[1][0].n_patches == 2 and small[1][0].filters == 4
    assert small(torch.zeros(2, 1, 65, 77, 65)).shape == (2, 2)
    # BatchNorm and ReLU after the PIF layer, the paper's dense head after it
    assert isinstance(m[1][1], nn.BatchNorm3d) and isinstance(m[-1], nn.Linear) and m[-1].out_features == 2


@pytest.mark.parametrize("make", [pif_net, pif_first_net])
def test_gradient_methods_are_exact(make):
    net = make(1).double()
    x = volumes(3, seed=2, dtype=torch.float64)
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xx).softmax(1)[:, AD].sum(), xx)
    assert torch.allclose(explain(net, x, "sensitivity", absolute=False), g, rtol=1e-10, atol=1e-14)
    assert torch.allclose(explain(net, x, "gradient_x_input"), x * g, rtol=1e-10, atol=1e-14)
    # guided backprop (zennit's composite on the PIF net itself: it only changes the ReLUs' backward pass)
    xx = x.clone().requires_grad_(True)
    with Gradient(copy.deepcopy(net), GuidedBackprop()) as attributor:
        _, ref = attributor(xx, torch.eye(2, dtype=x.dtype)[[AD] * len(x)])
    ours = explain(net, x, "guided_backprop", output="logit", absolute=False)
    assert torch.allclose(ours, ref, rtol=1e-8, atol=1e-14)
    assert bool((ours != g).any())  # guided differs from the plain gradient


@pytest.mark.parametrize("composite,params", [
    (lambda: layer_map(AlphaBeta(1.0, 0.0, zero_params=["bias"])), dict(beta=0.0)),
    (lambda: layer_map(AlphaBeta(2.0, 1.0, zero_params=["bias"])), dict(beta=1.0)),
    (lambda: layer_map(Epsilon(0.1, zero_params=["bias"])), dict(composite="epsilon", epsilon=0.1)),
    (lambda: layer_map(Epsilon(0.1)), dict(composite="epsilon", epsilon=0.1, bias=True)),
    (lambda: layer_map(ZPlus(zero_params=["bias"]), Epsilon(0.1, zero_params=["bias"])),
     dict(composite="epsilon_plus", epsilon=0.1)),
])
@pytest.mark.parametrize("make", [pif_net, pif_first_net])
def test_lrp_equals_zennit_on_per_patch_convolutions(composite, params, make):
    net, x = make(2), volumes(3, seed=3)
    ref = zennit_relevance(reference(net), x, composite())
    ours = explain(net, x, "lrp", **params)
    assert rel_l2(ours, ref) <= 1e-4


def test_flat_rule_equals_zennit_where_no_padding_is_inserted():
    """Flat and w² spread relevance regardless of the input, so where the split pads the map the engine keeps
    relevance off the padding (see the conservation test) while the plain reference would lose it there; on a
    grid that the patches tile exactly the two agree."""
    net, x = pif_net(2, patches=(2, 1, 2)), volumes(3, seed=3)
    assert net[1][0].padded == (4, 5, 4)
    ref = zennit_relevance(reference(net), x, layer_map(Flat()))
    assert rel_l2(explain(net, x, "lrp", conv_rule="flat", dense_rule="flat", first_rule="same"), ref) <= 1e-4


@pytest.mark.parametrize("first,conv,dense,maxpool", [
    ("same", "alpha_beta", "alpha_beta", "winner"),
    ("zbox", "alpha_beta", "epsilon", "proportional"),
    ("flat", "zplus", "epsilon", "winner"),
    ("wsquare", "epsilon", "zplus", "winner"),
    ("same", "flat", "epsilon", "winner"),
])
@pytest.mark.parametrize("make", [pif_net, pif_first_net])
def test_lrp_conserves_relevance_through_the_pif_layer(first, conv, dense, maxpool, make):
    """Zero biases, BatchNorm passed through: every layer, the patch split included, passes on all relevance
    (overlapping patches add their relevance back onto the shared voxels)."""
    net = make(5).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear, PatchIndividualFilters3d)):
                m.bias.zero_()
    x = volumes(3, seed=5, dtype=torch.float64)
    logits = net(x).detach()
    assert (logits.max(1).values > 0).all()  # an output with no positive contribution passes nothing on (z⁺)
    target = logits.argmax(1)
    params = LRPParams(first_rule=first, conv_rule=conv, dense_rule=dense, maxpool=maxpool, bias=True,
                       batchnorm="pass", epsilon=1e-12, stabilizer=1e-12)
    r, per_layer = lrp(net, x, target, params, keep_layers=True)
    start = logits.softmax(1).gather(1, target[:, None])[:, 0]
    plan = plan_for(net, x.device, x.dtype, "pass")
    assert any(isinstance(op, PatchOp) for op in plan.ops)
    for i, rl in enumerate(per_layer):
        assert torch.allclose(rl.flatten(1).sum(1), start, rtol=1e-8, atol=0), i


def test_gradcam_on_the_pif_block_places_each_patch_back():
    net = pif_net(3).double()
    x = volumes(2, seed=6, dtype=torch.float64)
    pif = net[1][0]
    acts = {}
    net[1].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    xx = x.clone().requires_grad_(True)
    out = net(xx)
    (g,) = torch.autograd.grad(out[:, AD].sum(), acts["a"])
    a = acts["a"].detach()
    w = g.mean(dim=(2, 3, 4), keepdim=True)
    per_patch = F.relu((w * a).unflatten(1, (pif.n_patches, pif.filters)).sum(2))
    per_patch = F.interpolate(per_patch, size=pif.patch_size, mode="trilinear", align_corners=False)
    total = torch.zeros(2, *pif.padded, dtype=x.dtype)
    count = torch.zeros(pif.padded, dtype=x.dtype)
    px, py, pz = pif.patch_size
    for p, (ox, oy, oz) in enumerate(pif.origins):
        total[:, ox:ox + px, oy:oy + py, oz:oz + pz] += per_patch[:, p]
        count[ox:ox + px, oy:oy + py, oz:oz + pz] += 1
    grid = (total / count)[:, None, :4, :5, :4]
    expected = F.interpolate(grid, size=GRID, mode="trilinear", align_corners=False)
    assert torch.allclose(explain(net, x, "gradcam"), expected, rtol=1e-10, atol=1e-14)
    # an earlier block is an ordinary convolution
    assert explain(net, x, "gradcam", layer=0).shape == x.shape


def test_occlusion_on_the_pif_net_equals_the_one_patch_loop():
    """The cropped forward pass of batched occlusion stops at the patch split (which is not local)."""
    from test_explain import naive_occlusion

    net, x = pif_net(5), volumes(2, seed=7)
    ref = naive_occlusion(net, x, patch=4, stride=3, fill=-0.5)
    assert ref.abs().max() > 0
    m = explain(net, x, "occlusion", patch_mm=4, stride_mm=3, voxel_size=1.0, fill=-0.5, batch_size=7)
    assert rel_l2(m, ref) <= 1e-5


def test_train_and_explain_pif_end_to_end(demo_ws, demo_run, capsys, monkeypatch):
    from lib.learn.runs import load_run

    root = str(demo_ws.root)
    assert main(["--workspace", root, "train", "--model", "pif2021", "--epochs", "2", "--batch-size", "6",
                 "--lr", "1e-3", "--run-id", "pif-run"]) == 0
    run = load_run(demo_ws, "pif-run")
    assert run.train_config.model == "pif2021" and run.status == "done"
    model, _ = run.load_model("cpu")
    assert isinstance(model, Pif2021)
    assert main(["--workspace", root, "explain", "--run", "pif-run", "--method", "lrp"]) == 0
    assert main(["--workspace", root, "explain", "--run", "pif-run", "--method", "gradcam"]) == 0
    capsys.readouterr()
    assert main(["--workspace", root, "evaluate", "--run", "pif-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["balanced_accuracy"] <= 1.0

    # compared with the Böhle run of the same seed: scores, epochs, time, and the overlap of top LRP regions
    from lib.views import model_comparison

    assert main(["--workspace", root, "regions", "--run", "fixture-run", "pif-run"]) == 0
    per_run, per_model, overlap = model_comparison.comparison(demo_ws, [demo_run, run])
    assert list(per_model["model"]) == ["boehle2019", "pif2021"] and list(per_model["runs"]) == [1, 1]
    assert (per_run["time_to_best_s"] > 0).all() and (per_run["best_epoch"] >= 1).all()
    assert list(overlap["pairs"]) == ["boehle2019 × pif2021"] and list(overlap["n"]) == [1]
    assert overlap.filter(like="top10").stack().between(0, 100).all()
    table = model_comparison.markdown(per_model, overlap)
    assert "| pif2021 | 1 |" in table and "| boehle2019 × pif2021 | 1 |" in table

    # the Training page shows the comparison when the runs shown span two models
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RELEVANCE_ATLAS_WORKSPACE", root)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/training.py").run()
    [shown] = [m for m in at.multiselect if m.label == "Runs to show"]
    shown.set_value(["fixture-run", "pif-run"]).run()
    assert not at.exception
    assert "Model comparison" in [h.value for h in at.subheader]
    assert any("| boehle2019 × pif2021 | 1 |" in m.value for m in at.markdown)
    assert any("maximum of 28%" in c.value for c in at.caption)
