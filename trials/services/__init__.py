"""Every write to trial data, with its business rules and its audit event, one module per area.

Shape: ``<entity>_<action>(*, actor, ...) -> Model``. Each service checks the actor's
role and the rules first, then ``full_clean()`` and ``save()`` and
``record_event(...)`` inside one ``transaction.atomic``, so a change and its audit
event commit together. A refused rule raises ``RuleViolation`` before anything is
written: no row, no file, no audit event.

Callers import from the area's module (``from trials.services.consent import consent_sign``);
this package re-exports nothing. Helpers shared by several areas are in ``_common``, the
shape of every correction in ``_corrections``.
"""
