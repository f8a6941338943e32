"""The agreement report: the figures replay, the shadow report and the console read."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from pipeline.monitoring.agreement import Agreement, agreement


def test_identical_prices_agree_fully():
    prices = [100_000.0, 250_000.0, 410_000.0]
    a = agreement(prices, prices)
    assert a == Agreement(
        n=3, mape=0.0, within_5pct=1.0, within_10pct=1.0, mean_signed_difference=0.0, spearman=1.0
    )


def test_figures_are_relative_to_the_served_price():
    served = np.array([100_000.0, 200_000.0, 300_000.0, 400_000.0])
    other = np.array([104_000.0, 180_000.0, 300_000.0, 480_000.0])  # +4%, -10%, 0, +20%
    a = agreement(served, other)
    assert a.n == 4
    assert a.mape == pytest.approx((0.04 + 0.10 + 0.0 + 0.20) / 4)
    assert a.within_5pct == 0.5
    assert a.within_10pct == 0.75
    assert a.mean_signed_difference == pytest.approx((4_000 - 20_000 + 0 + 80_000) / 4)
    assert a.spearman == pytest.approx(1.0)


def test_rank_correlation_sees_a_reversed_order():
    served = [1.0, 2.0, 3.0, 4.0]
    assert agreement(served, served[::-1]).spearman == pytest.approx(-1.0)


def test_missing_prices_are_left_out_and_counted():
    a = agreement([100.0, math.nan, 300.0, 0.0], [110.0, 200.0, math.inf, 5.0])
    assert a.n == 1
    assert a.mape == pytest.approx(0.10)
    assert a.spearman is None  # one pair has no rank correlation


def test_nothing_to_compare_gives_no_figures_not_zeros():
    a = agreement([], [])
    assert a.n == 0
    assert a.mape is None
    assert a.within_10pct is None
    assert a.spearman is None


def test_a_constant_column_has_no_rank_correlation():
    assert agreement([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]).spearman is None


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="row by row"):
        agreement([1.0, 2.0], [1.0])


def test_the_report_round_trips_through_json():
    a = agreement([100.0, 200.0, 300.0], [101.0, 190.0, 330.0])
    assert msgspec.json.decode(msgspec.json.encode(a), type=Agreement) == a
