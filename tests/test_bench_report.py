"""The one percentile every benchmark reports with: linear interpolation between the two nearest
ranks (NumPy's default), so the numbers in benchmarks/results/ mean the same everywhere."""

from __future__ import annotations

import pytest

from benchmarks.report import percentile, table


def test_the_median_of_one_to_ten_is_five_and_a_half() -> None:
    assert percentile(range(1, 11), 0.5) == 5.5
    assert percentile([10, 3, 7, 1, 9, 2, 8, 4, 6, 5], 0.5) == 5.5  # order does not matter


def test_p0_is_the_minimum_and_p100_the_maximum() -> None:
    values = [4.0, 1.5, 9.25, 3.0]
    assert percentile(values, 0.0) == 1.5
    assert percentile(values, 1.0) == 9.25


def test_p99_interpolates_between_the_two_highest_ranks() -> None:
    # Rank 0.99 * 99 = 98.01 of 1..100: 99 plus 1 % of the way to 100.
    assert percentile(range(1, 101), 0.99) == pytest.approx(99.01)
    # Rank 0.99 * 4 = 3.96 of [0, 10, 20, 30, 1000]: 30 + 0.96 * 970.
    assert percentile([0, 10, 20, 30, 1000], 0.99) == pytest.approx(961.2)


def test_one_value_is_every_percentile() -> None:
    assert [percentile([7.5], q) for q in (0.0, 0.5, 0.99, 1.0)] == [7.5] * 4


def test_no_values_or_a_q_outside_zero_to_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)
    with pytest.raises(ValueError):
        percentile([1.0], -0.1)


def test_tables_pad_columns_and_right_align_the_asked_ones() -> None:
    text = table(["saver", "turns/s"], [["ours", "96.5"], ["InMemorySaver", "239.2"]], right=[1])
    assert text.splitlines() == [
        "| saver         | turns/s |",
        "| ------------- | ------: |",
        "| ours          |    96.5 |",
        "| InMemorySaver |   239.2 |",
    ]
