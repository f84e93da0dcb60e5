"""What compliance attaches to the lower layers' API views, once, at start-up
(``ComplianceConfig.ready``, through ``config.viewsets.VIEW_OUTPUTS``).

Trials and imaging define their views without knowing compliance exists (imports point
down). This module is the one place where compliance adds to them:

* the sponsor's rule and each view's de-identified projection (the projections and the
  rule are ``compliance.sponsor``'s: the one home of de-identification). A view not listed
  here gives a sponsor nothing: an empty list, a 404 detail;
* the signatures a signed subject shows in its detail.

Nothing imports this module but ``compliance.apps``: it sits above every API module it
names, so wiring them never makes an import loop.
"""

from __future__ import annotations

from compliance import api as compliance_api
from compliance.serializers import SubjectDetailOutput
from compliance.sponsor import (
    BatchOutput,
    ConsentOutput,
    ExportOutput,
    InjectionOutput,
    ScanOutput,
    SiteOutput,
    SubjectOutput,
    applies_to,
    check_query,
    time_course,
)
from config.viewsets import VIEW_OUTPUTS
from imaging import api as imaging_api
from imaging import serializers as imaging_serializers
from trials import api as trials_api
from trials import serializers as trials_serializers


def attach_to_api() -> None:
    """Install the sponsor rule, attach each view's sponsor projection and the subject's
    signed detail."""
    VIEW_OUTPUTS.install_sponsor_rule(applies_to=applies_to, check_query=check_query)
    projections = {
        # No subject data; the secret is never serialised.
        trials_api.TrialViewSet: trials_serializers.TrialOutput,
        trials_api.SiteViewSet: SiteOutput,
        trials_api.SubjectViewSet: SubjectOutput,
        # The trial's documents, no subject data.
        trials_api.ConsentDocumentViewSet: trials_serializers.ConsentDocumentOutput,
        trials_api.ConsentViewSet: ConsentOutput,
        # A manufacturer's lot: product data, nobody's.
        trials_api.NanoparticleLotViewSet: trials_serializers.LotOutput,
        trials_api.CellBatchViewSet: BatchOutput,
        trials_api.InjectionViewSet: InjectionOutput,
        imaging_api.ScanViewSet: ScanOutput,
        # Numbers and ids of a scan the sponsor may read.
        imaging_api.MeasurementViewSet: imaging_serializers.MeasurementOutput,
        imaging_api.SubjectTimeCourseViewSet: time_course,
        imaging_api.TimeCourseApi: time_course,
        # A sponsor's DICOM export is of one subject: its scope names the pseudonym.
        compliance_api.ExportViewSet: ExportOutput,
        compliance_api.ScanDicomExportViewSet: ExportOutput,
    }
    for view, projection in projections.items():
        VIEW_OUTPUTS.attach(view, sponsor=projection)
    VIEW_OUTPUTS.attach(trials_api.SubjectViewSet, detail=SubjectDetailOutput)
