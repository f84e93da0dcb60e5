"""Every write of the scan pipeline, with its rules and its audit event, one module per area.

Shape as in ``trials.services``: check roles and rules first, then write and
``record_event`` in one ``transaction.atomic``. A refusal raises ``RuleViolation``
before anything is written (a refused upload writes only its UPLOAD_REFUSED event).

Scan processing (``scan_steps``: validate, reconstruct, quantify) is what the Celery
tasks call. Each step claims the scan with a conditional UPDATE (``scan_claims``),
does its slow work outside any transaction, and records the outcome only if its claim
still holds, so a redelivered or duplicated task never makes a second result.
Services queue no task: ``imaging.tasks`` chains the steps, and the interface that
completes an upload or retries a scan queues its next step (``tasks.queue_next_step``).

Callers import from the area's module; this package re-exports nothing.
"""
