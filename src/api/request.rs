//! Reading a request: a body's fields taken one by one (whatever is left is unknown),
//! with errors that say what to fix; the profile a request names, as an
//! [`OwnedMatch`]; typed weights; the token of an `Authorization` header; a profile's
//! data for an import.

use super::json::{self, Json};
use super::{Code, Fail};
use crate::api::Api;
use crate::limits::MAX_PROPS;
use crate::profile::data::{Channel, FieldValue, OwnedMatch, ProfileData, Subscription};
use crate::value::{PropKind, Value};

/// A JSON object's fields, taken one by one; whatever is left at the end is unknown.
pub(super) struct Fields {
    what: &'static str,
    fields: Vec<(String, Option<Json>)>,
}

/// How a value was written, for an error text that names what was given.
pub(super) fn given(v: &Json) -> String {
    match v {
        Json::Int(i) => format!("the integer {i}"),
        Json::BigInt(t) => format!("the integer {t}"),
        Json::Float(x) => {
            let mut s = String::from("the float ");
            json::write_f64(&mut s, *x);
            s
        }
        Json::Str(s) if s.len() <= 64 => format!("the string {s:?}"),
        other => other.kind().to_owned(),
    }
}

impl Fields {
    pub(super) fn of(what: &'static str, value: Json) -> Result<Fields, Fail> {
        match value {
            Json::Obj(fields) => Ok(Fields {
                what,
                fields: fields.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            }),
            other => Err(Fail::bad(format!(
                "{what} must be a JSON object, got {}",
                other.kind()
            ))),
        }
    }

    pub(super) fn take(&mut self, name: &str) -> Option<Json> {
        self.fields
            .iter_mut()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.take())
            .filter(|v| *v != Json::Null)
    }

    pub(super) fn u32(&mut self, name: &str) -> Result<Option<u32>, Fail> {
        self.take(name)
            .map(|v| match v {
                Json::Int(i) if u32::try_from(i).is_ok() => Ok(i as u32),
                other => Err(Fail::bad(format!(
                    "{name} must be an integer from 0 to 4294967295, got {}",
                    given(&other)
                ))),
            })
            .transpose()
    }

    pub(super) fn req_u32(&mut self, name: &str) -> Result<u32, Fail> {
        self.u32(name)?
            .ok_or_else(|| Fail::bad(format!("{name} is required")))
    }

    pub(super) fn usize(&mut self, name: &str, default: usize) -> Result<usize, Fail> {
        match self.take(name) {
            None => Ok(default),
            Some(Json::Int(i)) if i >= 0 => Ok(usize::try_from(i).unwrap_or(usize::MAX)),
            // Beyond i64 but not negative: past any end, as a huge skip or limit is.
            Some(Json::BigInt(t)) if !t.starts_with('-') => Ok(usize::MAX),
            Some(other) => Err(Fail::bad(format!(
                "{name} must be a non-negative integer, got {}",
                given(&other)
            ))),
        }
    }

    pub(super) fn string(&mut self, name: &str) -> Result<Option<String>, Fail> {
        self.take(name)
            .map(|v| match v {
                Json::Str(s) => Ok(s),
                other => Err(Fail::bad(format!(
                    "{name} must be a string, got {}",
                    other.kind()
                ))),
            })
            .transpose()
    }

    pub(super) fn req_string(&mut self, name: &str) -> Result<String, Fail> {
        self.string(name)?
            .ok_or_else(|| Fail::bad(format!("{name} is required")))
    }

    /// Fails on the first field nobody took.
    pub(super) fn finish(self) -> Result<(), Fail> {
        match self.fields.into_iter().find(|(_, v)| v.is_some()) {
            Some((k, _)) => Err(Fail::bad(format!("unknown field {k:?} in {}", self.what))),
            None => Ok(()),
        }
    }
}

/// A field the matching mode needs.
fn need(v: Option<String>, name: &str, mode: &str) -> Result<String, Fail> {
    v.ok_or_else(|| Fail::bad(format!("{name} is required for matching {mode}")))
}

/// The matching fields (docs/api.md, *Matching a profile*), as given: read into an [`OwnedMatch`].
pub(super) struct Who {
    mode: Mode,
    email: Option<String>,
    phone: Option<String>,
    profile_id: Option<String>,
    field_name: Option<String>,
    field_value: Option<String>,
    resource_id: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Email,
    EmailProfile,
    Phone,
    ProfileId,
    Custom,
}

