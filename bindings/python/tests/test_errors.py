"""Every kind of engine error the Python module can meet, raised as its own class
with the engine's message, and changing nothing."""

import os
import tempfile

import pytest

import relcount

A = "5c910f6bc484d023b1309bee"
B = "5c910938c484d023b1309bab"


@pytest.fixture
def engine():
    e = relcount.Engine()
    e.define(3, 1, 2, {
        "Donate": {"type": "int", "top": 10},
        "Like": {"type": "int", "sum": True},
        "Score": {"type": "float", "sum": True},
        "Subscriber": {"type": "bool"},
    })
    e.attach(3, A, B, {"Donate": 20, "Like": 2**63 - 1, "Score": 1.5})
    e.attach(3, "a2", "b2", {"Donate": 1})
    return e


def state(e):
    return e.get_counter(3, A), e.list(3, A), e.profile_count, e.relation_count


CASES = [
    (relcount.UnknownRelation, "relation 4 is not defined", lambda e: e.attach(4, A, B, {"Donate": 1})),
    (relcount.SchemaConflict, "already defined", lambda e: e.define(3, 1, 2, {"Donate": {"type": "float"}})),
    (relcount.InvalidSchema, "top", lambda e: e.define(5, 1, 2, {"Donate": {"type": "int", "top": 5000}})),
    (relcount.InvalidSchema, "type", lambda e: e.define(5, 1, 2, {"Donate": {"type": "decimal"}})),
    (relcount.InvalidSchema, "unknown key", lambda e: e.define(5, 1, 2, {"Donate": {"type": "int", "max": 1}})),
    (relcount.InvalidProfileId, "1 to 64 bytes", lambda e: e.attach(3, "x" * 65, B, {"Donate": 1})),
    (relcount.InvalidProfileId, "got 0", lambda e: e.get_counter(3, "")),
    (relcount.ProfileNotFound, "not found", lambda e: e.get_counter(3, "nobody")),
    (relcount.ProfileNotFound, "not found", lambda e: e.delete_profile(1, "nobody")),
    (relcount.NoMatch, "no profile", lambda e: e.get_counter(3, {"email": "nobody@example.com"})),
    (relcount.InvalidProfileData, "", lambda e: e.import_profile(1, "c", email="not an email")),
    (relcount.RelationNotFound, "not found", lambda e: e.detach(3, A, "b2")),
    (relcount.UnknownProperty, "no property", lambda e: e.attach(3, A, B, {"Nope": 1})),
    (relcount.WrongType, "is int, got bool", lambda e: e.attach(3, A, B, {"Donate": True})),
    (relcount.NotFinite, "finite", lambda e: e.attach(3, A, B, {"Score": float("nan")})),
    (relcount.NotFinite, "finite", lambda e: e.strengthen(3, A, B, {"Score": float("inf")})),
    (relcount.IntOverflow, "int64", lambda e: e.strengthen(3, A, B, {"Like": 1})),
    (relcount.FloatOverflow, "2^960", lambda e: e.attach(3, A, B, {"Score": 1e300})),
    (relcount.InvalidArgument, "outside the int64 range", lambda e: e.attach(3, A, B, {"Donate": 2**64})),
    (relcount.InvalidArgument, "limit", lambda e: e.list(3, A, limit=0)),
    (relcount.InvalidArgument, "a profile dict", lambda e: e.get_counter(3, {"emial": "x"})),
    (relcount.InvalidArgument, "shards", lambda e: relcount.Engine(shards=0)),
    (relcount.InvalidArgument, "sync policy", lambda e: relcount.Engine.open(tempfile.mkdtemp(), fsync="sometimes")),
    (TypeError, "weights are a dict", lambda e: e.attach(3, A, B, [("Donate", 1)])),
    (TypeError, "must be an int, a float or a bool", lambda e: e.attach(3, A, B, {"Donate": "20"})),
    (TypeError, "a profile is a str", lambda e: e.get_counter(3, 42)),
]


