//! Python values in, plain Python objects out.
//!
//! In: a profile is a `str` (its id) or a dict naming it by the platform's matching
//! modes; weights are a dict of `int`, `float` and `bool`; a definition's properties a
//! dict of specs, as `relations/define` takes them; profile data as `profiles/import`
//! takes it. Out: a counter and a page are dicts in the seed's shape (ints stay ints,
//! floats floats, `None` where the platform prints null).
//!
//! A value of the wrong Python type raises `TypeError`; a value of the right type the
//! engine would refuse raises the engine's error (see `errors`).

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use relcount::{
    Channel, Counter, FieldValue, OwnedMatch, Page, ProfileData, PropKind, PropSpec, RelationType,
    Subscription, Sum, Value, format_xxh,
};

use crate::errors::invalid;

/// A profile as a call names it: `"id"`, `{"profile_id": ...}`, `{"email": ...,
/// "resource_id": n}`, `{"email_profile": ...}`, `{"phone": ..., "resource_id": n}` or
/// `{"field_name": ..., "field_value": str | int}`.
pub(crate) fn profile(p: &Bound<'_, PyAny>) -> PyResult<OwnedMatch> {
    if let Ok(id) = p.cast::<PyString>() {
        return Ok(OwnedMatch::Id(id.to_str()?.to_owned()));
    }
    let Ok(d) = p.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!(
            "a profile is a str (its id) or a dict such as {{\"email\": \"...\"}}, got {}",
            type_name(p)
        )));
    };
    let text = |key: &str| -> PyResult<Option<String>> {
        match d.get_item(key)? {
            None => Ok(None),
            Some(v) => match v.cast::<PyString>() {
                Ok(s) => Ok(Some(s.to_str()?.to_owned())),
                Err(_) => match v.cast::<PyInt>() {
                    // A custom field's value may be an int: matched as its text.
                    Ok(i) if key == "field_value" && !v.is_instance_of::<PyBool>() => {
                        Ok(Some(i.to_string()))
                    }
                    _ => Err(PyTypeError::new_err(format!(
                        "profile {key} must be a str, got {}",
                        type_name(&v)
                    ))),
                },
            },
        }
    };
    let resource_id = match d.get_item("resource_id")? {
        None => None,
        Some(v) if v.is_none() => None,
        // Not an int: TypeError; out of the u32 range: OverflowError, as Python's
        // own conversions answer.
        Some(v) => Some(v.extract::<u32>()?),
    };
    let known = [
        "profile_id",
        "email",
        "email_profile",
        "phone",
        "field_name",
        "field_value",
        "resource_id",
    ];
    for key in d.keys() {
        let key = key.str()?.to_string();
        if !known.contains(&key.as_str()) {
            return Err(invalid(format!(
                "a profile dict takes {}; got the key {key:?}",
                known.join(", ")
            )));
        }
    }
    let named = match (
        text("profile_id")?,
        text("email")?,
        text("email_profile")?,
        text("phone")?,
        text("field_name")?,
        text("field_value")?,
    ) {
        (Some(id), None, None, None, None, None) if resource_id.is_none() => OwnedMatch::Id(id),
        (None, Some(email), None, None, None, None) => OwnedMatch::Email { email, resource_id },
        (None, None, Some(email), None, None, None) if resource_id.is_none() => {
            OwnedMatch::EmailProfile(email)
        }
        (None, None, None, Some(phone), None, None) => OwnedMatch::Phone { phone, resource_id },
        (None, None, None, None, Some(field), Some(value)) if resource_id.is_none() => {
            OwnedMatch::Custom { field, value }
        }
        _ => {
            return Err(invalid(
                "a profile dict names one profile: {\"profile_id\"}, {\"email\"[, \"resource_id\"]}, \
                 {\"email_profile\"}, {\"phone\"[, \"resource_id\"]} or {\"field_name\", \"field_value\"}",
            ));
        }
    };
    Ok(named)
}

