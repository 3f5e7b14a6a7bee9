"""Brain-area occlusion (computed in :mod:`lib.explain.occlusion`): needs an atlas, whose name becomes the
label array the method occludes area by area."""

from lib.explain.catalogue import Method, register
from lib.explain.occlusion import AreaOcclusionParams, area_occlusion

register(Method(
    "area_occlusion", "Brain-area occlusion", area_occlusion, AreaOcclusionParams,
    "Drop of the target probability when each atlas area is set to 0 in turn",
    "Rieke et al. 2018, MLCN workshop, LNCS 11038",
    needs_atlas=True, presets=(), order=50))
