"""Synthetic GP and hospital submissions with ground truth (`caredata synth`).

`generate` writes a landing zone per shared/CONTRACT.md and, outside it, the truth
tables `people` and `records`; `load_synth_settings` reads `conf/synth.yaml`.
"""

from caredata_spark.synthetic.generate import SynthResult, default_truth, generate
from caredata_spark.synthetic.settings import SynthSettings, load_synth_settings

__all__ = ["SynthResult", "SynthSettings", "default_truth", "generate", "load_synth_settings"]
