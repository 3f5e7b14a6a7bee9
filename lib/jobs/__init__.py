"""Background jobs: typed requests, the job store, executors and the one worker that runs any request.

A page or the command line builds a request (:mod:`lib.jobs.kinds`: one frozen dataclass per kind of work)
and either runs it in its own process (:func:`run_as_job`, the command line) or submits it
(:func:`submit`): the request is stored as JSON in a job record of the workspace and handed to an executor
(:mod:`lib.jobs.executor`; a detached local process, or one whose chunks run on a Ray cluster), which starts
:mod:`lib.jobs.worker`. Pages find the job of what they need by the request's content key
(:func:`for_request`, :func:`find`), never by command lines.
"""

from lib.core.distribute import ClusterError  # noqa: F401  (a cluster setting or the cluster itself failed)
from lib.core.progress import Cancelled  # noqa: F401  (raised in jobs)
from lib.jobs.executor import (EXECUTORS, Executor, InProcessExecutor, LocalProcessExecutor, RayExecutor,
                              default_executor)
from lib.jobs.kinds import (Biomarker, BuildDemo, CohortMeans, CreateWorkspace, EvaluateMaps, Explain, GroupMeans,
                            Predict, Preprocess, RegionTables, Report, RegistrationStudy, Train, Validate)
from lib.jobs.request import REGISTRY, Request, RequestError, Task, option, register
from lib.jobs.runner import CANCEL_MARKER, JobProgress, JobReporter, run_as_job
from lib.jobs.store import (ACTIVE, Job, cancel, cancel_action, find, find_active, for_request, get, list_jobs,
                            may_cancel, may_submit, of_run, submit)

__all__ = ["ACTIVE", "Biomarker", "BuildDemo", "CANCEL_MARKER", "Cancelled", "ClusterError", "CohortMeans",
           "CreateWorkspace", "EvaluateMaps", "Executor", "EXECUTORS", "Explain", "GroupMeans",
           "InProcessExecutor", "Job", "JobProgress", "JobReporter", "LocalProcessExecutor", "Predict",
           "Preprocess", "RayExecutor", "RegionTables", "RegistrationStudy", "REGISTRY", "Report", "Request",
           "RequestError", "Task", "Train", "Validate", "cancel", "cancel_action", "default_executor", "find",
           "find_active", "for_request", "get", "list_jobs", "may_cancel", "may_submit", "of_run", "option",
           "register", "run_as_job", "submit"]
