"""sum_samples: a minimal Prometheus text reader summing samples per wanted name."""

from __future__ import annotations

import math

import pytest

from gateway.fleet.promtext import sum_samples


def test_sums_every_label_set_of_a_wanted_name() -> None:
    text = 'a{x="1"} 1.5\na{x="2"} 2.5\nb 4\n'
    assert sum_samples(text, {"a"}) == {"a": 4.0}


def test_unwanted_and_absent_names_are_left_out() -> None:
    assert sum_samples("a 1\nb 2\n", {"b", "c"}) == {"b": 2.0}
    assert sum_samples("", {"a"}) == {}


def test_names_match_exactly_not_by_prefix() -> None:
    text = 'req 1\nreq_total 10\nreq_created 1.7e9\nreq{x="y"} 2\n'
    assert sum_samples(text, {"req"}) == {"req": 3.0}
    assert sum_samples(text, {"req_total"}) == {"req_total": 10.0}


def test_comments_and_blank_lines_are_skipped() -> None:
    text = "# HELP a help text 99\n# TYPE a gauge\n\na 3\n#a 100\n"
    assert sum_samples(text, {"a"}) == {"a": 3.0}


def test_timestamp_after_the_value_is_ignored() -> None:
    assert sum_samples('a{l="v"} 2 1700000000000\na 3 1700000000000\n', {"a"}) == {"a": 5.0}


def test_label_values_with_spaces_and_braces() -> None:
    text = 'a{model_name="my model",x="}"} 2\na{path="/v1/{id} x"} 3\n'
    assert sum_samples(text, {"a"}) == {"a": 5.0}


def test_scientific_and_special_values() -> None:
    totals = sum_samples("a 1e3\nb +Inf\nc NaN\n", {"a", "b", "c"})
    assert totals["a"] == 1000.0
    assert totals["b"] == math.inf
    assert math.isnan(totals["c"])


def test_unparseable_lines_are_skipped() -> None:
    text = 'a\na notanumber\na{x="1"}\na 2\n'
    assert sum_samples(text, {"a"}) == {"a": 2.0}


def test_crlf_line_endings() -> None:
    assert sum_samples("a 1\r\na 2\r\n", {"a"}) == {"a": 3.0}


@pytest.mark.parametrize("line", ["a\t3", 'a{x="1"}\t3'])
def test_tab_separated_samples(line: str) -> None:
    assert sum_samples(line + "\n", {"a"}) == {"a": 3.0}
