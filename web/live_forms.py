"""The form that opens a live session: which scanner and which calibration (the service,
``live.services.sessions.session_create``, decides whether they fit)."""

from __future__ import annotations

from django import forms

from imaging.models import SystemMatrix
from web.forms import ModelChoice, _model_choice


def _calibration_label(sm: SystemMatrix) -> str:
    grid = "×".join(str(n) for n in sm.grid_size)
    return f"{sm.scanner.name} · {sm.name} · grid {grid} · {sm.tracer_product}"


class LiveStartForm(forms.Form):
    system_matrix = ModelChoice(
        queryset=None,
        required=False,
        label="Calibration (system matrix)",
        empty_label="Match at stream start (as for uploads)",
        label_of=_calibration_label,
        help_text="Active calibrations of this site's scanners for the injected tracer.",
    )
    scanner = ModelChoice(
        queryset=None,
        required=False,
        label="Scanner",
        empty_label="The calibration's scanner (or the site's only one)",
        help_text="Only needed without a calibration when the site has several scanners.",
    )

    def __init__(self, *args, calibrations, scanners, **kwargs):
        super().__init__(*args, **kwargs)
        _model_choice(self, "system_matrix").queryset = SystemMatrix.objects.filter(
            pk__in=[sm.pk for sm in calibrations]
        ).select_related("scanner")
        _model_choice(self, "scanner").queryset = scanners
        if len(calibrations) == 1:
            self.fields["system_matrix"].initial = calibrations[0].pk
