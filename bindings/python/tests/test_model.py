"""A random workload of every write against a pure-Python oracle (plain dicts,
counters recomputed from scratch at every check) on a small keyspace; reads from
several threads while a writer writes; a durable engine reopened."""

import random
import tempfile
import threading
from fractions import Fraction

import pytest

import relcount

REL, DB_A, DB_B = 3, 1, 2
PROPS = {
    "Donate": {"type": "int", "top": 3, "sum": True},
    "Score": {"type": "float", "top": 2, "sum": True},
    "Like": {"type": "int", "sum": True},
    "Subscriber": {"type": "bool"},
}
IDS_A = [f"a{i}" for i in range(4)]
IDS_B = [f"b{i}" for i in range(5)]


class Oracle:
    """The contract, naively: profiles and relations in dicts."""

    def __init__(self):
        self.profiles = set()  # (db, id)
        self.relations = {}  # (a, b) -> {name: value}

    def write(self, kind, a, b, weights):
        old = self.relations.get((a, b))
        values = {} if kind == "attach" or old is None else dict(old)
        for name, v in weights.items():
            if kind == "strengthen" and not isinstance(v, bool):
                cur = values.get(name, 0)
                v = cur + v
                if isinstance(v, int) and not -2**63 <= v < 2**63:
                    raise relcount.IntOverflow
                if isinstance(v, float) and v == 0.0:
                    v = 0.0
            values[name] = v
        self.profiles.update({(DB_A, a), (DB_B, b)})
        self.relations[(a, b)] = values

    def detach(self, a, b):
        if (DB_A, a) not in self.profiles or (DB_B, b) not in self.profiles:
            raise relcount.ProfileNotFound
        if (a, b) not in self.relations:
            raise relcount.RelationNotFound
        del self.relations[(a, b)]

    def delete(self, db, pid):
        if (db, pid) not in self.profiles:
            raise relcount.ProfileNotFound
        self.profiles.discard((db, pid))
        for key in [k for k in self.relations if k[0 if db == DB_A else 1] == pid]:
            del self.relations[key]

    def counter(self, a):
        if (DB_A, a) not in self.profiles:
            raise relcount.ProfileNotFound
        rows = {b: v for (pa, b), v in self.relations.items() if pa == a}
        props = {}
        for name, spec in PROPS.items():
            vals = [(b, v[name]) for b, v in rows.items() if name in v]
            if spec["type"] == "bool":
                total = sum(1 for _, v in vals if v is True)
            else:
                total = len(vals)
            s = None
            if spec.get("sum"):
                exact = sum((Fraction(v) for _, v in vals), Fraction(0))
                s = int(exact) if spec["type"] == "int" else float(exact) + 0.0
            top = None
            if "top" in spec:
                ordered = sorted(vals, key=lambda bv: (-bv[1], bv[0]))
                top = [{"profile_id": b, "value": v} for b, v in ordered[: spec["top"]]]
            props[name] = {"total": total, "top": top, "sum": s}
        return {"total": len(rows), "props": props}

    def page(self, a, skip, limit):
        rows = sorted((b, v) for (pa, b), v in self.relations.items() if pa == a)
        return len(rows), [(b, {n: {"value": v[n]} for n in PROPS if n in v}) for b, v in rows[skip: skip + limit]]


def random_weights(rng, kind):
    w = {}
    for name, spec in PROPS.items():
        if rng.random() < 0.5:
            continue
        if spec["type"] == "bool":
            w[name] = rng.random() < 0.5
        elif spec["type"] == "int":
            w[name] = rng.randint(-5, 20) if kind != "strengthen" else rng.randint(-3, 3)
        else:
            w[name] = rng.randint(-40, 80) / 4  # quarters: sums exact in the oracle too
    return w


