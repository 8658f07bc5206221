//! The `Engine` class: one method per engine call. Each converts its arguments to
//! owned Rust values holding the GIL, runs the engine call, and converts the answer
//! back.
//!
//! - **Calls that may wait run with the GIL released** (`Python::detach`): writes
//!   (shard locks, the log's fsync), `list` (a shard lock), imports, `open`,
//!   `compact`. So a write that waits on the disk or on another writer never stops
//!   the host's other Python threads, and readers go on during it.
//! - **`get_counter` and `contains_profile` keep the GIL.** They never wait: one
//!   lock-free lookup of well under a microsecond, while turning the answer into
//!   Python objects (which needs the GIL) costs several. Releasing the GIL around the
//!   lookup bought no parallelism and cost a hand-off per call: measured, two
//!   threads reading with it released made 0.62x the reads of one thread, and 1.08x
//!   with it kept (BENCHMARKS.md). On a free-threaded Python (no GIL: the module
//!   declares `gil_used = false`) reads run in parallel outright.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use relcount::{Error, Op, OwnedMatch, SyncPolicy, Value};

use crate::{convert, errors};

/// An engine: relation types, profiles and their counters, in memory; durable when
/// made by `Engine.open`.
#[pyclass(frozen, module = "relcount", name = "Engine")]
pub(crate) struct Engine {
    inner: relcount::Engine,
}

/// Borrowed weights, as the engine's calls take them.
fn borrowed(weights: &[(String, Value)]) -> Vec<(&str, Value)> {
    weights.iter().map(|(n, v)| (n.as_str(), *v)).collect()
}

/// A row's error of the binding's own (a weight of the wrong type, an int out of
/// range) as the engine reports a refused row: `row N: ...`, with `.row` set. An
/// error of another class (a `UnicodeEncodeError` of an id that is not valid text)
/// keeps its own arguments, with `.row` set.
fn in_row(py: Python<'_>, row: usize, e: PyErr) -> PyErr {
    let ours = e.is_instance_of::<PyTypeError>(py) || e.is_instance_of::<errors::RelcountError>(py);
    let err = if ours {
        PyErr::from_type(e.get_type(py), format!("row {row}: {}", e.value(py)))
    } else {
        e
    };
    let _ = err.value(py).setattr("row", row);
    err
}

impl Engine {
    /// Runs `f` (a call that may wait) on the engine with the GIL released; an
    /// engine error becomes its exception.
    fn call<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&relcount::Engine) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&self.inner))
            .map_err(|e| errors::raise(py, &e))
    }

    /// One of the three writes that take weights: the profiles and the weights
    /// (typed by the relation's schema where a value needs it) converted, then the
    /// write with the GIL released.
    fn write(
        &self,
        py: Python<'_>,
        kind: Op,
        rel_id: u32,
        profile_a: &Bound<'_, PyAny>,
        profile_b: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (a, b) = (convert::profile(profile_a)?, convert::profile(profile_b)?);
        let schema = self.inner.relation_type(rel_id);
        let w = convert::weights(weights, schema.as_ref())?;
        self.call(py, |e| {
            let (a, b, w) = (a.as_match(), b.as_match(), borrowed(&w));
            match kind {
                Op::Attach => e.attach(rel_id, a, b, &w),
                Op::Strengthen => e.strengthen(rel_id, a, b, &w),
                Op::Edit => e.edit(rel_id, a, b, &w),
                Op::Detach => e.detach(rel_id, a, b),
            }
        })
    }
}

#[pymethods]
impl Engine {
    /// An empty in-memory engine; `shards` (default 64) splits the writers' locks.
    #[new]
    #[pyo3(signature = (shards = None))]
    fn new(shards: Option<usize>) -> PyResult<Self> {
        let mut builder = relcount::Engine::builder();
        if let Some(shards) = shards {
            if !(1..=relcount::limits::MAX_SHARDS).contains(&shards) {
                return Err(errors::invalid(format!(
                    "shards must be 1 to {}, got {shards}",
                    relcount::limits::MAX_SHARDS
                )));
            }
            builder = builder.shards(shards);
        }
        Ok(Self {
            inner: builder.build(),
        })
    }

    /// A durable engine on the data directory `path` (made if missing), recovered to
    /// exactly its acknowledged writes. `fsync` is `"always"` (default: a write that
    /// returned survives a power loss), `"everysec"` or `"no"`. The directory is
    /// released when the engine is garbage-collected.
    #[staticmethod]
    #[pyo3(signature = (path, fsync = "always"))]
    fn open(py: Python<'_>, path: PathBuf, fsync: &str) -> PyResult<Self> {
        let sync: SyncPolicy = fsync.parse().map_err(|e: Error| errors::raise(py, &e))?;
        let inner = py
            .detach(|| relcount::Engine::builder().open(&path, sync))
            .map_err(|e| errors::raise(py, &e))?;
        Ok(Self { inner })
    }

