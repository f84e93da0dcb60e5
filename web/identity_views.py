"""The identity panel: a subject's identifiable data, for the roles that may read it.

Shown only on an explicit action (a POST: a link preview, a prefetch or a reload of the
subject page never reads PHI), each reading audited by ``trials.services.identity`` in
the same request (refusals too), never cached. A coordinator or investigator of the
subject's site corrects it there with a reason; the audit trail keeps a keyed
fingerprint of the old and the new value of each changed field, never the values.
Identity is not part of a signed visit (``compliance.signatures``): a correction
leaves the visit's signatures as they are.
"""

from __future__ import annotations

import contextlib

from django import forms as django_forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from compliance import sponsor
from config.errors import RuleViolation
from trials import selectors as trial_selectors
from trials.models import Subject
from trials.permissions import access
from trials.services import identity as identity_services
from web import forms

SHOW, CORRECT = "show", "correct"


class IdentityForm(django_forms.Form):
    full_name = django_forms.CharField(label="Full name", max_length=200)
    date_of_birth = django_forms.DateField(label="Date of birth", widget=forms.DateInput())
    medical_record_number = django_forms.CharField(label="Medical record number", max_length=64)
    reason = django_forms.CharField(
        widget=django_forms.Textarea(attrs={"rows": 2}),
        max_length=500,
        help_text="Required: kept in the audit trail with a fingerprint of the old and the new value of each "
        "field you change.",
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )

    def __init__(self, *args, recorded: bool, **kwargs):
        super().__init__(*args, **kwargs)
        # A first recording needs no reason (the service's rule); a correction does.
        self.fields["reason"].required = recorded
        if not recorded:
            self.fields["reason"].help_text = "Not needed to record the identity for the first time."


def identity_panel(user, subject: Subject) -> dict:
    """What the subject page shows of the panel: nothing at all for a role that may not
    read identity (no button, no hint that there is something to see)."""
    return {
        "identity_panel": access.can_read_identity(user, subject),
        "identity_editable": access.can_write_identity(user, subject),
    }


def _subject_or_refuse(request, pk) -> Subject:
    """The subject, when the reader may see it at all; otherwise the attempt goes on the
    access log (as the API's) and the answer is 404. A sponsor reads de-identified data
    only: for them no subject has an identity page."""
    subject = None
    if not sponsor.applies_to(request.user):
        subject = trial_selectors.subjects_visible_to(request.user).filter(pk=pk).first()
    if subject is None:
        with contextlib.suppress(RuleViolation):  # it refuses, after recording the attempt
            identity_services.subject_identity_read(actor=request.user, subject=None, requested_id=pk)
        raise Http404
    return subject


def _page(request, subject: Subject, *, identity=None, form=None, status=200):
    return render(
        request,
        "web/subject_identity.html",
        {"subject": subject, "identity": identity, "form": form, "correct": CORRECT},
        status=status,
    )


@never_cache
@login_required
def subject_identity(request, pk):
    """``action=show``: read (audited) and show the identity, with the correction form for
    those who may correct it. ``action=correct``: record or correct it. POST only; a
    sponsor gets 404 whatever the method, as on every page not theirs."""
    if request.method != "POST":
        if sponsor.applies_to(request.user):
            raise Http404
        return HttpResponseNotAllowed(["POST"])
    subject = _subject_or_refuse(request, pk)
    editable = access.can_write_identity(request.user, subject)
    if request.POST.get("action") == CORRECT:
        if not editable:
            raise Http404  # the form is not offered to them (web.permissions: a refused page is a 404)
        form = IdentityForm(request.POST, recorded=trial_selectors.identity_recorded(subject))
        if form.is_valid():
            try:
                identity_services.subject_identity_set(actor=request.user, subject=subject, **form.cleaned_data)
            except RuleViolation as exc:
                forms.apply_errors(form, exc)
            else:
                messages.success(
                    request,
                    f"Identity of subject {subject.code} saved. The audit trail records which fields changed, "
                    "with your reason.",
                )
                return redirect("web:subject", pk=subject.pk)
        return _page(request, subject, form=form, status=400)
    try:
        identity = identity_services.subject_identity_read(actor=request.user, subject=subject)
    except RuleViolation as exc:
        if exc.code != "identity_missing":
            raise Http404 from exc  # refused, and on the access log
        identity = None
    correction: IdentityForm | None = None
    if editable:
        initial = (
            {name: getattr(identity, name) for name in ("full_name", "date_of_birth", "medical_record_number")}
            if identity is not None
            else {}
        )
        correction = IdentityForm(initial=initial, recorded=identity is not None)
    return _page(request, subject, identity=identity, form=correction)
