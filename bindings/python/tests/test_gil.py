"""A write lets the GIL go while the engine works, so the host's other threads run
(and read) during it.

The switch interval is raised for the test so that CPython never takes the GIL from
a thread by force: another thread runs only when the running one gives the GIL up.
The main thread then counts the reads it makes while a bulk import is inside the
engine; were the GIL held through the import, the writer would run it to the end
before the main thread could read once, and the count would be 0."""

import sys
import threading

import relcount

ROWS = 300_000


def test_reads_run_while_a_bulk_import_is_inside_the_engine():
    engine = relcount.Engine()
    engine.define(3, 1, 2, {"Donate": {"type": "int", "top": 10, "sum": True}})
    engine.attach(3, "reader", "b", {"Donate": 1})
    rows = [(f"a{i % 5000}", f"b{i}", {"Donate": i % 97}) for i in range(ROWS)]
    entered, done = threading.Event(), [False]

    def writer():
        entered.set()  # keeps the GIL (the interval is long): the import starts next
        engine.import_relations(3, rows)
        done[0] = True

    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        t = threading.Thread(target=writer)
        t.start()
        entered.wait()
        during = 0
        while not done[0]:
            assert engine.get_counter(3, "reader")["total"] == 1
            during += 1
            threading.Event().wait(0.0001)  # gives the GIL up, so the writer can finish
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert during > 0, "no read ran while the import was inside the engine"
    assert engine.relation_count == 1 + len({(a, b) for a, b, _ in rows})
