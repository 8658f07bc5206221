//! Rendering answers in the platform's JSON shapes (the seed page's key order).

use std::fmt::Write;

use super::json;
use crate::accum::counter::{Counter, Sum};
use crate::engine::Page;
use crate::profile::id::format_xxh;
use crate::value::Value;

/// A read's `error_text`.
pub(super) const READ_OK: &str = "Successful operation";
/// The whole answer to a write.
pub(super) const WRITE_OK: &str = "{\"error\":0,\"error_text\":\"\"}";

fn write_value(out: &mut String, v: Value) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(x) => json::write_f64(out, x),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
    }
}

/// `{"data": {...}, "error": 0, "error_text": "Successful operation"}`, keys in the
/// seed page's order, properties in schema order.
pub(super) fn render_counter(c: &Counter) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"data\":{\"profile_id\":");
    json::write_str(&mut out, &c.profile_id().as_str());
    let _ = write!(
        out,
        ",\"profile_xxh\":\"{}\",\"total\":{},\"props\":{{",
        format_xxh(c.profile_xxh()),
        c.total()
    );
    for (i, p) in c.props().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(&mut out, p.name());
        let _ = write!(out, ":{{\"total\":{},\"top\":", p.total());
        match p.top() {
            None => out.push_str("null"),
            Some(top) => {
                out.push('[');
                for (j, t) in top.enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str("{\"profile_id\":");
                    json::write_str(&mut out, &t.profile_id.as_str());
                    out.push_str(",\"value\":");
                    write_value(&mut out, t.value);
                    out.push('}');
                }
                out.push(']');
            }
        }
        out.push_str(",\"sum\":");
        match p.sum() {
            None => out.push_str("null"),
            Some(Sum::Int(s)) => {
                let _ = write!(out, "{s}");
            }
            Some(Sum::Float(s)) => json::write_f64(&mut out, s),
        }
        out.push('}');
    }
    out.push_str("}},\"error\":0,\"error_text\":\"");
    out.push_str(READ_OK);
    out.push_str("\"}");
    out
}

/// `{"data": [rows], "error": 0, "error_text": "...", "total_count": n}`.
pub(super) fn render_page(page: &Page) -> String {
    let mut out = String::with_capacity(64 + page.rows.len() * 160);
    let id_a = page.profile_a.as_str();
    let xxh_a = format_xxh(page.xxh_a);
    let db_b = page.db_b;
    out.push_str("{\"data\":[");
    for (i, row) in page.rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"profile_id_a\":");
        json::write_str(&mut out, &id_a);
        let _ = write!(out, ",\"xxh_a\":\"{xxh_a}\",\"profile_id_b\":");
        json::write_str(&mut out, &row.profile_b.as_str());
        let _ = write!(
            out,
            ",\"xxh_b\":\"{}\",\"db_b\":{db_b},\"props\":{{",
            format_xxh(row.xxh_b)
        );
        for (j, (name, v)) in row.props.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            json::write_str(&mut out, name);
            out.push_str(":{\"value\":");
            write_value(&mut out, *v);
            out.push('}');
        }
        out.push_str("}}");
    }
    let _ = write!(
        out,
        "],\"error\":0,\"error_text\":\"{READ_OK}\",\"total_count\":{}}}",
        page.total_count
    );
    out
}
