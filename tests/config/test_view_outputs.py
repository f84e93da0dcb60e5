"""``config.viewsets.VIEW_OUTPUTS``: what compliance attaches to the lower layers' views at
start-up (the sponsor's projections, the signatures a signed record shows), so that
trials and imaging name nothing of compliance."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from compliance import serializers as compliance_serializers
from compliance import sponsor as sponsor_rule
from config.viewsets import VIEW_OUTPUTS, Attached, ViewOutputs
from imaging import api as imaging_api
from trials import api as trials_api


class Base:
    pass


class Child(Base):
    pass


def test_it_refuses_to_tell_readers_apart_before_the_sponsor_rule_is_installed(sponsor):
    # Failing loudly, rather than answering a sponsor with the identified view.
    with pytest.raises(ImproperlyConfigured, match="No sponsor rule"):
        ViewOutputs().is_sponsor(sponsor)
    with pytest.raises(ImproperlyConfigured, match="No sponsor rule"):
        ViewOutputs().check_sponsor_query({})


def test_it_gives_a_view_what_was_attached_to_it_or_to_a_base():
    outputs = ViewOutputs()
    assert outputs.of(Child) == Attached()  # nothing attached: a sponsor gets nothing
    outputs.attach(Base, sponsor=sponsor_rule.SubjectOutput)
    outputs.attach(Base, detail=compliance_serializers.SubjectDetailOutput)
    assert outputs.of(Child) == Attached(
        sponsor=sponsor_rule.SubjectOutput, detail=compliance_serializers.SubjectDetailOutput
    )


def test_compliance_attaches_the_sponsor_rule_and_the_signatures_at_start_up(sponsor, coordinator_a):
    assert VIEW_OUTPUTS.is_sponsor(sponsor) and not VIEW_OUTPUTS.is_sponsor(coordinator_a)
    assert VIEW_OUTPUTS.of(trials_api.SubjectViewSet) == Attached(
        sponsor=sponsor_rule.SubjectOutput, detail=compliance_serializers.SubjectDetailOutput
    )
    assert VIEW_OUTPUTS.of(imaging_api.TimeCourseApi).sponsor is sponsor_rule.time_course
    assert VIEW_OUTPUTS.of(imaging_api.AlertViewSet) == Attached()  # staff text: nothing for a sponsor
