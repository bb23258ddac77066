"""The bounds Core puts on a job request and on its listings, shared with ctl.

ctl checks an option against them before anything is sent, so a value Core
would refuse exits 2 with the accepted range, as every bad option does.
Constants only: ``ctl exec`` imports this on its fast path.
"""

JOB_MIN_TIMEOUT = 0.1  # seconds
JOB_MAX_SECONDS = 7 * 86400.0  # a job's timeout and its wait for an offline node
JOB_MAX_OUTPUT_CAP = 16 * 1024 * 1024  # bytes per stream per node
JOBS_PAGE = 1000  # GET /api/v1/jobs?limit=
AUDIT_ROWS = 10000  # GET /api/v1/audit?limit=
ALERT_ROWS = 10000  # alert history and deliveries
