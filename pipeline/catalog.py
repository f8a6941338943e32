"""What each step reads and writes: the pipeline's data flow on one screen.

Keys are paths inside the artifact store. A step may only read what it declares, and its
outputs appear all together when it succeeds, or not at all.
"""

from __future__ import annotations

import msgspec

from model_runtime import exports


class StepSpec(msgspec.Struct, frozen=True):
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    trees: tuple[str, ...] = ()
    """Prefixes under which the step publishes whole trees while it runs (model exports), each
    with a manifest written last; anything else it writes must be one of ``outputs``."""


RAW = "data/raw.parquet"
VALIDATED = "data/validated.parquet"
QUARANTINE = "data/quarantine.parquet"
TRAIN = "data/train.parquet"
TEST = "data/test.parquet"
SPLIT_IDS = "data/split_ids.json"
IMPUTE_DECISION = "decisions/impute.json"
FEATURES_DECISION = "decisions/features.json"
SELECT_DECISION = "decisions/select.json"
TUNE_DECISION = "decisions/tune.json"
MODEL = "models/candidate.joblib"
EVALUATION = "reports/evaluate.json"
REGISTRATION = "decisions/register.json"
#: Beside an exported model folder: what the registry says of it, for loaders without MLflow.
#: Model exports: ``models/<name>/<version or alias>/…`` (see model_runtime/exports.py).
EXPORTS = exports.EXPORTS
INGEST_REPORT = "reports/ingest.json"
FEATURE_IMPORTANCE = "reports/feature_importance.csv"
ERRORS_BY_OCEAN = "reports/errors_by_ocean_proximity.csv"
ERRORS_BY_INCOME = "reports/errors_by_income.csv"
TEST_PREDICTIONS = "reports/test_predictions.csv"
RESIDUALS_PLOT = "reports/residuals.png"
PREDICTED_VS_ACTUAL_PLOT = "reports/predicted_vs_actual.png"
#: Evaluate's reports, which register attaches to the version (``evaluation/`` beside its
#: model), so the version carries them even when evaluate was cached and logged nothing.
EVALUATION_REPORTS = (
    EVALUATION,
    ERRORS_BY_OCEAN,
    ERRORS_BY_INCOME,
    FEATURE_IMPORTANCE,
    TEST_PREDICTIONS,
    RESIDUALS_PLOT,
    PREDICTED_VS_ACTUAL_PLOT,
)

CATALOG: tuple[StepSpec, ...] = (
    StepSpec("ingest", (), (RAW, INGEST_REPORT)),
    StepSpec(
        "validate",
        (RAW,),
        (VALIDATED, QUARANTINE, "reports/validate.json", "reports/validate.md"),
    ),
    StepSpec("split", (VALIDATED,), (TRAIN, TEST, SPLIT_IDS)),
    StepSpec("impute", (TRAIN,), (IMPUTE_DECISION, "reports/impute.csv", "reports/impute.png")),
    StepSpec("features", (TRAIN, IMPUTE_DECISION), (FEATURES_DECISION, "reports/features.csv")),
    StepSpec("select", (TRAIN, FEATURES_DECISION), (SELECT_DECISION, "reports/select.csv")),
    StepSpec(
        "tune", (TRAIN, FEATURES_DECISION, SELECT_DECISION), (TUNE_DECISION, "reports/tune.csv")
    ),
    StepSpec(
        "evaluate",
        (TRAIN, TEST, FEATURES_DECISION, TUNE_DECISION),
        (MODEL, *EVALUATION_REPORTS),
    ),
    # Register also reads the training side and the importances: the version's reference
    # profile (pipeline/monitoring/profile.py) is made of them; and evaluate's reports, which
    # it attaches to the version.
    StepSpec(
        "register",
        (MODEL, TRAIN, TEST, INGEST_REPORT, *EVALUATION_REPORTS),
        (REGISTRATION,),
        trees=(EXPORTS,),
    ),
)

STEP_NAMES: tuple[str, ...] = tuple(s.name for s in CATALOG)
BY_NAME: dict[str, StepSpec] = {s.name: s for s in CATALOG}


def producer(key: str) -> str:
    """The step that writes ``key``."""
    for spec in CATALOG:
        if key in spec.outputs:
            return spec.name
    raise KeyError(key)
