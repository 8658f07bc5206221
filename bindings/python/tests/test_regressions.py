"""Findings of the adversarial review, each kept as a named test."""

import pytest

import relcount


def float_engine():
    e = relcount.Engine()
    e.define(3, 1, 2, {"F": {"type": "float", "sum": True}, "G": {"type": "float"},
                       "I": {"type": "int"}, "B": {"type": "bool"}})
    return e


def test_a_huge_int_for_a_relation_defined_during_the_call_is_never_a_stand_in():
    """The schema was read before the rows were converted: a relation defined in
    between stored a huge int as 0.0. The value is now always the caller's."""
    e = relcount.Engine()

    def rows():
        e.define(5, 1, 2, {"F": {"type": "float", "sum": True}})
        yield ("a", "b", {"F": 10**30})

    assert e.import_relations(5, rows()) == 1
    assert e.get_counter(5, "a")["props"]["F"]["sum"] == float(10**30)
    with pytest.raises(relcount.UnknownRelation):  # still named when never defined
        e.attach(6, "a", "b", {"F": 10**30})


def test_a_dict_changed_while_its_values_convert_is_no_panic():
    """A value's `__float__` that changed the weights dict made PyO3 panic
    (a BaseException, past `except Exception`)."""
    e = float_engine()
    w = {}

    class Big(int):
        def __float__(self):
            w["G"] = 1.0
            return 1e30

    w["F"] = Big(2**70)
    e.attach(3, "a", "b", w)
    assert e.get_counter(3, "a")["props"]["F"]["sum"] == 1e30


def test_an_int_for_a_bool_property_is_wrong_type_whatever_its_size():
    e = float_engine()
    for v in (1, 2**63, -(2**70)):
        with pytest.raises(relcount.WrongType, match="property B is bool, got int"):
            e.attach(3, "a", "b", {"B": v})


def test_a_row_error_of_another_class_keeps_its_class_and_gets_its_row():
    e = float_engine()
    with pytest.raises(UnicodeEncodeError) as raised:
        e.import_relations(3, [("a", "b", {"F": 1.0}), ("a", "b", {"\ud800": 1.0})])
    assert raised.value.row == 1
    with pytest.raises(UnicodeEncodeError) as raised:
        e.import_relations(3, [("a", "b", None), ("a\ud800", "b", None)])
    assert raised.value.row == 1
    assert e.relation_count == 0


def test_wrong_python_types_are_type_errors_and_ints_out_of_range_overflow_errors():
    e = float_engine()
    for call in (
        lambda: e.get_counter(3, {"email": "x@example.com", "resource_id": "24"}),
        lambda: e.define(9, 1, 2, {"X": {"type": "int", "sum": 1}}),
        lambda: e.define(9, 1, 2, {"X": {"type": 5}}),
        lambda: e.define(9, 1, 2, {"X": {"type": "int", "top": "10"}}),
        lambda: e.import_profile(1, "p", subscriptions=[{"resource_id": 1, "channel": 1, "email": "a@b.c"}]),
    ):
        with pytest.raises(TypeError):
            call()
    for call in (
        lambda: e.get_counter(-1, "a"),
        lambda: e.get_counter(2**32, "a"),
        lambda: e.list(3, "a", skip=-1),
        lambda: relcount.Engine(shards=-1),
        lambda: e.get_counter(3, {"email": "x@example.com", "resource_id": 2**32}),
    ):
        with pytest.raises(OverflowError):
            call()
    with pytest.raises(relcount.InvalidSchema, match="top"):
        e.define(9, 1, 2, {"X": {"type": "int", "top": 70_000}})
    with pytest.raises(relcount.UnknownRelation):
        e.get_counter(9, "a")  # nothing above defined it


def test_row_is_none_on_errors_that_are_not_a_rows():
    e = float_engine()
    with pytest.raises(relcount.UnknownRelation) as raised:
        e.get_counter(4, "a")
    assert raised.value.row is None