def check(engine, oracle, where):
    for a in IDS_A:
        try:
            want = oracle.counter(a)
        except relcount.ProfileNotFound:
            with pytest.raises(relcount.ProfileNotFound):
                engine.get_counter(REL, a)
            continue
        got = engine.get_counter(REL, a)
        assert got["profile_id"] == a
        assert {"total": got["total"], "props": got["props"]} == want, where
        for name, p in got["props"].items():
            if p["sum"] is not None:
                assert type(p["sum"]) is (int if PROPS[name]["type"] == "int" else float), where
        skip, limit = 1, 2
        total, rows = oracle.page(a, skip, limit)
        page = engine.list(REL, a, skip=skip, limit=limit)
        assert page["total_count"] == total, where
        assert [(r["profile_id_b"], r["props"]) for r in page["data"]] == rows, where
    assert engine.relation_count == len(oracle.relations), where


def step(engine, oracle, rng):
    op = rng.choice(["attach", "attach", "strengthen", "edit", "detach", "delete", "import"])
    a, b = rng.choice(IDS_A), rng.choice(IDS_B)
    if op in ("attach", "strengthen", "edit"):
        w = random_weights(rng, op)
        getattr(engine, op)(REL, a, b, w)
        oracle.write(op, a, b, w)
        return op, a, b, w
    if op == "detach":
        raised = None
        try:
            oracle.detach(a, b)
        except relcount.RelcountError as e:
            raised = type(e)
        if raised:
            with pytest.raises(raised):
                engine.detach(REL, a, b)
        else:
            engine.detach(REL, a, b)
        return op, a, b, raised
    if op == "delete":
        db, pid = (DB_A, a) if rng.random() < 0.5 else (DB_B, b)
        if (db, pid) in oracle.profiles:
            engine.delete_profile(db, pid)
            oracle.delete(db, pid)
        else:
            with pytest.raises(relcount.ProfileNotFound):
                engine.delete_profile(db, pid)
        return op, db, pid
    rows = [(rng.choice(IDS_A), rng.choice(IDS_B), random_weights(rng, "attach")) for _ in range(rng.randint(1, 6))]
    assert engine.import_relations(REL, rows) == len(rows)
    for ra, rb, w in rows:
        oracle.write("attach", ra, rb, w)
    return op, rows


@pytest.mark.parametrize("seed", range(20))
def test_model_workload_matches_the_oracle(seed):
    rng = random.Random(seed)
    engine = relcount.Engine(shards=rng.choice([1, 2, 64]))
    engine.define(REL, DB_A, DB_B, PROPS)
    oracle = Oracle()
    history = []
    for i in range(150):
        history.append(step(engine, oracle, rng))
        check(engine, oracle, f"seed {seed}, step {i}: {history[-3:]}")


def test_reads_from_threads_see_whole_writes():
    """Several threads read while one writes. Each write moves Donate and Like
    together (Like is always Donate's double), so a read that saw half a write would
    break the ratio; every reader must end on the writer's last state."""
    engine = relcount.Engine()
    engine.define(REL, DB_A, DB_B, PROPS)
    engine.attach(REL, "a0", "b0", {"Donate": 0, "Like": 0})
    done = threading.Event()
    errors = []
    reads = [0] * 4

    def reader(k):
        try:
            while not done.is_set():
                c = engine.get_counter(REL, "a0")
                donate, like = c["props"]["Donate"]["sum"], c["props"]["Like"]["sum"]
                assert like == 2 * donate, (donate, like)
                reads[k] += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 401):
        engine.strengthen(REL, "a0", f"b{i % 5}", {"Donate": 1, "Like": 2})
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert all(n > 0 for n in reads), reads
    c = engine.get_counter(REL, "a0")
    assert c["props"]["Donate"]["sum"] == 400 and c["props"]["Like"]["sum"] == 800


def test_a_durable_engine_reopens_with_its_acknowledged_writes():
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as d:
        engine = relcount.Engine.open(d, fsync="no")
        engine.define(REL, DB_A, DB_B, PROPS)
        oracle = Oracle()
        for i in range(200):
            step(engine, oracle, rng)
            if i == 100:
                engine.compact()
        del engine
        again = relcount.Engine.open(d)
        check(again, oracle, "after reopening")
