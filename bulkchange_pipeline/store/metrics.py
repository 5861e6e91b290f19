"""Daily operational metrics (the seed's "Monitoring and Metrics"), computed from the store alone.

For one UTC day [day, day + 1):
- processing time per change type and carrier: for device rows that finished that day after being
  worked on (PROCESSED or API_FAILED), seconds from when the row could start (the bulk change's
  submission, or the row's effective date if later) to ``processed_at``;
- device error rate per carrier and error class: of the rows that finished that day (cancelled rows
  aside), the share that ended API_FAILED (the carrier refused, or retries ran out) or ERROR
  (refused at validation, or an internal error);
- carrier call error rate per carrier and class: of the carrier exchanges logged that day (log rows
  with a request), the share that failed, by class: ``http_4xx``, ``http_5xx``, ``http_other`` (an
  error in an HTTP 2xx/3xx answer) and ``no_response`` (timeout, connection error);
- queue depth, as of the computation (not of the day): bulk changes waiting for a run and device
  rows in PROCESSING.

Percentiles use linear interpolation between closest ranks (numpy's default), so a small fixed
data set can be checked by hand. Carrier API response *times* are not recorded per call by the
store (log rows carry no duration), so they are not computed here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
import sqlalchemy as sa

from ..domain import BulkChangeStatus, DeviceChangeStatus, change_type_name
from .schema import bulk_change, bulk_change_log, device_change, service_provider

S = DeviceChangeStatus
ERROR_CLASSES = {S.API_FAILED.value: "api_failed", S.ERROR.value: "error"}
CALL_CLASSES = ("http_4xx", "http_5xx", "http_other", "no_response")


@dataclass(frozen=True)
class Timing:
    count: int
    p50: float
    p95: float


@dataclass
class DailyMetrics:
    day: date
    processing: dict[tuple[str, str], Timing] = field(default_factory=dict)  # (change type label, carrier)
    finished_rows: dict[str, int] = field(default_factory=dict)  # carrier -> rows finished (not cancelled)
    device_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (carrier, class) -> rows
    calls: dict[str, int] = field(default_factory=dict)  # carrier -> carrier exchanges logged
    call_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (carrier, class) -> failed exchanges
    response_ms: dict[str, Timing] = field(default_factory=dict)  # carrier -> API response time
    bulk_changes_waiting: int = 0
    bulk_changes_scheduled: int = 0
    rows_processing: int = 0

    def device_error_rate(self, carrier: str, error_class: str) -> float:
        total = self.finished_rows.get(carrier, 0)
        return self.device_errors.get((carrier, error_class), 0) / total if total else 0.0

    def call_error_rate(self, carrier: str, error_class: str) -> float:
        total = self.calls.get(carrier, 0)
        return self.call_errors.get((carrier, error_class), 0) / total if total else 0.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


def call_class(response_status: str | None) -> str:
    """The error class of a failed carrier exchange from its HTTP status (None: no answer)."""
    if response_status is None or not str(response_status).isdigit():
        return "no_response"
    code = int(response_status)
    return "http_4xx" if 400 <= code < 500 else "http_5xx" if code >= 500 else "http_other"


def compute_daily_metrics(engine: sa.Engine, day: date, now: datetime) -> DailyMetrics:
    """Metrics of one UTC day; queue depth as of ``now``."""
    start = datetime.combine(day, time())
    end = start + timedelta(days=1)
    m = DailyMetrics(day=day)
    dc, bc, sp, log = device_change.c, bulk_change.c, service_provider.c, bulk_change_log.c
    with engine.connect() as conn:
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        result = conn.execution_options(yield_per=20_000).execute(
            sa.select(bc.change_type, sp.carrier, bc.created_at, dc.effective_at, dc.processed_at, dc.status)
            .select_from(
                device_change.join(bulk_change, bc.id == dc.bulk_change_id).join(
                    service_provider, sp.id == bc.service_provider_id
                )
            )
            .where(dc.processed_at >= start, dc.processed_at < end, dc.status != S.CANCELLED.value)
        )
        finished: dict[str, int] = defaultdict(int)
        errors: dict[tuple[str, str], int] = defaultdict(int)
        for change_type, carrier, created_at, effective_at, processed_at, status in result:
            finished[carrier] += 1
            if status in ERROR_CLASSES:
                errors[(carrier, ERROR_CLASSES[status])] += 1
            if status in (S.PROCESSED.value, S.API_FAILED.value):
                began = max(created_at, effective_at) if effective_at else created_at
                durations[(change_type_name(change_type), carrier)].append(
                    max((processed_at - began).total_seconds(), 0.0)
                )
        m.finished_rows, m.device_errors = dict(finished), dict(errors)
        m.processing = {
            key: Timing(len(v), percentile(v, 50), percentile(v, 95)) for key, v in sorted(durations.items())
        }

        calls: dict[str, int] = defaultdict(int)
        call_errors: dict[tuple[str, str], int] = defaultdict(int)
        for carrier, status, has_errors, n in conn.execute(
            sa.select(sp.carrier, log.response_status, log.has_errors, sa.func.count())
            .select_from(
                bulk_change_log.join(bulk_change, bc.id == log.bulk_change_id).join(
                    service_provider, sp.id == bc.service_provider_id
                )
            )
            .where(log.created_at >= start, log.created_at < end, log.request_text.is_not(None))
            .group_by(sp.carrier, log.response_status, log.has_errors)
        ):
            calls[carrier] += n
            if has_errors:
                call_errors[(carrier, call_class(status))] += n
        m.calls, m.call_errors = dict(calls), dict(call_errors)

        times: dict[str, list[float]] = defaultdict(list)
        for carrier, ms in conn.execution_options(yield_per=20_000).execute(
            sa.select(sp.carrier, log.response_ms)
            .select_from(
                bulk_change_log.join(bulk_change, bc.id == log.bulk_change_id).join(
                    service_provider, sp.id == bc.service_provider_id
                )
            )
            .where(log.created_at >= start, log.created_at < end, log.response_ms.is_not(None))
        ):
            times[carrier].append(float(ms))
        m.response_ms = {c: Timing(len(v), percentile(v, 50), percentile(v, 95)) for c, v in sorted(times.items())}

        live = (bc.deleted_at.is_(None), bc.process_changes.is_(True))
        m.bulk_changes_waiting = conn.execute(
            sa.select(sa.func.count()).where(
                *live,
                sa.or_(
                    bc.status == BulkChangeStatus.NEW.value,
                    sa.and_(bc.status == BulkChangeStatus.SCHEDULED.value, bc.effective_at <= now),
                ),
            )
        ).scalar_one()
        m.bulk_changes_scheduled = conn.execute(
            sa.select(sa.func.count()).where(
                *live, bc.status == BulkChangeStatus.SCHEDULED.value, bc.effective_at > now
            )
        ).scalar_one()
        m.rows_processing = conn.execute(
            sa.select(sa.func.count())
            .select_from(device_change.join(bulk_change, bc.id == dc.bulk_change_id))
            .where(dc.status == S.PROCESSING.value, bc.deleted_at.is_(None))
        ).scalar_one()
    return m


def metric_values(m: DailyMetrics) -> dict[str, float | int]:
    """Flat numeric metrics, keyed so the Dagster UI plots each series over the daily partitions."""
    out: dict[str, float | int] = {
        "queue/bulk_changes_waiting": m.bulk_changes_waiting,
        "queue/bulk_changes_scheduled": m.bulk_changes_scheduled,
        "queue/rows_processing": m.rows_processing,
        "rows_finished": sum(m.finished_rows.values()),
        "carrier_calls": sum(m.calls.values()),
    }
    for (change_type, carrier), t in m.processing.items():
        out[f"processing_seconds_p50/{change_type}/{carrier}"] = t.p50
        out[f"processing_seconds_p95/{change_type}/{carrier}"] = t.p95
        out[f"rows_timed/{change_type}/{carrier}"] = t.count
    for carrier in sorted(m.finished_rows):
        for error_class in ERROR_CLASSES.values():
            out[f"error_rate/{carrier}/{error_class}"] = m.device_error_rate(carrier, error_class)
    for carrier, t in m.response_ms.items():
        out[f"api_response_ms_p50/{carrier}"] = t.p50
        out[f"api_response_ms_p95/{carrier}"] = t.p95
    for carrier in sorted(m.calls):
        for error_class in CALL_CLASSES:
            out[f"call_error_rate/{carrier}/{error_class}"] = m.call_error_rate(carrier, error_class)
    return out


def metrics_markdown(m: DailyMetrics) -> str:
    """The day's numbers as markdown tables for the asset's page."""
    lines = [
        f"### Bulk change metrics for {m.day.isoformat()} (UTC)",
        "",
        "| change type | carrier | rows | p50 s | p95 s |",
        "|---|---|---:|---:|---:|",
        *[f"| {ct} | {carrier} | {t.count} | {t.p50:.1f} | {t.p95:.1f} |" for (ct, carrier), t in m.processing.items()],
        "",
        "| carrier | rows finished | API_FAILED rate | ERROR rate | carrier calls | failed calls |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for carrier in sorted(set(m.finished_rows) | set(m.calls)):
        failed_calls = sum(n for (c, _), n in m.call_errors.items() if c == carrier)
        lines.append(
            f"| {carrier} | {m.finished_rows.get(carrier, 0)} | {m.device_error_rate(carrier, 'api_failed'):.1%} | "
            f"{m.device_error_rate(carrier, 'error'):.1%} | {m.calls.get(carrier, 0)} | {failed_calls} |"
        )
    if m.response_ms:
        lines += ["", "| carrier | API calls timed | response p50 ms | p95 ms |", "|---|---:|---:|---:|"]
        lines += [f"| {c} | {t.count} | {t.p50:.1f} | {t.p95:.1f} |" for c, t in m.response_ms.items()]
    lines += [
        "",
        (
            f"Queue now: {m.bulk_changes_waiting} bulk changes waiting for a run, {m.bulk_changes_scheduled} scheduled "
            f"for later, {m.rows_processing} device rows in PROCESSING."
        ),
    ]
    return "\n".join(lines)
