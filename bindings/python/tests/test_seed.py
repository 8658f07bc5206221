"""The seed's get_counter example, through the Python module, and the README's."""

import pathlib
import re

import relcount

A = "5c910f6bc484d023b1309bee"
B = "5c910938c484d023b1309bab"
ROOT = pathlib.Path(__file__).resolve().parents[3]


def seed_engine():
    engine = relcount.Engine()
    engine.define(3, 1, 2, {
        "Donate": {"type": "int", "top": 10},
        "Like": {"type": "int", "sum": True},
        "Subscriber": {"type": "bool"},
    })
    engine.attach(3, A, B, {"Donate": 20})
    engine.strengthen(3, A, B, {"Like": 2})
    engine.edit(3, A, B, {"Subscriber": True})
    return engine


# The `data` of the platform's response example (shared/seed/get_counter.txt).
SEED_DATA = {
    "profile_id": "5c910f6bc484d023b1309bee",
    "profile_xxh": "54ec2d76ac22a964",
    "total": 1,
    "props": {
        "Donate": {"total": 1, "top": [{"profile_id": "5c910938c484d023b1309bab", "value": 20}], "sum": None},
        "Like": {"total": 1, "top": None, "sum": 2},
        "Subscriber": {"total": 1, "top": None, "sum": None},
    },
}


def test_seed_example_answers_the_platforms_data():
    got = seed_engine().get_counter(3, A)
    assert got == SEED_DATA
    # ints stay ints, None where the platform prints null
    assert type(got["total"]) is int
    assert type(got["props"]["Like"]["sum"]) is int
    assert got["props"]["Donate"]["sum"] is None
    assert list(got["props"]) == ["Donate", "Like", "Subscriber"]


def test_the_readme_python_example_runs():
    readme = (ROOT / "bindings" / "python" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "bindings/python/README.md has a Python example"
    for block in blocks:
        exec(compile(block, "bindings/python/README.md", "exec"), {})


def test_list_and_matching_by_email():
    engine = seed_engine()
    page = engine.list(3, A, skip=0, limit=10)
    assert page["total_count"] == 1
    assert page["data"] == [{
        "profile_id_a": A, "xxh_a": "54ec2d76ac22a964", "profile_id_b": B,
        "xxh_b": page["data"][0]["xxh_b"], "db_b": 2,
        "props": {"Donate": {"value": 20}, "Like": {"value": 2}, "Subscriber": {"value": True}},
    }]
    engine.import_profile(1, A, email="Ann@Example.com", fields={"CRM_ID": 7, "Tags": ["x", "y"]},
                          subscriptions=[{"resource_id": 24, "channel": "sms", "phone": "+7 900 000-00-00"}])
    by_email = engine.get_counter(3, {"email": "ann@example.com"})
    assert by_email == engine.get_counter(3, A)
    assert engine.get_counter(3, {"field_name": "CRM_ID", "field_value": 7})["total"] == 1
    assert engine.get_counter(3, {"field_name": "Tags", "field_value": "y, x"})["total"] == 1
    assert engine.get_counter(3, {"phone": "79000000000", "resource_id": 24})["total"] == 1
    assert engine.contains_profile(1, {"email_profile": "ann@example.com"})
    assert engine.profile_count == 2 and engine.relation_count == 1


def test_bulk_import_and_floats_and_big_sums():
    engine = relcount.Engine()
    engine.define(7, 1, 2, {"Amount": {"type": "float", "sum": True, "top": 2},
                            "Count": {"type": "int", "sum": True}})
    rows = [("a", f"b{i}", {"Amount": 0.1, "Count": 2**62}) for i in range(4)]
    assert engine.import_relations(7, rows) == 4
    c = engine.get_counter(7, "a")
    assert c["props"]["Count"]["sum"] == 4 * 2**62  # beyond int64: exact, a Python int
    assert c["props"]["Amount"]["sum"] == 0.4  # correctly rounded, not 0.1+0.1+0.1+0.1
    assert type(c["props"]["Amount"]["top"][0]["value"]) is float
    # an int beyond int64 for a float property is its nearest double
    engine.attach(7, "a", "b9", {"Amount": 2**70})
    assert engine.get_counter(7, "a")["props"]["Amount"]["top"][0] == {"profile_id": "b9", "value": float(2**70)}
