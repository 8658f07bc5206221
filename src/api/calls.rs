//! Each call: read the body's fields (with errors that say what to fix), check the
//! token's rights, call the engine, render the answer.

use std::fmt::Write;

use super::json::{self, Json};
use super::quota::Growth;
use super::{Api, CALLS, Fail, TokenScope};
use smallvec::SmallVec;

use crate::accum::counter::{Counter, Sum};
use crate::engine::Page;
use crate::limits::MAX_PROPS;
use crate::profile_data::{Channel, FieldValue, Match, ProfileData, Subscription};
use crate::profile_id::format_xxh;
use crate::schema::{PropSpec, RelationType};
use crate::value::{PropKind, Value};

const READ_OK: &str = "Successful operation";
const WRITE_OK: &str = "{\"error\":0,\"error_text\":\"\"}";

/// A JSON object's fields, taken one by one; whatever is left at the end is unknown.
struct Fields {
    what: &'static str,
    fields: Vec<(String, Option<Json>)>,
}

/// How a value was written, for an error text that names what was given.
fn given(v: &Json) -> String {
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
    fn of(what: &'static str, value: Json) -> Result<Fields, Fail> {
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

    fn take(&mut self, name: &str) -> Option<Json> {
        self.fields
            .iter_mut()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.take())
            .filter(|v| *v != Json::Null)
    }

    fn u32(&mut self, name: &str) -> Result<Option<u32>, Fail> {
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

    fn req_u32(&mut self, name: &str) -> Result<u32, Fail> {
        self.u32(name)?
            .ok_or_else(|| Fail::bad(format!("{name} is required")))
    }

    fn usize(&mut self, name: &str, default: usize) -> Result<usize, Fail> {
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

    fn string(&mut self, name: &str) -> Result<Option<String>, Fail> {
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

    fn req_string(&mut self, name: &str) -> Result<String, Fail> {
        self.string(name)?
            .ok_or_else(|| Fail::bad(format!("{name} is required")))
    }

    /// Fails on the first field nobody took.
    fn finish(self) -> Result<(), Fail> {
        match self.fields.into_iter().find(|(_, v)| v.is_some()) {
            Some((k, _)) => Err(Fail::bad(format!("unknown field {k:?} in {}", self.what))),
            None => Ok(()),
        }
    }
}

/// A field the matching mode needs.
fn need<'a>(v: &'a Option<String>, name: &str, mode: &str) -> Result<&'a str, Fail> {
    v.as_deref()
        .ok_or_else(|| Fail::bad(format!("{name} is required for matching {mode}")))
}

/// The matching fields of SPEC section 6, owned.
struct Who {
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
    fn read(f: &mut Fields) -> Result<Who, Fail> {
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
            // SPEC section 6: email if given, else profile_id if given, else phone.
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
        who.as_match()?;
        Ok(who)
    }

    fn as_match(&self) -> Result<Match<'_>, Fail> {
        Ok(match self.mode {
            Mode::Email => Match::Email {
                email: need(&self.email, "email", "email")?,
                resource_id: self.resource_id,
            },
            Mode::EmailProfile => Match::EmailProfile(need(&self.email, "email", "email_profile")?),
            Mode::Phone => Match::Phone {
                phone: self.phone.as_deref().ok_or_else(|| {
                    Fail::bad(
                        "a profile is required: give profile_id, email, phone, or matching custom with field_name and field_value",
                    )
                })?,
                resource_id: self.resource_id,
            },
            Mode::ProfileId => Match::Id(need(&self.profile_id, "profile_id", "profile_id")?),
            Mode::Custom => Match::Custom {
                field: need(&self.field_name, "field_name", "custom")?,
                value: need(&self.field_value, "field_value", "custom")?,
            },
        })
    }

    /// `profile_a` / `profile_b` of a write: an object of matching fields, or a bare
    /// id string.
    fn of_field(f: &mut Fields, name: &'static str) -> Result<Who, Fail> {
        match f.take(name) {
            None => Err(Fail::bad(format!("{name} is required"))),
            Some(Json::Str(id)) => Ok(Who {
                mode: Mode::ProfileId,
                email: None,
                phone: None,
                profile_id: Some(id),
                field_name: None,
                field_value: None,
                resource_id: None,
            }),
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
fn weights(api: &Api, rel_id: u32, f: &mut Fields) -> Result<Vec<(String, Value)>, Fail> {
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
                        Some(PropKind::Float) => {
                            let x = t.parse::<f64>().unwrap_or(f64::MAX);
                            Value::Float(if x.is_finite() { x } else { f64::MAX.copysign(x) })
                        }
                        Some(kind) => {
                            return Err(Fail::bad(format!(
                                "property {name} is {kind}, got the integer {t}, outside the int64 range"
                            )));
                        }
                        // Unknown relation or property: the engine names which.
                        None => Value::Int(0),
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

fn bearer(header: &str) -> Result<&str, Fail> {
    let h = header.trim();
    match h.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Fail::new(
            401,
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

/// Refuses an `Authorization` header that is not `Bearer <a registered token>`.
pub(super) fn check_header(api: &Api, authorization: Option<&str>) -> Result<(), Fail> {
    match authorization {
        None => Ok(()),
        Some(h) => api.tokens.scope(bearer(h)?).map(|_| ()).ok_or_else(|| {
            Fail::new(
                401,
                "API token required: the Authorization header's token is not registered",
            )
        }),
    }
}

pub(super) fn serve(
    api: &Api,
    call: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<String, Fail> {
    check_header(api, authorization)?;
    let limits = &api.limits;
    if body.len() > limits.max_body_bytes {
        return Err(Fail::new(
            413,
            format!("request body exceeds {} bytes", limits.max_body_bytes),
        ));
    }
    if !CALLS.contains(&call) {
        return Err(Fail::bad(format!(
            "unknown call {call:?}; calls are {}",
            CALLS.join(", ")
        )));
    }
    let body = json::parse(body, limits.max_depth, limits.max_object_keys)
        .map_err(|e| Fail::bad(e.to_string()))?;
    let mut f = Fields::of("the request body", body)?;
    let token = match f.string("token")? {
        Some(t) => t,
        None => match authorization {
            Some(h) => bearer(h)?.to_owned(),
            None => return Err(Fail::new(401, "API token required")),
        },
    };
    let scope = api
        .tokens
        .scope(&token)
        .ok_or_else(|| Fail::new(401, "API token required: the token given is not registered"))?;
    match call {
        "relations/get_counter" => get_counter(api, &scope, f),
        "relations/get" => list(api, &scope, f),
        "relations/attach" | "relations/strengthen" | "relations/edit" => {
            write(api, &scope, call, f)
        }
        "relations/detach" => detach(api, &scope, f),
        "relations/define" => define(api, &scope, f),
        "relations/import" => import_relations(api, &scope, f),
        "profiles/import" => import(api, &scope, f),
        _ => delete(api, &scope, f),
    }
}

fn allow(scope: &TokenScope, rel_id: u32, write: bool) -> Result<(), Fail> {
    if scope.allows(rel_id, write) {
        Ok(())
    } else if scope.allows(rel_id, false) {
        // It may read this relation type, so what it lacks is the right to write.
        Err(Fail::new(403, "no access: the token is read-only"))
    } else {
        Err(Fail::new(403, format!("no access to relation {rel_id}")))
    }
}

fn get_counter(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, false)?;
    let who = Who::read(&mut f)?;
    f.finish()?;
    let counter = api.engine.get_counter(rel_id, who.as_match()?)?;
    Ok(render_counter(&counter))
}

fn list(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, false)?;
    let who = Who::read(&mut f)?;
    let skip = f.usize("skip", 0)?;
    let limit = match f.take("limit") {
        None => crate::limits::DEFAULT_LIST_LIMIT,
        Some(Json::Int(n)) if (1..=crate::limits::MAX_LIST_LIMIT as i64).contains(&n) => n as usize,
        Some(other) => {
            return Err(Fail::bad(format!(
                "limit must be an integer from 1 to {}, got {}",
                crate::limits::MAX_LIST_LIMIT,
                given(&other)
            )));
        }
    };
    f.finish()?;
    let page = api.engine.list(rel_id, who.as_match()?, skip, limit)?;
    Ok(render_page(&page))
}

fn write(api: &Api, scope: &TokenScope, call: &str, mut f: Fields) -> Result<String, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, true)?;
    let a = Who::of_field(&mut f, "profile_a")?;
    let b = Who::of_field(&mut f, "profile_b")?;
    let w = weights(api, rel_id, &mut f)?;
    f.finish()?;
    let need = Growth {
        relations: 1,
        profiles: new_ids(api, rel_id, [(&a, true), (&b, false)]),
        types: 0,
    };
    let _reserved = api.ledger.reserve(&api.engine, need)?;
    let (a, b) = (a.as_match()?, b.as_match()?);
    let w: SmallVec<[(&str, Value); 8]> = w.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    match call {
        "relations/attach" => api.engine.attach(rel_id, a, b, &w)?,
        "relations/strengthen" => api.engine.strengthen(rel_id, a, b, &w)?,
        _ => api.engine.edit(rel_id, a, b, &w)?,
    }
    Ok(WRITE_OK.to_owned())
}

/// `relations/import`: a batch of attaches for one `rel_id`, profiles by id; every row
/// is read and checked before any is applied, and a refused row names its index.
fn import_relations(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, true)?;
    let items = match f.take("relations") {
        Some(Json::Arr(items)) => items,
        None => return Err(Fail::bad("relations is required: an array of attaches")),
        Some(other) => {
            return Err(Fail::bad(format!(
                "relations must be an array, got {}",
                other.kind()
            )));
        }
    };
    f.finish()?;
    if items.len() > api.limits.max_import_rows {
        return Err(Fail::bad(format!(
            "at most {} relations per import, got {}",
            api.limits.max_import_rows,
            items.len()
        )));
    }
    let rows = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let row = (|| {
                let mut r = Fields::of("a relation", item)?;
                let a = by_id(Who::of_field(&mut r, "profile_a")?, "profile_a")?;
                let b = by_id(Who::of_field(&mut r, "profile_b")?, "profile_b")?;
                let w = weights(api, rel_id, &mut r)?;
                r.finish()?;
                Ok((a, b, w))
            })();
            row.map_err(|e: Fail| Fail::new(e.code, format!("row {i}: {}", e.text)))
        })
        .collect::<Result<Vec<_>, Fail>>()?;
    let need = Growth {
        relations: rows.len() as u64,
        profiles: new_import_ids(api, rel_id, &rows),
        types: 0,
    };
    let _reserved = api.ledger.reserve(&api.engine, need)?;
    let imported = api.engine.import_relations(rel_id, rows)?;
    Ok(format!(
        "{{\"error\":0,\"error_text\":\"\",\"data\":{{\"imported\":{imported}}}}}"
    ))
}