impl Who {
    /// The profile a request's matching fields name (they are `f`'s own fields:
    /// `matching`, `email`, `phone`, `profile_id`, `field_name`, `field_value`,
    /// `resource_id`).
    pub(super) fn read(f: &mut Fields) -> Result<OwnedMatch, Fail> {
        let matching = f.string("matching")?;
        let email = f.string("email")?;
        let phone = f.string("phone")?;
        let profile_id = f.string("profile_id")?;
        let field_name = f.string("field_name")?;
        let field_value = match f.take("field_value") {
            None => None,
            Some(Json::Str(s)) => Some(s),
            Some(Json::Int(i)) => Some(i.to_string()),
            Some(Json::BigInt(t)) => Some(t.into()),
            Some(other) => {
                return Err(Fail::bad(format!(
                    "field_value must be a string or an integer, got {}",
                    other.kind()
                )));
            }
        };
        let resource_id = f.u32("resource_id")?;
        let mode = match matching.as_deref() {
            Some("email") => Mode::Email,
            Some("email_profile") => Mode::EmailProfile,
            Some("phone") => Mode::Phone,
            Some("profile_id") => Mode::ProfileId,
            Some("custom") => Mode::Custom,
            Some(other) => {
                return Err(Fail::bad(format!(
                    "matching must be one of email, email_profile, phone, profile_id, custom; got {other:?}"
                )));
            }
            // docs/api.md, *Matching a profile*: email if given, else profile_id if given, else phone.
            None if email.is_some() => Mode::Email,
            None if profile_id.is_some() => Mode::ProfileId,
            None => Mode::Phone,
        };
        if resource_id.is_some() && !matches!(mode, Mode::Email | Mode::Phone) {
            return Err(Fail::bad(
                "resource_id narrows email and phone matching only; it cannot be given with matching email_profile, profile_id or custom",
            ));
        }
        let who = Who {
            mode,
            email,
            phone,
            profile_id,
            field_name,
            field_value,
            resource_id,
        };
        who.into_match()
    }

    fn into_match(self) -> Result<OwnedMatch, Fail> {
        Ok(match self.mode {
            Mode::Email => OwnedMatch::Email {
                email: need(self.email, "email", "email")?,
                resource_id: self.resource_id,
            },
            Mode::EmailProfile => {
                OwnedMatch::EmailProfile(need(self.email, "email", "email_profile")?)
            }
            Mode::Phone => OwnedMatch::Phone {
                phone: self.phone.ok_or_else(|| {
                    Fail::bad(
                        "a profile is required: give profile_id, email, phone, or matching custom with field_name and field_value",
                    )
                })?,
                resource_id: self.resource_id,
            },
            Mode::ProfileId => OwnedMatch::Id(need(self.profile_id, "profile_id", "profile_id")?),
            Mode::Custom => OwnedMatch::Custom {
                field: need(self.field_name, "field_name", "custom")?,
                value: need(self.field_value, "field_value", "custom")?,
            },
        })
    }

    /// `profile_a` / `profile_b` of a write: an object of matching fields, or a bare
    /// id string.
    pub(super) fn of_field(f: &mut Fields, name: &'static str) -> Result<OwnedMatch, Fail> {
        match f.take(name) {
            None => Err(Fail::bad(format!("{name} is required"))),
            Some(Json::Str(id)) => Ok(OwnedMatch::Id(id)),
            Some(v @ Json::Obj(_)) => {
                let mut inner = Fields::of(name, v)?;
                let who = Who::read(&mut inner)?;
                inner.finish()?;
                Ok(who)
            }
            Some(other) => Err(Fail::bad(format!(
                "{name} must be an object such as {{\"profile_id\": \"...\"}}, got {}",
                other.kind()
            ))),
        }
    }
}