@pytest.mark.parametrize("cls,text,call", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_each_refusal_raises_its_class_and_changes_nothing(engine, cls, text, call):
    before = state(engine)
    with pytest.raises(cls) as raised:
        call(engine)
    assert text in str(raised.value)
    if cls is not TypeError:
        assert isinstance(raised.value, relcount.RelcountError)
    assert state(engine) == before


def test_every_engine_error_class_is_under_relcount_error():
    names = ["UnknownRelation", "SchemaConflict", "InvalidSchema", "InvalidProfileId",
             "ProfileNotFound", "NoMatch", "Ambiguous", "InvalidProfileData", "RelationNotFound",
             "UnknownProperty", "DuplicateProperty", "WrongType", "NotFinite", "IntOverflow",
             "FloatOverflow", "InvalidArgument", "LookupTooBroad", "CapacityExceeded", "StorageError"]
    for name in names:
        assert issubclass(getattr(relcount, name), relcount.RelcountError), name
    assert issubclass(relcount.RelcountError, Exception)


def test_ambiguous_and_lookup_too_broad(engine):
    engine.import_profile(1, "p1", email="same@example.com")
    engine.import_profile(2, "p1b", email="same@example.com")
    engine.import_profile(1, "p2", subscriptions=[{"resource_id": 1, "channel": "email", "email": "same@example.com"}])
    with pytest.raises(relcount.Ambiguous, match="several profiles"):
        engine.get_counter(3, {"email": "same@example.com"})
    # Each tag held by more than 10,000 profiles: the lookup cannot settle.
    for i in range(10_001):
        engine.import_profile(1, f"t{i}", fields={"Tags": ["common-1"]})
        engine.import_profile(1, f"u{i}", fields={"Tags": ["common-2"]})
    before = state(engine)
    with pytest.raises(relcount.LookupTooBroad, match="lookup too broad"):
        engine.attach(3, {"field_name": "Tags", "field_value": "common-1, common-2"}, B, {"Donate": 1})
    assert state(engine) == before


def test_a_refused_row_names_its_row_and_changes_nothing(engine):
    before = state(engine)
    rows = [(A, "b1", {"Donate": 1}), (A, "b2", {"Donate": 2}), (A, "b3", {"Donate": 1.5})]
    with pytest.raises(relcount.WrongType) as raised:
        engine.import_relations(3, rows)
    assert raised.value.row == 2
    assert str(raised.value).startswith("row 2: ")
    with pytest.raises(TypeError, match="row 1") as raised:
        engine.import_relations(3, [(A, "b1", {"Donate": 1}), (A, "b2")])
    assert raised.value.row == 1
    with pytest.raises(relcount.InvalidArgument, match="row 2: property Donate is int") as raised:
        engine.import_relations(3, [(A, "b1", None), (A, "b2", {}), (A, "b3", {"Donate": 2**70})])
    assert raised.value.row == 2

    def rows_that_fail():
        yield (A, "b1", {"Donate": 1})
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        engine.import_relations(3, rows_that_fail())
    assert state(engine) == before


def test_storage_errors_name_their_kind():
    with tempfile.TemporaryDirectory() as d:
        first = relcount.Engine.open(d)
        with pytest.raises(relcount.StorageError) as raised:
            relcount.Engine.open(d)
        assert raised.value.kind == "locked"
        del first
        relcount.Engine.open(d)  # released when the first engine was collected
    with pytest.raises(relcount.StorageError) as raised:
        relcount.Engine().compact()
    assert raised.value.kind == "refused"
    path = os.path.join(tempfile.mkdtemp(), "file")
    open(path, "w").close()
    with pytest.raises(relcount.StorageError) as raised:
        relcount.Engine.open(path)
    assert raised.value.kind == "io"


def test_unreachable_kinds_are_named():
    """DuplicateProperty cannot be sent from Python (a dict holds a name once), and
    CapacityExceeded needs 2^32 - 1 live profiles; both classes exist for except
    clauses shared with other hosts."""
    assert relcount.DuplicateProperty.__doc__
    assert relcount.CapacityExceeded.__doc__