/// How many profiles a write could create: one per side named by an id no profile
/// has yet, and with a host's resolver one per side named otherwise (the resolver
/// may answer an id not in the engine, which the write creates; without one, the
/// other modes name existing profiles only). Nothing when the relation type is
/// unknown (the write is then refused).
fn new_ids(api: &Api, rel_id: u32, sides: [(&Who, bool); 2]) -> u64 {
    let Some(def) = api.engine.relation_type(rel_id) else {
        return 0;
    };
    let resolved = api.engine.has_resolver();
    let mut others = 0;
    let ids = sides.into_iter().filter_map(|(who, is_a)| {
        let db = if is_a { def.db_a() } else { def.db_b() };
        match (who.mode, &who.profile_id) {
            (Mode::ProfileId, Some(id)) => Some((db, id.as_str())),
            _ => {
                others += u64::from(resolved);
                None
            }
        }
    });
    let unknown = unknown_ids(api, ids);
    unknown + others
}

/// A `relations/import` row: recipient id, initiator id, weights.
type ImportRow = (String, String, Vec<(String, Value)>);

/// How many profiles a `relations/import` could create: its distinct ids no profile
/// has yet.
fn new_import_ids(api: &Api, rel_id: u32, rows: &[ImportRow]) -> u64 {
    let Some(def) = api.engine.relation_type(rel_id) else {
        return 0;
    };
    let ids = rows
        .iter()
        .flat_map(|(a, b, _)| [(def.db_a(), a.as_str()), (def.db_b(), b.as_str())]);
    unknown_ids(api, ids)
}