    /// Defines relation type `rel_id` from profiles of `db_b` to profiles of `db_a`.
    /// `props` maps each property name, in order, to `{"type": "int" | "float" |
    /// "bool", "sum": bool, "top": n}`. Defining it again with the same schema does
    /// nothing; with another, raises `SchemaConflict`.
    fn define(
        &self,
        py: Python<'_>,
        rel_id: u32,
        db_a: u32,
        db_b: u32,
        props: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        let def = convert::definition(rel_id, db_a, db_b, props)?;
        self.call(py, |e| e.define(def))
    }

    /// Attaches `profile_b` to `profile_a` with these values, replacing the
    /// relation's values if it exists. Missing profiles are created.
    #[pyo3(signature = (rel_id, profile_a, profile_b, weights = None))]
    fn attach(
        &self,
        py: Python<'_>,
        rel_id: u32,
        profile_a: &Bound<'_, PyAny>,
        profile_b: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write(py, Op::Attach, rel_id, profile_a, profile_b, weights)
    }

    /// Adds these deltas to the relation's numbers (a negative one weakens) and sets
    /// its bools; creates the relation if needed.
    #[pyo3(signature = (rel_id, profile_a, profile_b, weights = None))]
    fn strengthen(
        &self,
        py: Python<'_>,
        rel_id: u32,
        profile_a: &Bound<'_, PyAny>,
        profile_b: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write(py, Op::Strengthen, rel_id, profile_a, profile_b, weights)
    }

    /// Overwrites the listed values of the relation, keeping the others; creates the
    /// relation if needed.
    #[pyo3(signature = (rel_id, profile_a, profile_b, weights = None))]
    fn edit(
        &self,
        py: Python<'_>,
        rel_id: u32,
        profile_a: &Bound<'_, PyAny>,
        profile_b: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.write(py, Op::Edit, rel_id, profile_a, profile_b, weights)
    }

    /// Removes the relation: raises `ProfileNotFound` when either profile does not
    /// exist, `RelationNotFound` when both do and the relation does not.
    fn detach(
        &self,
        py: Python<'_>,
        rel_id: u32,
        profile_a: &Bound<'_, PyAny>,
        profile_b: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (a, b) = (convert::profile(profile_a)?, convert::profile(profile_b)?);
        self.call(py, |e| e.detach(rel_id, a.as_match(), b.as_match()))
    }

    /// Deletes a profile of database `db_id` and every relation it takes part in.
    fn delete_profile(
        &self,
        py: Python<'_>,
        db_id: u32,
        profile: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let p = convert::profile(profile)?;
        self.call(py, |e| e.delete_profile(db_id, p.as_match()))
    }

    /// Creates or replaces a profile's data (never its relations). `fields` maps a
    /// name to a str, an int or a list of tags; `subscriptions` is a list of dicts
    /// `{"resource_id": 24, "channel": "email", "email": ...}` or `{"resource_id": 24,
    /// "channel": "sms", "phone": ...}`.
    #[pyo3(signature = (db_id, profile_id, *, email = None, phone = None, fields = None, subscriptions = None))]
    #[allow(clippy::too_many_arguments)]
    fn import_profile(
        &self,
        py: Python<'_>,
        db_id: u32,
        profile_id: String,
        email: Option<String>,
        phone: Option<String>,
        fields: Option<&Bound<'_, PyDict>>,
        subscriptions: Option<&Bound<'_, PyList>>,
    ) -> PyResult<()> {
        let data = convert::profile_data(email, phone, fields, subscriptions)?;
        self.call(py, |e| e.import_profile(db_id, &profile_id, data))
    }