/// Weights as the engine takes them, owned. `schema` types an int beyond the int64
/// range: a float property takes the double nearest it, any other refuses it by name
/// (as the JSON API does).
pub(crate) fn weights(
    w: Option<&Bound<'_, PyAny>>,
    schema: Option<&RelationType>,
) -> PyResult<Vec<(String, Value)>> {
    let Some(w) = w.filter(|w| !w.is_none()) else {
        return Ok(Vec::new());
    };
    let Ok(d) = w.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!(
            "weights are a dict such as {{\"Donate\": 20}}, got {}",
            type_name(w)
        )));
    };
    let mut out = Vec::with_capacity(d.len());
    for (name, v) in items(d)? {
        let Ok(name) = name.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "a weight's name is a str, got {}",
                type_name(&name)
            )));
        };
        let name = name.to_str()?.to_owned();
        let value = value(&name, &v, schema)?;
        out.push((name, value));
    }
    Ok(out)
}

/// One weight's value.
fn value(name: &str, v: &Bound<'_, PyAny>, schema: Option<&RelationType>) -> PyResult<Value> {
    // bool first: in Python a bool is an int.
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = v.cast::<PyInt>() {
        if let Ok(i) = i.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        let kind = schema.and_then(|s| s.props().find(|(n, _)| *n == name).map(|(_, s)| s.kind()));
        // The double nearest it (beyond the float range, the engine refuses it as any
        // other too large float).
        let nearest = || -> PyResult<Value> {
            Ok(Value::Float(match i.extract::<f64>() {
                Ok(x) => x,
                Err(_) if i.lt(0)? => -f64::MAX,
                Err(_) => f64::MAX,
            }))
        };
        return match kind {
            Some(PropKind::Int) => Err(invalid(format!(
                "property {name} is int, got the integer {i}, outside the int64 range"
            ))),
            Some(PropKind::Bool) => Err(crate::errors::raise(
                v.py(),
                &relcount::Error::WrongType {
                    property: name.to_owned(),
                    expected: PropKind::Bool,
                    got: "int",
                },
            )),
            // A float property takes the nearest double. So does an unknown relation
            // or property: the engine then names which; and should the relation be
            // defined between this read of its schema and the write, the value is
            // still the caller's (a float property takes it, any other refuses a
            // float), never a stand-in.
            Some(PropKind::Float) | None => nearest(),
        };
    }
    if let Ok(x) = v.cast::<PyFloat>() {
        return Ok(Value::Float(x.value()));
    }
    Err(PyTypeError::new_err(format!(
        "property {name} must be an int, a float or a bool, got {}",
        type_name(v)
    )))
}

/// A relation type from `define`'s arguments: `props` maps each name (in order) to
/// `{"type": "int" | "float" | "bool", "sum": bool, "top": n}`.
pub(crate) fn definition(
    rel_id: u32,
    db_a: u32,
    db_b: u32,
    props: &Bound<'_, PyDict>,
) -> PyResult<RelationType> {
    let mut def = RelationType::new(rel_id, db_a, db_b);
    for (name, spec) in items(props)? {
        let Ok(name) = name.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "a property's name is a str, got {}",
                type_name(&name)
            )));
        };
        let name = name.to_str()?;
        let Ok(spec) = spec.cast::<PyDict>() else {
            return Err(PyTypeError::new_err(format!(
                "property {name}'s spec is a dict such as {{\"type\": \"int\", \"top\": 10}}, got {}",
                type_name(&spec)
            )));
        };
        def = def.prop(name, prop_spec(rel_id, name, spec)?);
    }
    Ok(def)
}

