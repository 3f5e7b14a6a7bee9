"""Every kind of job, one frozen dataclass each; importing this package registers them all."""

from lib.jobs.kinds.analyses import Biomarker, EvaluateMaps, Report
from lib.jobs.kinds.cohort import BuildDemo, CohortMeans, CreateWorkspace, Validate
from lib.jobs.kinds.maps import Explain, GroupMeans, RegionTables
from lib.jobs.kinds.preprocess import Preprocess
from lib.jobs.kinds.training import Predict, RegistrationStudy, Train

__all__ = ["Biomarker", "BuildDemo", "CohortMeans", "CreateWorkspace", "EvaluateMaps", "Explain", "GroupMeans",
           "Predict", "Preprocess", "RegionTables", "Report", "RegistrationStudy", "Train", "Validate"]
