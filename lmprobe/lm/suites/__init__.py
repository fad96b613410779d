"""Run directories built from someone else's checkpoints: `lmprobe suite`.

A *suite* is a series of checkpoints of any causal LM (a Hub model's revisions, such as Pythia's
step1000..step143000, or local save_pretrained folders) turned into a run directory that
`lmprobe mine` and `lmprobe examples` read as if lmprobe had trained it: config.yaml (domain lm),
probe/ (held-out blocks of any text source in the models' own tokenizer), trace/ (one row per
checkpoint, in step order), metrics.jsonl, checkpoints/ (links, never copies) and suite.json
(the series, the weights hash of every checkpoint, and which were identical to an earlier one).

    from lmprobe.lm.suites import SuiteOptions, build_suite, hub_series, local_series
    series = hub_series("EleutherAI/pythia-70m", ["step1000", "step2000"])
    result = build_suite(series, "runs/pythia70m", SuiteOptions(data="sample"))
"""

from lmprobe.lm.suites.build import SuiteOptions, SuiteResult, build_suite
from lmprobe.lm.suites.hashing import weights_sha256
from lmprobe.lm.suites.record import SUITE_FILE, Evaluated, read_record
from lmprobe.lm.suites.series import SeriesCheckpoint, hub_series, local_series

__all__ = [
    "SUITE_FILE",
    "Evaluated",
    "SeriesCheckpoint",
    "SuiteOptions",
    "SuiteResult",
    "build_suite",
    "hub_series",
    "local_series",
    "read_record",
    "weights_sha256",
]
