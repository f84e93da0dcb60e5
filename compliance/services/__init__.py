"""Compliance writes, one module per area: exports (``exports``), audit-trail verification (``audit_trail``).

Callers import from the area's module; this package re-exports nothing.
"""