/// How many distinct `(database, id)` of `ids` no profile has yet.
fn unknown_ids<'s>(api: &Api, ids: impl IntoIterator<Item = (u32, &'s str)>) -> u64 {
    let mut unknown: hashbrown::HashSet<(u32, &str)> = hashbrown::HashSet::new();
    for (db, id) in ids {
        if !unknown.contains(&(db, id)) && !api.engine.contains_profile(db, id) {
            unknown.insert((db, id));
        }
    }
    unknown.len() as u64
}

/// The id of a profile an import names: imports name profiles by id only.
fn by_id(who: Who, name: &str) -> Result<String, Fail> {
    match (who.mode, who.profile_id) {
        (Mode::ProfileId, Some(id)) => Ok(id),
        _ => Err(Fail::bad(format!(
            "{name} must name a profile by id in an import, as {{\"profile_id\": \"...\"}}"
        ))),
    }
}

fn detach(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, true)?;
    let a = Who::of_field(&mut f, "profile_a")?;
    let b = Who::of_field(&mut f, "profile_b")?;
    f.finish()?;
    api.engine.detach(rel_id, a.as_match()?, b.as_match()?)?;
    Ok(WRITE_OK.to_owned())
}

fn define(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, true)?;
    let db_a = f.req_u32("db_a")?;
    let db_b = f.req_u32("db_b")?;
    let props = match f.take("props") {
        None => Vec::new(),
        Some(Json::Obj(p)) => p,
        Some(other) => {
            return Err(Fail::bad(format!(
                "props must be an object such as {{\"Like\": {{\"type\": \"int\", \"sum\": true}}}}, got {}",
                other.kind()
            )));
        }
    };
    f.finish()?;
    if props.len() > MAX_PROPS {
        return Err(Fail::bad(format!("at most {MAX_PROPS} properties")));
    }
    let mut def = RelationType::new(rel_id, db_a, db_b);
    for (name, spec) in props {
        let mut s = Fields::of("a property", spec)?;
        let kind = match s.req_string("type")?.as_str() {
            "int" => PropKind::Int,
            "float" => PropKind::Float,
            "bool" => PropKind::Bool,
            other => {
                return Err(Fail::bad(format!(
                    "type of {name} must be int, float or bool, got {other:?}"
                )));
            }
        };
        let mut p = PropSpec::of(kind);
        match s.take("sum") {
            None | Some(Json::Bool(false)) => {}
            Some(Json::Bool(true)) => p = p.sum(),
            Some(other) => {
                return Err(Fail::bad(format!(
                    "sum of {name} must be true or false, got {}",
                    other.kind()
                )));
            }
        }
        match s.take("top") {
            None => {}
            Some(Json::Int(n)) if (1..=i64::from(crate::limits::MAX_TOP)).contains(&n) => {
                p = p.top(u16::try_from(n).unwrap_or(crate::limits::MAX_TOP));
            }
            Some(_) => {
                return Err(Fail::bad(format!(
                    "top of {name} must be an integer from 1 to {}",
                    crate::limits::MAX_TOP
                )));
            }
        }
        s.finish()?;
        def = def.prop(name, p);
    }
    let need = Growth {
        types: u64::from(api.engine.relation_type(rel_id).is_none()),
        ..Growth::default()
    };
    let _reserved = api.ledger.reserve(&api.engine, need)?;
    api.engine.define(def)?;
    Ok(WRITE_OK.to_owned())
}

