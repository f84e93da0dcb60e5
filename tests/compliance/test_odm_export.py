from __future__ import annotations

from xml.etree import ElementTree as ET

from compliance.models import Export
from compliance.reports import ODM_NS

NS = {"odm": ODM_NS}


def test_it_exports_well_formed_odm_with_the_required_elements(built, auditor, trial, visit):
    _, content = built(auditor, Export.Kind.ODM_XML, trial)
    root = ET.fromstring(content)  # noqa: S314 - our own export; raises on anything not well-formed

    assert root.tag == f"{{{ODM_NS}}}ODM"
    for attribute in ("FileOID", "FileType", "CreationDateTime", "ODMVersion"):
        assert root.get(attribute), attribute
    assert root.get("ODMVersion").startswith("1.3") and root.get("FileType") == "Snapshot"
    study = root.find("odm:Study", NS)
    assert study.find("odm:GlobalVariables/odm:StudyName", NS).text == "MPI-CT-T01"
    mdv = study.find("odm:MetaDataVersion", NS)
    defined_items = {i.get("OID") for i in mdv.findall("odm:ItemDef", NS)}
    defined_groups = {g.get("OID") for g in mdv.findall("odm:ItemGroupDef", NS)}
    defined_forms = {g.get("OID") for g in mdv.findall("odm:FormDef", NS)}
    assert all(i.get("DataType") for i in mdv.findall("odm:ItemDef", NS))
    # Element order the schema requires inside MetaDataVersion.
    order = [child.tag.split("}")[1] for child in mdv]
    assert order == sorted(order, key=["Protocol", "StudyEventDef", "FormDef", "ItemGroupDef", "ItemDef"].index)

    clinical = root.find("odm:ClinicalData", NS)
    assert clinical.get("StudyOID") == study.get("OID") and clinical.get("MetaDataVersionOID") == mdv.get("OID")
    [subject] = clinical.findall("odm:SubjectData", NS)
    assert subject.get("SubjectKey") == visit.code
    forms = subject.findall("odm:StudyEventData/odm:FormData", NS)
    assert {f.get("FormOID") for f in forms} >= {"F.ENROL", "F.CONSENT", "F.INJ"} and {
        f.get("FormOID") for f in forms
    } <= defined_forms
    for group in subject.iter(f"{{{ODM_NS}}}ItemGroupData"):
        assert group.get("ItemGroupOID") in defined_groups
    items = {i.get("ItemOID"): i.get("Value") for i in subject.iter(f"{{{ODM_NS}}}ItemData")}
    assert set(items) <= defined_items
    injection = visit.injections.get()
    assert items["IT.COI"] == injection.batch.chain_of_identity_id
    assert items["IT.CELLS"] == str(injection.administered_cells)
    assert items["IT.ENRDT"] == visit.enrolment_date.isoformat()
    # No identity in the clinical data.
    assert b"Mustermann" not in content and b"MRN0042137" not in content


def test_it_validates_against_the_official_odm_1_3_2_schema(built, auditor, trial, visit):
    from pathlib import Path

    import odmlib
    from lxml import etree

    xsd = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    _, content = built(auditor, Export.Kind.ODM_XML, trial)
    document = etree.fromstring(content)
    assert schema.validate(document), "\n".join(str(e) for e in schema.error_log)
