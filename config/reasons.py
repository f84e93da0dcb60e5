"""What a person must say before a recorded value changes: a reason with substance, and,
for a decision that cannot be undone, an explicit confirmation.

Every service that takes a reason calls ``require_reason``; every service that takes a
final decision calls ``require_confirmation``. Both raise ``RuleViolation`` (400) before
anything is written, on the input at fault (``reason``, ``confirm``).
"""

from __future__ import annotations

from config.errors import RuleViolation

# The reason is the audit trail's answer to "why did this change?" (21 CFR 11.10(e)):
# this many non-space characters is the shortest that can say what and why
# ("CRF typo, visit 2" passes; "typo" does not).
MIN_REASON_CHARACTERS = 8

# Stand-ins people type to get past a required field. Compared without case, spaces
# and trailing punctuation.
PLACEHOLDER_REASONS = frozenset(
    {
        "n/a",
        "na",
        "n.a",
        "none",
        "nil",
        "null",
        "x",
        "xx",
        "xxx",
        "-",
        "--",
        "test",
        "tests",
        "testing",
        "asdf",
        "qwerty",
        "reason",
        "no reason",
        "tbd",
        "todo",
        "ok",
        "okay",
        "yes",
        "no",
        "fix",
        "fixed",
        "change",
        "changed",
        "update",
        "updated",
        "edit",
        "edited",
        "correction",
        "corrected",
        "typo",
        "see above",
        "as above",
        "same",
        "whatever",
        "dummy",
        "placeholder",
        "nothing",
        "unknown",
    }
)


def require_reason(reason: str | None, *, field: str = "reason") -> str:
    """The reason, stripped, or a 400 saying why it is not one.

    A reason has at least ``MIN_REASON_CHARACTERS`` non-space characters, a letter, more
    than a few distinct characters, and is not a placeholder such as "n/a" or "test"."""
    text = str(reason or "").strip()
    if not text:
        raise RuleViolation("reason_required", "A reason is required to change an existing record.", field=field)
    compact = "".join(text.split()).casefold()
    words = " ".join(text.split()).casefold().strip(".,;:!?-_ ")
    letters = [c for c in compact if c.isalpha()]
    if (
        len(compact) < MIN_REASON_CHARACTERS
        or len(letters) < 3
        or len(set(compact)) < 4
        or words in PLACEHOLDER_REASONS
    ):
        raise RuleViolation(
            "reason_insufficient",
            f"Give a reason that says what was wrong and why it changes: at least {MIN_REASON_CHARACTERS} "
            "characters in words, not a placeholder such as 'n/a', 'x', 'test' or '0'. It is kept in the audit trail.",
            field=field,
        )
    return text


def require_confirmation(confirm, *, consequences: str, field: str = "confirm") -> None:
    """Refuse a final decision unless ``confirm`` is exactly True.

    ``consequences`` says what cannot be undone; it is the message the person reads
    before confirming."""
    if confirm is not True:
        raise RuleViolation(
            "confirmation_required",
            f'{consequences} This cannot be undone: confirm it explicitly (send "{field}": true) to go ahead.',
            field=field,
        )