/// One property's spec.
fn prop_spec(rel_id: u32, name: &str, spec: &Bound<'_, PyDict>) -> PyResult<PropSpec> {
    let bad = |reason: String| {
        crate::errors::raise(
            spec.py(),
            &relcount::Error::InvalidSchema { rel_id, reason },
        )
    };
    for key in spec.keys() {
        let key = key.str()?.to_string();
        if !["type", "sum", "top"].contains(&key.as_str()) {
            return Err(bad(format!(
                "property {name}: unknown key {key:?} (a spec takes type, sum and top)"
            )));
        }
    }
    let kind = match spec.get_item("type")? {
        None => return Err(bad(format!("property {name}: type is required"))),
        Some(t) => t.extract::<String>().map_err(|_| {
            PyTypeError::new_err(format!(
                "property {name}: type is a str, got {}",
                type_name(&t)
            ))
        })?,
    };
    let mut out = match kind.as_str() {
        "int" => PropSpec::int(),
        "float" => PropSpec::float(),
        "bool" => PropSpec::bool(),
        _ => {
            return Err(bad(format!(
                "property {name}: type must be \"int\", \"float\" or \"bool\""
            )));
        }
    };
    if let Some(sum) = spec.get_item("sum")? {
        let Ok(sum) = sum.cast::<PyBool>() else {
            return Err(PyTypeError::new_err(format!(
                "property {name}: sum is a bool, got {}",
                type_name(&sum)
            )));
        };
        if sum.is_true() {
            out = out.sum();
        }
    }
    if let Some(top) = spec.get_item("top")?.filter(|t| !t.is_none()) {
        let n = match top.cast::<PyInt>() {
            Ok(n) if !top.is_instance_of::<PyBool>() => n.extract::<u16>().ok(),
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "property {name}: top is an int, got {}",
                    type_name(&top)
                )));
            }
        };
        let Some(n) = n else {
            return Err(bad(format!(
                "property {name}: top must be an int from 1 to {}",
                relcount::limits::MAX_TOP
            )));
        };
        out = out.top(n);
    }
    Ok(out)
}

/// Profile data from `import_profile`'s keyword arguments, shaped as `profiles/import`
/// takes it: fields map a name to a str, an int or a list of tags; subscriptions are
/// dicts `{"resource_id": n, "channel": "email", "email": ...}` or `{..., "channel":
/// "sms", "phone": ...}`.
pub(crate) fn profile_data(
    email: Option<String>,
    phone: Option<String>,
    fields: Option<&Bound<'_, PyDict>>,
    subscriptions: Option<&Bound<'_, PyList>>,
) -> PyResult<ProfileData> {
    let mut data = ProfileData {
        email,
        phone,
        ..ProfileData::default()
    };
    let fields = match fields {
        Some(f) => items(f)?,
        None => Vec::new(),
    };
    for (name, v) in fields {
        let name: String = name
            .extract()
            .map_err(|_| PyTypeError::new_err("a field's name is a str"))?;
        let value = if let Ok(s) = v.cast::<PyString>() {
            FieldValue::Text(s.to_str()?.to_owned())
        } else if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
            FieldValue::Int(
                v.extract().map_err(|_| {
                    invalid(format!("field {name} is an int outside the int64 range"))
                })?,
            )
        } else if let Ok(tags) = v.cast::<PyList>() {
            FieldValue::Tags(
                tags.iter()
                    .map(|t| t.extract::<String>())
                    .collect::<PyResult<_>>()
                    .map_err(|_| PyTypeError::new_err(format!("field {name}'s tags are strs")))?,
            )
        } else {
            return Err(PyTypeError::new_err(format!(
                "field {name} is a str, an int or a list of tags, got {}",
                type_name(&v)
            )));
        };
        data.fields.push((name, value));
    }
    for s in subscriptions.into_iter().flat_map(|s| s.iter()) {
        let Ok(s) = s.cast::<PyDict>() else {
            return Err(PyTypeError::new_err(
                "a subscription is a dict such as {\"resource_id\": 24, \"channel\": \"email\", \"email\": \"...\"}",
            ));
        };
        let get = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> { s.get_item(key) };
        let resource_id: u32 = get("resource_id")?
            .ok_or_else(|| invalid("a subscription needs resource_id"))?
            .extract()?;
        let channel: String = get("channel")?
            .ok_or_else(|| invalid("a subscription needs its channel, \"email\" or \"sms\""))?
            .extract()
            .map_err(|_| PyTypeError::new_err("a subscription's channel is a str"))?;
        let (channel, key) = match channel.as_str() {
            "email" => (Channel::Email, "email"),
            "sms" => (Channel::Sms, "phone"),
            _ => return Err(invalid("a subscription's channel is \"email\" or \"sms\"")),
        };
        let address: String = get(key)?
            .ok_or_else(|| invalid(format!("a {key} subscription needs its {key}")))?
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("a subscription's {key} is a str")))?;
        data.subscriptions.push(Subscription {
            resource_id,
            channel,
            address,
        });
    }
    Ok(data)
}

