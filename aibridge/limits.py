"""Bounds of a subscriber's status report (ReportStatus), shared by the config service,
which rejects a report beyond them (they fit its database columns), and the daemons,
which keep their free-text diagnostics within them."""

from __future__ import annotations

MAX_NODE_ID = 200
MAX_VERSION = 40
MAX_REPORT_ERRORS = 1000
MAX_REPORT_NAME = 200  # errors[].provider_name
MAX_REPORT_TEXT = 2000  # errors[].message and error_detail
