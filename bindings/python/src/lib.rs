//! relcount for Python hosts: the engine as a native module, built with PyO3 and
//! maturin (`pip install ./bindings/python`), imported as `relcount`.
//!
//! - `engine`: the `Engine` class, one method per engine call; calls that may wait
//!   (writes, `list`, imports) release the GIL while the engine works.
//! - `convert`: Python values in (profiles, weights, definitions, profile data) and
//!   plain Python objects out (a counter and a page in the seed's shape).
//! - `errors`: one exception class per kind of engine error, under `RelcountError`.
//!
//! Data flows one way: Python -> `convert` -> the engine -> `convert` -> Python. The
//! stubs editors read are `relcount.pyi`, beside this crate's `Cargo.toml`.

mod convert;
mod engine;
mod errors;

use pyo3::prelude::*;

/// The `relcount` module: `Engine` and the exception classes.
// Free-threaded Pythons may run it without a GIL: `Engine` is `Sync` and frozen.
#[pymodule(gil_used = false)]
#[pyo3(name = "relcount")]
fn relcount_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
