"""Engine.apply: a batch of writes of every kind, in order, all or nothing, against
the same writes one call at a time on a second engine."""

import random

import pytest

import relcount


def engine():
    e = relcount.Engine()
    e.define(3, 1, 2, {
        "Donate": {"type": "int", "top": 3, "sum": True},
        "Score": {"type": "float", "sum": True},
        "Subscriber": {"type": "bool"},
    })
    return e


def one_by_one(e, writes):
    for op, rel_id, a, b, *rest in writes:
        w = rest[0] if rest else None
        if op == "detach":
            e.detach(rel_id, a, b)
        else:
            getattr(e, op)(rel_id, a, b, w)


def state(e, ids):
    return [(e.get_counter(3, a), e.list(3, a)) for a in ids if e.contains_profile(1, a)]


def test_a_batch_equals_its_writes_one_by_one():
    rng = random.Random(5)
    ids = [f"a{i}" for i in range(5)]
    batch, single = engine(), engine()
    for _ in range(20):
        writes, made = [], set()
        for _ in range(50):
            a, b = rng.choice(ids), f"b{rng.randrange(8)}"
            if made and rng.random() < 0.1:
                a, b = made.pop()
                writes.append(("detach", 3, a, b))
                continue
            made.add((a, b))
            op = rng.choice(["attach", "strengthen", "edit"])
            w = {"Donate": rng.randrange(-3, 4), "Score": rng.randrange(8) / 4}
            if rng.random() < 0.3:
                w["Subscriber"] = rng.random() < 0.5
            writes.append((op, 3, a, b, w))
        assert batch.apply(writes) == len(writes)
        one_by_one(single, writes)
        assert state(batch, ids) == state(single, ids)


def test_a_refused_write_refuses_the_batch_and_names_its_row():
    e = engine()
    e.attach(3, "a", "b", {"Donate": 1})
    before = (e.get_counter(3, "a"), e.relation_count, e.profile_count)
    with pytest.raises(relcount.RelationNotFound) as err:
        e.apply([("detach", 3, "a", "b"), ("detach", 3, "a", "b"), ("attach", 3, "a", "c", {"Donate": 2})])
    assert err.value.row == 1
    with pytest.raises(relcount.ProfileNotFound):
        e.apply([("detach", 3, "nobody", "b", None)])
    with pytest.raises(TypeError) as err:
        e.apply([("attach", 3, "a", "c", {"Donate": 2}), ("merge", 3, "a", "b")])
    assert err.value.row == 1
    with pytest.raises(TypeError) as err:
        e.apply([("attach", 3, "a")])
    assert err.value.row == 0
    assert (e.get_counter(3, "a"), e.relation_count, e.profile_count) == before
    assert e.apply([]) == 0