fn profile(f: &mut Fields, default_db: Option<u32>) -> Result<(u32, String, ProfileData), Fail> {
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

fn import(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    if !scope.allows_profiles() {
        return Err(Fail::new(
            403,
            "no access: importing profiles needs an unscoped, writing token",
        ));
    }
    let batch = match f.take("profiles") {
        None => {
            let one = profile(&mut f, None)?;
            f.finish()?;
            vec![one]
        }
        Some(Json::Arr(items)) => {
            let default_db = f.u32("db_id")?;
            f.finish()?;
            if items.len() > api.limits.max_batch {
                return Err(Fail::bad(format!(
                    "at most {} profiles per import",
                    api.limits.max_batch
                )));
            }
            items
                .into_iter()
                .map(|item| {
                    let mut p = Fields::of("a profile", item)?;
                    let one = profile(&mut p, default_db)?;
                    p.finish()?;
                    Ok(one)
                })
                .collect::<Result<Vec<_>, Fail>>()?
        }
        Some(other) => {
            return Err(Fail::bad(format!(
                "profiles must be an array, got {}",
                other.kind()
            )));
        }
    };
    let need = Growth {
        profiles: unknown_ids(api, batch.iter().map(|(db, id, _)| (*db, id.as_str()))),
        ..Growth::default()
    };
    let _reserved = api.ledger.reserve(&api.engine, need)?;
    api.engine.import_profiles(
        batch
            .iter()
            .map(|(db, id, d)| (*db, id.as_str(), d.clone())),
    )?;
    Ok(WRITE_OK.to_owned())
}

fn delete(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<String, Fail> {
    if !scope.allows_profiles() {
        return Err(Fail::new(
            403,
            "no access: deleting profiles needs an unscoped, writing token",
        ));
    }
    let db = f.req_u32("db_id")?;
    let who = Who::read(&mut f)?;
    f.finish()?;
    api.engine.delete_profile(db, who.as_match()?)?;
    Ok(WRITE_OK.to_owned())
}

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
fn render_counter(c: &Counter) -> String {
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
fn render_page(page: &Page) -> String {
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
