"""Where secrets could leak from Spark, as tests look for them: key forms, plan text."""

from __future__ import annotations

import base64

from pyspark.sql import DataFrame


def secrets_of(key: bytes) -> list[str]:
    """Every text form in which key material could leak: the key and both HMAC pads."""
    block = key + bytes(64 - len(key))
    pads = [bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)]
    forms = []
    for secret in [key, *pads]:
        forms += [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()]
        forms.append(secret.decode("latin-1"))
    return forms


def plan_text(df: DataFrame) -> str:
    """The plan as every explain() mode prints it, generated code included."""
    utils = df.sparkSession._jvm.PythonSQLUtils  # type: ignore[union-attr]
    modes = ("simple", "extended", "codegen", "cost", "formatted")
    return "\n".join(utils.explainString(df._jdf.queryExecution(), mode) for mode in modes)