/// A value as Python has it.
fn py_value<'py>(py: Python<'py>, v: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(x) => x.into_pyobject(py)?.into_any(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
    })
}

/// A counter as the seed's `data`: `{"profile_id", "profile_xxh", "total", "props":
/// {name: {"total", "top": [{"profile_id", "value"}] | None, "sum": number | None}}}`.
pub(crate) fn counter<'py>(py: Python<'py>, c: &Counter) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item(intern!(py, "profile_id"), c.profile_id().as_str().as_ref())?;
    out.set_item(intern!(py, "profile_xxh"), format_xxh(c.profile_xxh()))?;
    out.set_item(intern!(py, "total"), c.total())?;
    let props = PyDict::new(py);
    for p in c.props() {
        let prop = PyDict::new(py);
        prop.set_item(intern!(py, "total"), p.total())?;
        match p.top() {
            None => prop.set_item(intern!(py, "top"), py.None())?,
            Some(top) => {
                let list = PyList::empty(py);
                for item in top {
                    let entry = PyDict::new(py);
                    entry.set_item(intern!(py, "profile_id"), item.profile_id.as_str().as_ref())?;
                    entry.set_item(intern!(py, "value"), py_value(py, item.value)?)?;
                    list.append(entry)?;
                }
                prop.set_item(intern!(py, "top"), list)?;
            }
        }
        match p.sum() {
            None => prop.set_item(intern!(py, "sum"), py.None())?,
            Some(Sum::Int(i)) => prop.set_item(intern!(py, "sum"), i)?,
            Some(Sum::Float(x)) => prop.set_item(intern!(py, "sum"), x)?,
        }
        props.set_item(p.name(), prop)?;
    }
    out.set_item(intern!(py, "props"), props)?;
    Ok(out)
}

/// A page as `relations/get` answers it: `{"data": [rows], "total_count"}`.
pub(crate) fn page<'py>(py: Python<'py>, page: &Page) -> PyResult<Bound<'py, PyDict>> {
    let rows = PyList::empty(py);
    let xxh_a = format_xxh(page.xxh_a);
    for row in &page.rows {
        let r = PyDict::new(py);
        r.set_item(
            intern!(py, "profile_id_a"),
            page.profile_a.as_str().as_ref(),
        )?;
        r.set_item(intern!(py, "xxh_a"), &xxh_a)?;
        r.set_item(intern!(py, "profile_id_b"), row.profile_b.as_str().as_ref())?;
        r.set_item(intern!(py, "xxh_b"), format_xxh(row.xxh_b))?;
        r.set_item(intern!(py, "db_b"), page.db_b)?;
        let props = PyDict::new(py);
        for (name, v) in &row.props {
            let valued = PyDict::new(py);
            valued.set_item(intern!(py, "value"), py_value(py, *v)?)?;
            props.set_item(name, valued)?;
        }
        r.set_item(intern!(py, "props"), props)?;
        rows.append(r)?;
    }
    let out = PyDict::new(py);
    out.set_item(intern!(py, "data"), rows)?;
    out.set_item(intern!(py, "total_count"), page.total_count)?;
    Ok(out)
}

/// A dict's pairs, copied first: a value's conversion that changes the dict (a
/// `__float__` of a subclass) cannot disturb the loop over them.
fn items<'py>(d: &Bound<'py, PyDict>) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    d.items().iter().map(|kv| kv.extract()).collect()
}

/// A Python value's type name, for messages.
fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}