/// The weights of a write, typed from their JSON form. An integer is an integer
/// whatever its size: within `i64` it is `Value::Int` (which a float property takes as
/// a float); beyond, a float property takes it as the double nearest it, and any
/// other property refuses it by name (the schema of `rel_id` says which is which).
pub(super) fn weights(
    api: &Api,
    rel_id: u32,
    f: &mut Fields,
) -> Result<Vec<(String, Value)>, Fail> {
    let Some(w) = f.take("weights") else {
        return Ok(Vec::new());
    };
    let Json::Obj(pairs) = w else {
        return Err(Fail::bad(format!(
            "weights must be an object such as {{\"Donate\": 20}}, got {}",
            w.kind()
        )));
    };
    if pairs.len() > MAX_PROPS {
        return Err(Fail::bad(format!(
            "weights may name at most {MAX_PROPS} properties"
        )));
    }
    pairs
        .into_iter()
        .map(|(name, v)| {
            let value = match v {
                Json::Int(i) => Value::Int(i),
                Json::Float(x) => Value::Float(x),
                Json::Bool(b) => Value::Bool(b),
                Json::BigInt(t) => {
                    let kind = api
                        .engine
                        .relation_type(rel_id)
                        .and_then(|def| def.props().find(|(n, _)| *n == name).map(|(_, s)| s.kind()));
                    match kind {
                        // The nearest double; beyond the float range it is refused by
                        // the engine as any other too large float ("within +/-2^960").
                        // So for an unknown relation or property, which the engine then
                        // names: were the relation defined between this read of its
                        // schema and the write, the value is still the caller's (a
                        // float property takes it, another refuses a float), never a
                        // stand-in that a float property would store.
                        Some(PropKind::Float) | None => {
                            let x = t.parse::<f64>().unwrap_or(f64::MAX);
                            Value::Float(if x.is_finite() { x } else { f64::MAX.copysign(x) })
                        }
                        Some(kind) => {
                            return Err(Fail::bad(format!(
                                "property {name} is {kind}, got the integer {t}, outside the int64 range"
                            )));
                        }
                    }
                }
                other => {
                    return Err(Fail::bad(format!(
                        "property {name} must be a number or a boolean, got {}",
                        other.kind()
                    )));
                }
            };
            Ok((name, value))
        })
        .collect()
}

pub(super) fn bearer(header: &str) -> Result<&str, Fail> {
    let h = header.trim();
    match h.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Fail::new(
            Code::Unauthorized,
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

/// The id of a profile an import names: imports name profiles by id only.
pub(super) fn by_id(who: OwnedMatch, name: &str) -> Result<String, Fail> {
    match who {
        OwnedMatch::Id(id) => Ok(id),
        _ => Err(Fail::bad(format!(
            "{name} must name a profile by id in an import, as {{\"profile_id\": \"...\"}}"
        ))),
    }
}

/// One profile of `profiles/import`: its database (`default_db` when the batch gives
/// it), id and data.
pub(super) fn profile(
    f: &mut Fields,
    default_db: Option<u32>,
) -> Result<(u32, String, ProfileData), Fail> {
    let db = match f.u32("db_id")? {
        Some(db) => db,
        None => default_db.ok_or_else(|| Fail::bad("db_id is required"))?,
    };
    let id = f.req_string("profile_id")?;
    let email = f.string("email")?;
    let phone = f.string("phone")?;
    let mut fields = Vec::new();
    match f.take("fields") {
        None => {}
        Some(Json::Obj(pairs)) => {
            for (name, v) in pairs {
                let value = match v {
                    Json::Str(s) => FieldValue::Text(s),
                    Json::Int(i) => FieldValue::Int(i),
                    // Compared as text like every field: the digits as written.
                    Json::BigInt(t) => FieldValue::Text(t.into()),
                    Json::Arr(tags) => FieldValue::Tags(
                        tags.into_iter()
                            .map(|t| match t {
                                Json::Str(s) => Ok(s),
                                other => Err(Fail::bad(format!(
                                    "tags of field {name} must be strings, got {}",
                                    other.kind()
                                ))),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    other => {
                        return Err(Fail::bad(format!(
                            "field {name} must be a string, an integer or an array of tags, got {}",
                            other.kind()
                        )));
                    }
                };
                fields.push((name, value));
            }
        }
        Some(other) => {
            return Err(Fail::bad(format!(
                "fields must be an object, got {}",
                other.kind()
            )));
        }
    }
    let mut subscriptions = Vec::new();
    match f.take("subscriptions") {
        None => {}
        Some(Json::Arr(subs)) => {
            for sub in subs {
                let mut s = Fields::of("a subscription", sub)?;
                let resource_id = s.req_u32("resource_id")?;
                let (channel, address) = match s.req_string("channel")?.as_str() {
                    "email" => (Channel::Email, s.req_string("email")?),
                    "sms" => (Channel::Sms, s.req_string("phone")?),
                    other => {
                        return Err(Fail::bad(format!(
                            "channel must be email or sms, got {other:?}"
                        )));
                    }
                };
                s.finish()?;
                subscriptions.push(Subscription {
                    resource_id,
                    channel,
                    address,
                });
            }
        }
        Some(other) => {
            return Err(Fail::bad(format!(
                "subscriptions must be an array, got {}",
                other.kind()
            )));
        }
    }
    Ok((
        db,
        id,
        ProfileData {
            email,
            phone,
            fields,
            subscriptions,
        },
    ))
}
