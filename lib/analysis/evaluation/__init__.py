"""Evaluating explanations: region perturbation (AOPC), cascading randomisation, ground-truth localisation.

Heatmaps have no ground truth on real data, so three measurements stand in for one:

**Region perturbation** (Samek et al. 2017; seed 004 §2.3). The volume is divided into regions,
cubes of ``cube_mm`` on a uniform grid (only cubes touching the brain) or the regions of an atlas.
Each region gets a score from the map (the sum of its relevance, or of its absolute relevance) and
the regions are perturbed cumulatively, most relevant first (MoRF): ``x⁽⁰⁾ = x``,
``x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k)`` for ``k = 1 … L``. With ``f`` the explained class's softmax probability
(or logit)::

    AOPC = 1/(L+1) · Σ_{k=0}^{L} ( f(x⁽⁰⁾) − f(x⁽ᵏ⁾) ),  averaged over scans

(the k = 0 term is 0, as in Samek's formula). A random order of the same regions is the baseline:
a map is informative about the model when its MoRF AOPC exceeds the random one. The replacement
``g`` writes, in the model's normalised input space, ``zero`` (0 = the training scans' mean
intensity, what :func:`lib.explain.occlusion` fills), ``mean`` (the scan's mean over the brain),
``uniform`` noise between the scan's brain minimum and maximum (Samek's choice; one noise volume
per scan, shared by every order and method) or ``blur`` (the scan smoothed with a Gaussian of
``blur_mm`` standard deviation). Perturbed copies go through the model in batches.

**Sanity check** (Adebayo et al. 2018). The model's weight layers are re-initialised one at a
time from the output layer down to the first convolution (cascading; a convolution's BatchNorm is
reset with it, since its statistics belong to the trained filters), and the map of the same scans
is recomputed at every step. Each map is compared with the original map within the brain by
Spearman rank correlation (of the maps as the method returns them, and of their absolute values),
SSIM (3D, Gaussian window σ = 1.5 voxels, on absolute maps scaled to [0, 1]) and the overlap of the
top ``top_fraction`` voxels by absolute relevance. A method **passes** when |ρ| of its maps after the
whole network is randomised (mean over the scans) falls below the threshold (default 0.5): its maps
depend on what the model learnt. A constant map (e.g. Grad-CAM clipped to zero everywhere) shares
no ranking with another map: ρ = 0 and top-k overlap 0 (1 if both maps are identical).

**Localisation** (demo cohort, where the atrophy is known). The ground-truth mask of a scan is the
set of voxels whose local volume loss (``ground_truth/atrophy/*``) is at least ``min_loss``
(``truth="atrophy"``), or the scan's own labels of the regions the generator displaced by at least
``min_mm`` (``truth="regions"``); resampled to the run's grid with nilearn (linear for the loss map,
nearest for labels). Within the brain (template > 0.05, plus the mask): *relevance mass accuracy*
= positive relevance inside the mask / all positive relevance (Arras et al. 2022); *voxel AUC* =
ROC AUC of voxel relevance against the mask (ties count half); *pointing game* (Zhang et al. 2018)
= whether the most relevant voxel lies in the mask (dilated by ``tolerance_mm``). Chance levels
are reported with them: the mask's share of the brain for mass accuracy and pointing, 0.5 for AUC.

Everything runs on ``lib.learn.models.default_device()``. Results of :func:`evaluate` are cached per
(check, method) in ``<workspace>/cache/evaluation/<key>/`` where the key hashes the checkpoint's
SHA-256, the method's canonical parameters, the settings the check depends on, the scans and their
content key (and, for localisation, the ground-truth table): a second request is read from disk,
and an interrupted job keeps the checks it finished; a result whose files do not match their
checksums (:mod:`lib.core.cache`) counts as missing and is recomputed. Maps come from a finished heatmap store of
the run (:mod:`lib.explain.heatmaps`) when there is one, else they are computed for the chosen scans only.

The package: :mod:`.settings` (what is asked for), :mod:`.perturbation`, :mod:`.sanity` and
:mod:`.localisation` (the three measurements), :mod:`.data` (scans, maps, the result cache),
:mod:`.orchestration` (:class:`Evaluation`: keys and the computation) and :mod:`.report` (tables and the text
report).
"""

from lib.analysis.evaluation.data import select_scans
from lib.analysis.evaluation.localisation import ground_truth_mask, localisation_scores, voxel_auc
from lib.analysis.evaluation.orchestration import Evaluation, evaluate
from lib.analysis.evaluation.perturbation import (RegionIndex, aopc, compact_labels, cube_partition, morf_order,
                                                  perturbation_curve, random_order, region_scores,
                                                  replacement_volume)
from lib.analysis.evaluation.report import (RANK_CRITERIA, aopc_curves, chance_levels, format_report,
                                            localisation_table, ranking_rule, sanity_table, summary)
from lib.analysis.evaluation.sanity import (_spearman, _top, cascade, map_similarity, sanity_verdict, ssim3d,
                                            weight_layers)
from lib.analysis.evaluation.settings import (CACHE_VERSION, CHECKS, DEFAULT_METHODS, PERTURB_FIELDS,
                                              REPLACEMENTS, SANITY_FIELDS, SCAN_FIELDS, TRUTH_FIELDS, MethodRequest,
                                              Settings, parse_method)
from lib.data.templates import brain_mask  # the brain of every scan (the template's), where the page finds it

__all__ = ["CACHE_VERSION", "CHECKS", "DEFAULT_METHODS", "PERTURB_FIELDS",
           "REPLACEMENTS", "SANITY_FIELDS", "SCAN_FIELDS", "TRUTH_FIELDS", "Evaluation", "MethodRequest",
           "RANK_CRITERIA", "RegionIndex", "Settings", "aopc", "aopc_curves", "brain_mask", "cascade", "chance_levels",
           "compact_labels", "cube_partition", "evaluate", "format_report", "ground_truth_mask",
           "localisation_scores", "localisation_table", "map_similarity", "morf_order", "parse_method",
           "perturbation_curve", "random_order", "region_scores", "replacement_volume", "sanity_table",
           "ranking_rule", "sanity_verdict", "select_scans", "ssim3d", "summary", "voxel_auc", "weight_layers"]
