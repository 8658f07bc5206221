//! The C ABI's overhead against the Rust call it wraps, in the same run: a
//! `get_counter` with its total and one property read, and an `attach`. The ABI side
//! calls the exported `extern "C"` functions, as a C host does (strings as
//! NUL-terminated pointers, a counter handle made and freed per call).

#![allow(unsafe_code)] // it calls the C ABI, as a C host would

use std::ffi::CString;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use relcount::{Engine, PropSpec, RelationType, Value};
use relcount_c::{
    RC_KIND_INT, RcCounter, RcEngine, RcProp, RcStatus, RcValue, RcWeight, rc_attach,
    rc_counter_free, rc_counter_prop, rc_counter_total, rc_engine_free, rc_engine_new,
    rc_get_counter,
};

/// Profiles in each engine.
const PROFILES: usize = 1_000;

fn id(i: usize) -> String {
    format!("{i:024x}")
}

fn definition() -> RelationType {
    RelationType::new(3, 1, 2)
        .prop("Donate", PropSpec::int().top(10).sum())
        .prop("Like", PropSpec::int().sum())
}

fn abi(c: &mut Criterion) {
    let rust = Engine::new();
    rust.define(definition()).expect("define");
    let mut handle: *mut RcEngine = std::ptr::null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { rc_engine_new(&mut handle) }, RcStatus::Ok);
    // SAFETY: the handle is live (freed at the end); the ABI takes the same schema.
    let c_engine = unsafe { &*handle };
    let ids: Vec<CString> = (0..PROFILES)
        .map(|i| CString::new(id(i)).expect("no NUL"))
        .collect();
    let donate = CString::new("Donate").expect("no NUL");
    let like = CString::new("Like").expect("no NUL");
    let weight = |v: i64| RcWeight {
        name: donate.as_ptr(),
        value: RcValue {
            kind: RC_KIND_INT,
            int_value: v,
            ..RcValue::default()
        },
    };
    let mut props = [relcount_c::RcPropDef {
        name: donate.as_ptr(),
        kind: RC_KIND_INT,
        sum: 1,
        top: 10,
    }; 2];
    props[1] = relcount_c::RcPropDef {
        name: like.as_ptr(),
        kind: RC_KIND_INT,
        sum: 1,
        top: 0,
    };
    // SAFETY: live handle, two definitions with NUL-terminated names.
    let status = unsafe { relcount_c::rc_define(c_engine, 3, 1, 2, props.as_ptr(), 2) };
    assert_eq!(status, RcStatus::Ok);
    for (i, a) in ids.iter().enumerate() {
        for j in 0..5 {
            let b = id(PROFILES + (i * 7 + j) % PROFILES);
            rust.attach(
                3,
                a.to_str().expect("utf-8"),
                b.as_str(),
                &[("Donate", Value::Int(j as i64))],
            )
            .expect("attach");
            let b = CString::new(b).expect("no NUL");
            let w = [weight(j as i64)];
            // SAFETY: live handle, NUL-terminated ids, one weight.
            let status = unsafe { rc_attach(c_engine, 3, a.as_ptr(), b.as_ptr(), w.as_ptr(), 1) };
            assert_eq!(status, RcStatus::Ok);
        }
    }

    let mut group = c.benchmark_group("abi/get_counter");
    let mut i = 0;
    group.bench_function("rust", |bench| {
        bench.iter(|| {
            i = (i + 1) % PROFILES;
            let counter = rust
                .get_counter(3, ids[i].to_str().expect("utf-8"))
                .expect("read");
            black_box((counter.total(), counter.sum("Donate")))
        });
    });
    group.bench_function("c_abi", |bench| {
        bench.iter(|| {
            i = (i + 1) % PROFILES;
            let mut counter: *mut RcCounter = std::ptr::null_mut();
            let mut prop = RcProp::default();
            // SAFETY: live handles and valid out-pointers; the counter is freed once.
            unsafe {
                assert_eq!(
                    rc_get_counter(c_engine, 3, ids[i].as_ptr(), &mut counter),
                    RcStatus::Ok
                );
                let total = rc_counter_total(counter);
                assert_eq!(
                    rc_counter_prop(counter, donate.as_ptr(), &mut prop),
                    RcStatus::Ok
                );
                rc_counter_free(counter);
                black_box((total, prop.sum.int_lo))
            }
        });
    });
    group.finish();

    let mut group = c.benchmark_group("abi/attach");
    let b = id(2 * PROFILES);
    let b_c = CString::new(b.clone()).expect("no NUL");
    let mut v = 0i64;
    group.bench_function("rust", |bench| {
        bench.iter(|| {
            i = (i + 1) % PROFILES;
            v += 1;
            rust.attach(
                3,
                ids[i].to_str().expect("utf-8"),
                b.as_str(),
                &[("Donate", Value::Int(v))],
            )
            .expect("attach");
        });
    });
    group.bench_function("c_abi", |bench| {
        bench.iter(|| {
            i = (i + 1) % PROFILES;
            v += 1;
            let w = [weight(v)];
            // SAFETY: live handle, NUL-terminated ids, one weight.
            let status =
                unsafe { rc_attach(c_engine, 3, ids[i].as_ptr(), b_c.as_ptr(), w.as_ptr(), 1) };
            assert_eq!(status, RcStatus::Ok);
        });
    });
    group.finish();
    // SAFETY: made by rc_engine_new, freed once, no longer used.
    unsafe { rc_engine_free(handle) };
}

criterion_group!(benches, abi);
criterion_main!(benches);
