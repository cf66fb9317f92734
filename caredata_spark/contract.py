"""The inbound data contract (shared/CONTRACT.md) as data: columns, keys and identifiers.

Everything that reads submissions takes column names from here, so the contract is
written down once.
"""

from __future__ import annotations

from dataclasses import dataclass

DIAG_APC = tuple(f"DIAG_{i:02d}" for i in range(1, 21))
OPERTN_APC = tuple(f"OPERTN_{i:02d}" for i in range(1, 25))


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # link_map `source`
    columns: tuple[str, ...]
    key: tuple[str, ...]  # columns forming the record key
    nhs: str
    dob: str
    sex: str
    postcode: str
    provider: str
    activity_date: str  # the date that places a record in time
    dates: tuple[str, ...]  # every date column (validated as YYYY-MM-DD)
    required: tuple[str, ...]  # rows without these cannot be used
    diagnoses: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    unique_key: bool = True  # False where rows share a key by design (a GP patient's events)

    @property
    def identifiers(self) -> tuple[str, str, str, str]:
        return (self.nhs, self.dob, self.sex, self.postcode)


GP_IDENTITY = ("PRACTICE_CODE", "PATIENT_ID", "NHS_NUMBER", "DOB", "SEX", "POSTCODE")
HES_IDENTITY = ("PROCODE", "NEWNHSNO", "DOB", "SEX", "HOMEADD")
# the four identifiers and the submitter column, as each source names them
GP_FIELDS = dict(source="gp", key=("PRACTICE_CODE", "PATIENT_ID"), nhs="NHS_NUMBER", dob="DOB",
                 sex="SEX", postcode="POSTCODE", provider="PRACTICE_CODE")
HES_FIELDS = dict(nhs="NEWNHSNO", dob="DOB", sex="SEX", postcode="HOMEADD", provider="PROCODE")

GP_PATIENTS = Dataset(
    name="gp_patients",
    columns=(*GP_IDENTITY, "REG_DATE", "DEREG_DATE"),
    **GP_FIELDS,
    activity_date="REG_DATE",
    dates=("REG_DATE", "DEREG_DATE"),
    required=("PRACTICE_CODE", "PATIENT_ID", "REG_DATE"),
)
GP_EVENTS = Dataset(
    name="gp_events",
    columns=(*GP_IDENTITY, "EVENT_DATE", "SNOMED_CODE", "VALUE"),
    **GP_FIELDS,
    activity_date="EVENT_DATE",
    dates=("EVENT_DATE",),
    required=("PRACTICE_CODE", "PATIENT_ID", "EVENT_DATE", "SNOMED_CODE"),
    numeric=("VALUE",),
    unique_key=False,
)
HES_APC = Dataset(
    name="hes_apc",
    source="hes_apc",
    columns=(
        "EPIKEY", *HES_IDENTITY, "ADMIDATE", "EPISTART", "EPIEND", "DISDATE", "ADMIMETH",
        *DIAG_APC, *OPERTN_APC,
    ),
    key=("EPIKEY",),
    **HES_FIELDS,
    activity_date="ADMIDATE",
    dates=("ADMIDATE", "EPISTART", "EPIEND", "DISDATE"),
    required=("EPIKEY", "PROCODE", "ADMIDATE"),
    diagnoses=DIAG_APC,
    operations=OPERTN_APC,
)
HES_OP = Dataset(
    name="hes_op",
    source="hes_op",
    columns=("ATTENDKEY", *HES_IDENTITY, "APPTDATE", "ATTENDED", "TRETSPEF", "DIAG_01"),
    key=("ATTENDKEY",),
    **HES_FIELDS,
    activity_date="APPTDATE",
    dates=("APPTDATE",),
    required=("ATTENDKEY", "PROCODE", "APPTDATE"),
    diagnoses=("DIAG_01",),
)
HES_AE = Dataset(
    name="hes_ae",
    source="hes_ae",
    columns=("AEKEY", *HES_IDENTITY, "ARRIVALDATE", "AEATTENDDISP", "DIAG_01"),
    key=("AEKEY",),
    **HES_FIELDS,
    activity_date="ARRIVALDATE",
    dates=("ARRIVALDATE",),
    required=("AEKEY", "PROCODE", "ARRIVALDATE"),
    diagnoses=("DIAG_01",),
)

DATASETS: dict[str, Dataset] = {
    d.name: d for d in (GP_PATIENTS, GP_EVENTS, HES_APC, HES_OP, HES_AE)
}
