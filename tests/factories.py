"""factory_boy factories: rows for test set-up, written directly (not through services),
so a test of a service sees only the audit events that service writes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.utils import timezone

from trials.models import (
    CellBatch,
    Consent,
    ConsentDocument,
    Injection,
    Membership,
    NanoparticleLot,
    Role,
    Site,
    Subject,
    SubjectIdentity,
    Trial,
    iron_mmol_per_l_from_mg_per_ml,
)

PASSWORD = "trial-demo-2026"


def days_ago(n: int) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=n)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)


class TrialFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Trial

    protocol_number = factory.Sequence(lambda n: f"MPI-T-{n:03d}")
    title = "Tracking labelled MSCs after intramyocardial injection"
    phase = Trial.Phase.PHASE_1
    status = Trial.Status.RECRUITING


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    trial = factory.SubFactory(TrialFactory)
    code = factory.Sequence(lambda n: f"S{n}")
    name = factory.LazyAttribute(lambda o: f"Site {o.code}")
    time_zone = "Europe/Berlin"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    site = factory.SubFactory(SiteFactory)
    trial = factory.LazyAttribute(lambda o: o.site.trial)
    role = Role.COORDINATOR


class SubjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subject

    site = factory.SubFactory(SiteFactory)
    trial = factory.LazyAttribute(lambda o: o.site.trial)
    code = factory.Sequence(lambda n: f"SUBJ-{n:05d}")
    enrolment_date = factory.LazyFunction(lambda: timezone.localdate() - dt.timedelta(days=60))
    status = Subject.Status.ENROLLED


class SubjectIdentityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SubjectIdentity

    subject = factory.SubFactory(SubjectFactory)
    full_name = factory.Sequence(lambda n: f"Erika Mustermann-{n}")
    date_of_birth = dt.date(1961, 4, 17)
    medical_record_number = factory.Sequence(lambda n: f"MRN{n:07d}")


class ConsentDocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConsentDocument

    trial = factory.SubFactory(TrialFactory)
    version = factory.Sequence(lambda n: f"1.{n}")
    irb_approval_date = factory.LazyFunction(lambda: timezone.localdate() - dt.timedelta(days=400))
    effective_date = factory.LazyFunction(lambda: timezone.localdate() - dt.timedelta(days=365))
    file = factory.LazyFunction(lambda: ContentFile(b"Informed consent, version 1", name="consent.txt"))
    sha256 = "0" * 64


class ConsentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Consent

    subject = factory.SubFactory(SubjectFactory)
    document = factory.SubFactory(ConsentDocumentFactory, trial=factory.SelfAttribute("..subject.trial"))
    scope_imaging = True
    scope_longitudinal_imaging = True
    scope_data_sharing = True
    signed_at = factory.LazyFunction(lambda: days_ago(50))
    obtained_by = factory.SubFactory(UserFactory)


class NanoparticleLotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NanoparticleLot

    trial = factory.SubFactory(TrialFactory)
    manufacturer = "Magnetic Insight"
    product = "VivoTrax (ferucarbotran)"
    lot_number = factory.Sequence(lambda n: f"VT{n:05d}")
    expiry_date = factory.LazyFunction(lambda: timezone.localdate() + dt.timedelta(days=365))
    iron_mg_per_ml = Decimal("5.5000")
    iron_mmol_per_l = factory.LazyAttribute(lambda o: iron_mmol_per_l_from_mg_per_ml(o.iron_mg_per_ml))
    core_size_nm = Decimal("4.20")
    hydrodynamic_size_nm = Decimal("62.00")
    polydispersity_index = Decimal("0.180")
    coating = "carboxydextran"
    certificate_of_analysis = factory.LazyFunction(lambda: ContentFile(b"CoA", name="coa.txt"))
    certificate_sha256 = "0" * 64
    qc_status = NanoparticleLot.QcStatus.RELEASED


class CellBatchFactory(factory.django.DjangoModelFactory):
    """A labelled, released, autologous batch for ``donor_subject``."""

    class Meta:
        model = CellBatch

    donor_subject = factory.SubFactory(SubjectFactory)
    site = factory.LazyAttribute(lambda o: o.donor_subject.site if o.donor_subject else SiteFactory())
    trial = factory.LazyAttribute(lambda o: o.site.trial)
    batch_code = factory.Sequence(lambda n: f"B-{n:04d}")
    product_type = CellBatch.ProductType.MSC
    chain_of_identity_id = factory.Sequence(lambda n: f"W123426{n:06d}-CT01")
    donation_id = factory.Sequence(lambda n: f"W123426{n:06d}")
    allogeneic = factory.LazyAttribute(lambda o: o.donor_subject is None)
    manufactured_at = factory.LazyFunction(lambda: days_ago(20))
    cell_count = 100_000_000
    viability_percent = Decimal("92.50")
    nanoparticle_lot = factory.SubFactory(NanoparticleLotFactory, trial=factory.SelfAttribute("..trial"))
    incubation_concentration_ug_fe_per_ml = Decimal("50.000")
    iron_per_cell_pg = Decimal("12.500")
    labelling_efficiency_percent = Decimal("95.00")
    labelled_at = factory.LazyFunction(lambda: days_ago(19))
    release_status = CellBatch.ReleaseStatus.RELEASED

    class Params:
        unlabelled = factory.Trait(
            nanoparticle_lot=None,
            incubation_concentration_ug_fe_per_ml=None,
            iron_per_cell_pg=None,
            labelling_efficiency_percent=None,
            labelled_at=None,
            release_status=CellBatch.ReleaseStatus.PENDING,
        )


class InjectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Injection

    batch = factory.SubFactory(CellBatchFactory)
    subject = factory.LazyAttribute(lambda o: o.batch.donor_subject or SubjectFactory(site=o.batch.site))
    administered_cells = 10_000_000
    volume_ml = Decimal("2.000")
    route = Injection.Route.INTRAMYOCARDIAL
    anatomical_target = "left ventricle, anterior wall"
    administered_at = factory.LazyFunction(lambda: days_ago(10))
    administered_by = factory.SubFactory(UserFactory)
    verified_by = factory.SubFactory(UserFactory)
