"""Split: Géron's income-stratified 80/20 split, so results compare with the book.

The test side is read again only by evaluate and register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from model_runtime import contract
from pipeline import catalog
from pipeline.settings import SplitConfig

if TYPE_CHECKING:
    from pipeline.step_context import StepContext

INCOME_BINS = (0.0, 1.5, 3.0, 4.5, 6.0, np.inf)


def income_category(median_income: pd.Series) -> pd.Series:
    """The book's income bands 1-5, used for stratification and error reports."""
    return pd.cut(median_income, bins=list(INCOME_BINS), labels=[1, 2, 3, 4, 5])


def stratified_split(frame: pd.DataFrame, config: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test_split(
        frame,
        test_size=config.test_size,
        stratify=income_category(frame["median_income"]),
        random_state=config.random_state,
    )
    return train, test


def run(ctx: StepContext) -> dict[str, Any]:
    frame = ctx.read_frame(catalog.VALIDATED)
    train, test = stratified_split(frame, ctx.settings.split)
    ctx.write_frame(catalog.TRAIN, train.reset_index(drop=True))
    ctx.write_frame(catalog.TEST, test.reset_index(drop=True))
    ctx.write_json(
        catalog.SPLIT_IDS,
        {"train": train[contract.ROW_ID].tolist(), "test": test[contract.ROW_ID].tolist()},
    )
    return {"train": len(train), "test": len(test)}
