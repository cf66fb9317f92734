"""Linkage: one person across GP and hospital records, on keyed identifier hashes.

Modules, in the order a run uses them: `records` (what is read), `persons` (who exists and
their ids), `blocking` (candidate pairs in one join), `deterministic` (the CPRD-HES 8 steps),
`scoring` (Fellegi-Sunter with EM), `report`, `job` (one incremental run), `command`.
"""