    /// Attaches many relations of one type, all or nothing: `rows` is an iterable of
    /// `(profile_a_id, profile_b_id, weights)`. A refused row raises its error with
    /// `.row` set and changes nothing. Returns the number of rows.
    fn import_relations(
        &self,
        py: Python<'_>,
        rel_id: u32,
        rows: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let schema = self.inner.relation_type(rel_id);
        let mut owned = Vec::new();
        for (i, row) in rows.try_iter()?.enumerate() {
            let row = row?;
            let (a, b, w): (Bound<'_, PyAny>, Bound<'_, PyAny>, Option<Bound<'_, PyAny>>) =
                row.extract().map_err(|_| {
                    let shape = "a row is a tuple (profile_a_id, profile_b_id, weights)";
                    in_row(py, i, PyTypeError::new_err(shape))
                })?;
            let a: String = a.extract().map_err(|e| in_row(py, i, e))?;
            let b: String = b.extract().map_err(|e| in_row(py, i, e))?;
            let w = convert::weights(w.as_ref(), schema.as_ref()).map_err(|e| in_row(py, i, e))?;
            owned.push((a, b, w));
        }
        self.call(py, |e| {
            e.import_relations(rel_id, owned.iter().map(|(a, b, w)| (a, b, borrowed(w))))
        })
    }

    /// Applies a batch of writes in order, all or nothing: `writes` is an iterable of
    /// `(op, rel_id, profile_a_id, profile_b_id, weights)` where `op` is "attach",
    /// "strengthen", "edit" or "detach" (weights `None` or left out for a detach).
    /// A refused write raises its error with `.row` set and changes nothing.
    /// Returns the number of writes.
    fn apply(&self, py: Python<'_>, writes: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut batch = Vec::new();
        let mut schemas: Vec<(u32, Option<relcount::RelationType>)> = Vec::new();
        for (i, item) in writes.try_iter()?.enumerate() {
            let item = item?;
            let shape = "a write is a tuple (op, rel_id, profile_a_id, profile_b_id[, weights])";
            let bad = || in_row(py, i, PyTypeError::new_err(shape));
            let (op, rel_id, a, b, w): (String, u32, String, String, Option<Bound<'_, PyAny>>) =
                match item.extract::<(String, u32, String, String, Option<Bound<'_, PyAny>>)>() {
                    Ok(t) => t,
                    Err(_) => {
                        let (op, rel_id, a, b): (String, u32, String, String) =
                            item.extract().map_err(|_| bad())?;
                        (op, rel_id, a, b, None)
                    }
                };
            let op = match op.as_str() {
                "attach" => Op::Attach,
                "strengthen" => Op::Strengthen,
                "edit" => Op::Edit,
                "detach" => Op::Detach,
                other => {
                    let why = format!("op {other:?} is none of attach, strengthen, edit, detach");
                    return Err(in_row(py, i, PyTypeError::new_err(why)));
                }
            };
            let schema = match schemas.iter().find(|(id, _)| *id == rel_id) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = self.inner.relation_type(rel_id);
                    schemas.push((rel_id, s.clone()));
                    s
                }
            };
            let values =
                convert::weights(w.as_ref(), schema.as_ref()).map_err(|e| in_row(py, i, e))?;
            batch.push(relcount::Write::new(op, rel_id, a, b, values));
        }
        self.call(py, |e| e.apply(&batch))
    }

    /// The counters of `profile` for relation type `rel_id`, as the seed's `data`:
    /// `{"profile_id", "profile_xxh", "total", "props": {name: {"total", "top",
    /// "sum"}}}`.
    fn get_counter<'py>(
        &self,
        py: Python<'py>,
        rel_id: u32,
        profile: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        // A lookup by id never waits; one by data may take a moment (a tag lookup
        // intersects postings), so it lets the GIL go.
        let counter = match convert::profile(profile)? {
            OwnedMatch::Id(id) => self
                .inner
                .get_counter(rel_id, id.as_str())
                .map_err(|e| errors::raise(py, &e))?,
            other => self.call(py, |e| e.get_counter(rel_id, other.as_match()))?,
        };
        convert::counter(py, &counter)
    }

    /// One page of `profile`'s relations of type `rel_id`, ordered by initiator id:
    /// `{"data": [rows], "total_count"}`. `limit` is 1 to 1000.
    #[pyo3(signature = (rel_id, profile, skip = 0, limit = 100))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        rel_id: u32,
        profile: &Bound<'py, PyAny>,
        skip: usize,
        limit: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let p = convert::profile(profile)?;
        let page = self.call(py, |e| e.list(rel_id, p.as_match(), skip, limit))?;
        convert::page(py, &page)
    }

    /// Whether database `db_id` holds this profile.
    fn contains_profile(
        &self,
        py: Python<'_>,
        db_id: u32,
        profile: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let p = convert::profile(profile)?;
        Ok(match p {
            OwnedMatch::Id(id) => self.inner.contains_profile(db_id, id.as_str()),
            other => py.detach(|| self.inner.contains_profile(db_id, other.as_match())),
        })
    }

    /// Folds the write log into a new snapshot (a durable engine only).
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |e| e.compact().map(|_| ()))
    }

    /// Live profiles, every database together.
    #[getter]
    fn profile_count(&self) -> usize {
        self.inner.profile_count()
    }

    /// Relations, every type together.
    #[getter]
    fn relation_count(&self) -> u64 {
        self.inner.relation_count()
    }
}
