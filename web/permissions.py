"""Whether a page may offer a write: asks trials.permissions.access (the same check the
services make before writing), so a form is shown only to those who could save it.

A page refused here answers 404, like an object outside the user's sites: the form is
not there for them, and a 403 would only confirm what exists."""

from __future__ import annotations

from django.http import Http404

from config.errors import RuleViolation
from trials.permissions import access


def may_write(user, roles, *, site=None, trial=None) -> bool:
    """True when ``user`` holds one of ``roles`` at ``site`` (or, with ``trial``, in that
    trial): ``access.require_role`` decides, as in the services."""
    try:
        access.require_role(user, site=site, trial=trial, roles=roles, action="write here")
    except RuleViolation:
        return False
    return True


def may_change_trial_resource(user, trial) -> bool:
    """True when ``user`` may change what ``trial``'s sites share (nanoparticle lots,
    consent documents): ``access.require_trial_role`` decides, as in the services."""
    try:
        access.require_trial_role(user, trial=trial, roles=access.TRIAL_RESOURCE_ROLES, action="change this")
    except RuleViolation:
        return False
    return True


def require_trial_resource_write(user, trial) -> None:
    """404 unless ``may_change_trial_resource``."""
    if not may_change_trial_resource(user, trial):
        raise Http404


def require_write(user, roles, *, site=None, trial=None) -> None:
    """404 unless ``may_write``."""
    if not may_write(user, roles, site=site, trial=trial):
        raise Http404


def may_export(user, scan, *, deidentified: bool) -> bool:
    """The scan export/PACS rule (``dicom_export.check_may_export``, which asks access.py)."""
    from imaging import dicom_export

    try:
        dicom_export.check_may_export(user, scan, deidentified=deidentified)
    except RuleViolation:
        return False
    return True
