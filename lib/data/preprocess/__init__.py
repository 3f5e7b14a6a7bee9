"""Raw scans to the template grid: see :mod:`lib.data.preprocess.pipeline` (one scan),
:mod:`lib.data.preprocess.table` (a cohort table into a new workspace), :mod:`lib.data.preprocess.qc`
(measures and thresholds) and :mod:`lib.data.preprocess.native` (maps back to a scan's space)."""

from lib.data.preprocess.native import warp_to_native
from lib.data.preprocess.pipeline import ScanResult, Settings, preprocess_scan
from lib.data.preprocess.table import preprocess_table

__all__ = ["ScanResult", "Settings", "preprocess_scan", "preprocess_table", "warp_to_native"]
