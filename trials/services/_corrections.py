"""The shape every correction shares.

A correction fixes a value that was recorded wrongly (a typo, a misread label). It is
never silent: a reason is required, the audit event keeps the old and the new value
(21 CFR 11.10(e), ALCOA+), and the new values pass the rules creation enforces. Rules
about the *current* state of other records (is the subject still enrolled, is the
batch still released) are not re-asked: they held when the record was created, and
a typo in a record of a subject who has since completed must stay correctable.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from audit.chain import diff
from config.errors import RuleViolation


#
# A correction fixes a value that was recorded wrongly (a typo, a misread label). It is
# never silent: a reason is required, the audit event keeps the old and the new value
# (21 CFR 11.10(e), ALCOA+), and the new values pass the rules creation enforces. Rules
# about the *current* state of other records (is the subject still enrolled, is the
# batch still released) are not re-asked: they held when the record was created, and
# a typo in a record of a subject who has since completed must stay correctable.
def _require_correctable(what: str, fields: dict, *, correctable: Iterable[str], locked: dict[str, str]) -> None:
    """Refuse any field outside ``correctable`` before a value is looked at.

    ``locked`` maps a field to why it may not be corrected; any other field is unknown.
    """
    for name in fields:
        if name in correctable:
            continue
        if name in locked:
            raise RuleViolation(
                f"{name}_not_correctable",
                f"The {what}'s {name} cannot be corrected: {locked[name]}",
                field=name,
            )
        raise RuleViolation(
            "unknown_field",
            f"A {what} has no correctable field {name!r} (correctable: {', '.join(sorted(correctable))}).",
            field=name,
        )


def _require_change(what: str, before: dict, after: dict) -> dict:
    changes = diff(before, after)
    if not changes:
        raise RuleViolation("no_change", f"The correction changes nothing in this {what}.")
    return changes


def _apply(obj, fields: dict) -> None:
    for name, value in fields.items():
        setattr(obj, name, value)


def _in_range(value, low, high, *, field: str, what: str) -> None:
    if value is not None and not (Decimal(low) <= Decimal(value) <= Decimal(high)):
        raise RuleViolation(
            f"{field}_out_of_range",
            f"{what} must be between {low} and {high}; got {value}.",
            field=field,
        )


def _positive(value, *, field: str, what: str) -> None:
    if value is not None and not value > 0:
        raise RuleViolation(f"{field}_not_positive", f"{what} must be greater than zero; got {value}.", field=field)


def _not_negative(value, *, field: str, what: str) -> None:
    """None passes (not given); a number must be finite and >= 0."""
    if value is None:
        return
    number = Decimal(str(value))
    if number.is_nan() or number < 0:
        raise RuleViolation(f"{field}_negative", f"{what} cannot be negative; got {value}.", field=field)


_IDS = {
    "id": "it is the record's identity.",
    "pk": "it is the record's identity.",
    "created_at": "it is set by the system.",
    "trial": "a record never moves to another trial.",
}
