//! The calls: one [`Call`] per path; a call read into its typed [`Request`] and
//! authorized (`parse`, with `request`'s field readers), checked without the data
//! (`check`), then run (`execute`: quotas reserved, the engine called, the answer
//! rendered by `render`).

use std::fmt;

use smallvec::SmallVec;

use super::json::{self, Json};
use super::quota::Growth;
use super::render::{WRITE_OK, render_counter, render_page};
use super::request::{Fields, Who, bearer, by_id, given, profile, weights};
use super::{Api, Code, Fail, TokenScope};
use crate::limits::MAX_PROPS;
use crate::profile::data::{OwnedMatch, ProfileData};
use crate::schema::{PropSpec, RelationType};
use crate::value::{PropKind, Value};
use crate::write::Op;

/// A call of the API, named by its path after `/api/v1.1/`.
///
/// # Examples
///
/// ```
/// use relcount::api::Call;
///
/// let call: Call = "relations/get_counter".parse().unwrap();
/// assert_eq!(call, Call::GetCounter);
/// assert_eq!(call.path(), "relations/get_counter");
/// assert!(!call.is_write());
/// assert_eq!(Call::ALL.len(), 10);
/// assert!("relations/nope".parse::<Call>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `relations/get_counter`: one profile's counters.
    GetCounter,
    /// `relations/get`: a page of one profile's relations.
    Get,
    /// `relations/attach`.
    Attach,
    /// `relations/detach`.
    Detach,
    /// `relations/strengthen`.
    Strengthen,
    /// `relations/edit`.
    Edit,
    /// `relations/define`: a relation type.
    Define,
    /// `relations/import`: attaches in bulk.
    ImportRelations,
    /// `profiles/import`: profiles and their data.
    ImportProfiles,
    /// `profiles/delete`.
    DeleteProfile,
}

impl Call {
    /// Every call, in docs/api.md's order.
    pub const ALL: [Call; 10] = [
        Call::GetCounter,
        Call::Get,
        Call::Attach,
        Call::Detach,
        Call::Strengthen,
        Call::Edit,
        Call::Define,
        Call::ImportRelations,
        Call::ImportProfiles,
        Call::DeleteProfile,
    ];

    /// Its path after `/api/v1.1/`.
    #[must_use]
    pub const fn path(self) -> &'static str {
        match self {
            Call::GetCounter => "relations/get_counter",
            Call::Get => "relations/get",
            Call::Attach => "relations/attach",
            Call::Detach => "relations/detach",
            Call::Strengthen => "relations/strengthen",
            Call::Edit => "relations/edit",
            Call::Define => "relations/define",
            Call::ImportRelations => "relations/import",
            Call::ImportProfiles => "profiles/import",
            Call::DeleteProfile => "profiles/delete",
        }
    }

    /// Whether it changes anything (a read-only token may not make it).
    #[must_use]
    pub const fn is_write(self) -> bool {
        !matches!(self, Call::GetCounter | Call::Get)
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// A path that names no [`Call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCall(pub String);

impl fmt::Display for UnknownCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown call {:?}; calls are ", self.0)?;
        for (i, call) in Call::ALL.iter().enumerate() {
            f.write_str(if i == 0 { "" } else { ", " })?;
            f.write_str(call.path())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownCall {}

impl std::str::FromStr for Call {
    type Err = UnknownCall;

    fn from_str(path: &str) -> Result<Call, UnknownCall> {
        Call::ALL
            .into_iter()
            .find(|c| c.path() == path)
            .ok_or_else(|| UnknownCall(path.to_owned()))
    }
}

/// A request read, typed and authorized (see [`Api::parse`]): what a call asks, with
/// every field checked for shape and the token's rights on it checked. Weights are
/// typed by the relation type's schema as it was when the request was read. A host
/// may also build one; [`Api::execute`] then runs it on the host's own authority.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `relations/get_counter`.
    GetCounter {
        /// The relation type.
        rel_id: u32,
        /// The recipient.
        profile: OwnedMatch,
    },
    /// `relations/get`: a page of the recipient's relations.
    Get {
        /// The relation type.
        rel_id: u32,
        /// The recipient.
        profile: OwnedMatch,
        /// Relations skipped.
        skip: usize,
        /// Most relations answered.
        limit: usize,
    },
    /// `relations/attach`, `strengthen`, `edit` or `detach` (`op`; a detach has no
    /// weights).
    Write {
        /// Which write.
        op: Op,
        /// The relation type.
        rel_id: u32,
        /// The recipient (database A).
        profile_a: OwnedMatch,
        /// The initiator (database B).
        profile_b: OwnedMatch,
        /// Property names and values.
        weights: Vec<(String, Value)>,
    },
    /// `relations/define`.
    Define(RelationType),
    /// `relations/import`: attaches by id, as `(recipient, initiator, weights)`.
    ImportRelations {
        /// The relation type.
        rel_id: u32,
        /// The rows, in order.
        rows: Vec<ImportRow>,
    },
    /// `profiles/import`: `(database, id, data)`, in order.
    ImportProfiles(Vec<(u32, String, ProfileData)>),
    /// `profiles/delete`.
    DeleteProfile {
        /// The profile's database.
        db: u32,
        /// The profile.
        profile: OwnedMatch,
    },
}

impl Request {
    /// The call it is.
    #[must_use]
    pub fn call(&self) -> Call {
        match self {
            Request::GetCounter { .. } => Call::GetCounter,
            Request::Get { .. } => Call::Get,
            Request::Write { op, .. } => match op {
                Op::Attach => Call::Attach,
                Op::Strengthen => Call::Strengthen,
                Op::Edit => Call::Edit,
                Op::Detach => Call::Detach,
            },
            Request::Define(_) => Call::Define,
            Request::ImportRelations { .. } => Call::ImportRelations,
            Request::ImportProfiles(_) => Call::ImportProfiles,
            Request::DeleteProfile { .. } => Call::DeleteProfile,
        }
    }

    /// The relation type it names, if it names one.
    #[must_use]
    pub fn rel_id(&self) -> Option<u32> {
        match self {
            Request::GetCounter { rel_id, .. }
            | Request::Get { rel_id, .. }
            | Request::Write { rel_id, .. }
            | Request::ImportRelations { rel_id, .. } => Some(*rel_id),
            Request::Define(def) => Some(def.rel_id()),
            Request::ImportProfiles(_) | Request::DeleteProfile { .. } => None,
        }
    }

    /// Whether it could make something a quota counts (a relation, a profile, a
    /// relation type): every write but a detach and a delete.
    fn may_grow(&self) -> bool {
        match self {
            Request::Write { op, .. } => *op != Op::Detach,
            Request::Define(_) | Request::ImportRelations { .. } | Request::ImportProfiles(_) => {
                true
            }
            Request::GetCounter { .. } | Request::Get { .. } | Request::DeleteProfile { .. } => {
                false
            }
        }
    }
}

/// Refuses an `Authorization` header that is not `Bearer <a registered token>`.
pub(super) fn check_header(api: &Api, authorization: Option<&str>) -> Result<(), Fail> {
    match authorization {
        None => Ok(()),
        Some(h) => api.tokens.scope(bearer(h)?).map(|_| ()).ok_or_else(|| {
            Fail::new(
                Code::Unauthorized,
                "API token required: the Authorization header's token is not registered",
            )
        }),
    }
}

/// Serves a call: read, then run.
pub(super) fn serve(
    api: &Api,
    call: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<String, Fail> {
    execute(api, parse(api, call, authorization, body)?)
}

/// Checks a call without making it (see [`Api::validate`]): a write read and
/// checked, answered as it would be; a read served.
pub(super) fn validate(
    api: &Api,
    call: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<String, Fail> {
    let request = parse(api, call, authorization, body)?;
    if !request.call().is_write() {
        return execute(api, request);
    }
    check(api, &request)?;
    Ok(dry_answer(&request))
}

/// Reads a call into its typed [`Request`], authorized: the token and its rights,
/// every field, weights typed by the relation type's schema.
pub(super) fn parse(
    api: &Api,
    call: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Request, Fail> {
    let (call, scope, f) = open(api, call, authorization, body)?;
    match call {
        Call::GetCounter => read_get_counter(&scope, f),
        Call::Get => read_get(&scope, f),
        Call::Attach | Call::Strengthen | Call::Edit | Call::Detach => {
            read_write(api, &scope, call, f)
        }
        Call::Define => read_define(&scope, f),
        Call::ImportRelations => read_import_relations(api, &scope, f),
        Call::ImportProfiles => read_import_profiles(api, &scope, f),
        Call::DeleteProfile => read_delete(&scope, f),
    }
}

/// The checks of a request that need no data: the relation type defined, weights
/// against its schema, ids valid, a definition against the one in place, profile
/// data valid. What depends on the engine's relations and profiles (a detached
/// relation exists, a profile named other than by id is found, a strengthen stays in
/// range, a quota has room) is left to [`execute`].
pub(super) fn check(api: &Api, request: &Request) -> Result<(), Fail> {
    match request {
        Request::GetCounter { .. } | Request::Get { .. } => Ok(()),
        Request::Write {
            op: Op::Detach,
            rel_id,
            profile_a,
            profile_b,
            ..
        } => {
            defined(api, *rel_id)?;
            check_ids([profile_a, profile_b])
        }
        Request::Write {
            rel_id,
            profile_a,
            profile_b,
            weights,
            ..
        } => {
            api.engine.check_weights(*rel_id, &borrowed(weights))?;
            check_ids([profile_a, profile_b])
        }
        Request::Define(def) => Ok(api.engine.check_definition(def)?),
        Request::ImportRelations { rel_id, rows } => {
            let rel_id = *rel_id;
            defined(api, rel_id)?;
            for (i, (a, b, w)) in rows.iter().enumerate() {
                let ids = || crate::ProfileId::new(a).and_then(|_| crate::ProfileId::new(b));
                let checked = api.engine.check_weights(rel_id, &borrowed(w));
                checked.and_then(|()| ids().map(|_| ())).map_err(|e| {
                    let e = Fail::from(e);
                    Fail::new(e.code, format!("row {i}: {}", e.text))
                })?;
            }
            Ok(())
        }
        Request::ImportProfiles(batch) => {
            for (_, id, data) in batch {
                crate::ProfileId::new(id)?;
                crate::profile::data::Normalized::new(data)?;
            }
            Ok(())
        }
        Request::DeleteProfile { profile, .. } => check_ids([profile]),
    }
}

/// Refuses a relation type that is not defined.
fn defined(api: &Api, rel_id: u32) -> Result<(), Fail> {
    api.engine
        .relation_type(rel_id)
        .map(drop)
        .ok_or_else(|| crate::Error::UnknownRelation { rel_id }.into())
}

/// Weights as the engine's calls take them.
fn borrowed(weights: &[(String, Value)]) -> SmallVec<[(&str, Value); 8]> {
    weights.iter().map(|(n, v)| (n.as_str(), *v)).collect()
}

/// What a write that passed [`check`] would answer, for [`Api::validate`].
pub(super) fn dry_answer(request: &Request) -> String {
    match request {
        Request::ImportRelations { rows, .. } => imported(rows.len()),
        _ => WRITE_OK.to_owned(),
    }
}

fn imported(n: usize) -> String {
    format!("{{\"error\":0,\"error_text\":\"\",\"data\":{{\"imported\":{n}}}}}")
}

/// Runs a request: reserves what a write could create against the quotas (after
/// [`check`], when a cap is set, so that a request wrong in itself answers why and
/// not that a cap is reached), calls the engine, renders the answer.
pub(super) fn execute(api: &Api, request: Request) -> Result<String, Fail> {
    if api.ledger.capped() && request.may_grow() {
        check(api, &request)?;
    }
    match request {
        Request::GetCounter { rel_id, profile } => {
            Ok(render_counter(&api.engine.get_counter(rel_id, &profile)?))
        }
        Request::Get {
            rel_id,
            profile,
            skip,
            limit,
        } => Ok(render_page(
            &api.engine.list(rel_id, &profile, skip, limit)?,
        )),
        Request::Write {
            op: Op::Detach,
            rel_id,
            profile_a,
            profile_b,
            ..
        } => {
            api.engine.detach(rel_id, &profile_a, &profile_b)?;
            Ok(WRITE_OK.to_owned())
        }
        Request::Write {
            op,
            rel_id,
            profile_a,
            profile_b,
            weights,
        } => {
            let need = Growth {
                relations: 1,
                profiles: new_ids(api, rel_id, [(&profile_a, true), (&profile_b, false)]),
                types: 0,
            };
            let _reserved = api.ledger.reserve(&api.engine, need)?;
            let w = borrowed(&weights);
            let (a, b) = (&profile_a, &profile_b);
            match op {
                Op::Strengthen => api.engine.strengthen(rel_id, a, b, &w)?,
                Op::Edit => api.engine.edit(rel_id, a, b, &w)?,
                _ => api.engine.attach(rel_id, a, b, &w)?,
            }
            Ok(WRITE_OK.to_owned())
        }
        Request::Define(def) => {
            let need = Growth {
                types: u64::from(api.engine.relation_type(def.rel_id()).is_none()),
                ..Growth::default()
            };
            let _reserved = api.ledger.reserve(&api.engine, need)?;
            api.engine.define(def)?;
            Ok(WRITE_OK.to_owned())
        }
        Request::ImportRelations { rel_id, rows } => {
            let need = Growth {
                relations: rows.len() as u64,
                profiles: new_import_ids(api, rel_id, &rows),
                types: 0,
            };
            let _reserved = api.ledger.reserve(&api.engine, need)?;
            Ok(imported(api.engine.import_relations(rel_id, rows)?))
        }
        Request::ImportProfiles(batch) => {
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
        Request::DeleteProfile { db, profile } => {
            api.engine.delete_profile(db, &profile)?;
            Ok(WRITE_OK.to_owned())
        }
    }
}

/// Serves `call` only if its work is small and it cannot wait (see
/// [`Api::handle_if_cheap`]): `None` when it must go to [`serve`] instead.
pub(super) fn serve_if_cheap(
    api: &Api,
    call: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Option<Result<String, Fail>> {
    if call != Call::GetCounter.path() || body.len() > CHEAP_BODY {
        return None;
    }
    let (_, scope, mut f) = match open(api, call, authorization, body) {
        Ok(opened) => opened,
        Err(fail) => return Some(Err(fail)),
    };
    let counter = (|| {
        let rel_id = f.req_u32("rel_id")?;
        allow(&scope, rel_id, false)?;
        let who = Who::read(&mut f)?;
        f.finish()?;
        // A lookup by data may examine many profiles; a large counter renders many
        // entries: both go to a worker (an unknown relation type is answered here).
        let small = api
            .engine
            .counter_entries(rel_id)
            .is_none_or(|n| n <= CHEAP_ENTRIES);
        if !matches!(who, OwnedMatch::Id(_)) || !small {
            return Ok(None);
        }
        Ok(Some(api.engine.get_counter(rel_id, &who)?))
    })();
    match counter {
        Ok(Some(counter)) => Some(Ok(render_counter(&counter))),
        Ok(None) => None,
        Err(fail) => Some(Err(fail)),
    }
}

/// The largest body [`serve_if_cheap`] serves.
pub(super) const CHEAP_BODY: usize = 512;

/// The most entries (properties and top-list items) of a counter [`serve_if_cheap`]
/// renders.
pub(super) const CHEAP_ENTRIES: usize = 64;

/// The prologue of every call: the header's token, the body's size, the call's name,
/// the body read as JSON, and the token's rights.
fn open(
    api: &Api,
    call: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(Call, TokenScope, Fields), Fail> {
    check_header(api, authorization)?;
    let limits = &api.limits;
    if body.len() > limits.max_body_bytes {
        return Err(Fail::new(
            Code::TooLarge,
            format!("request body exceeds {} bytes", limits.max_body_bytes),
        ));
    }
    let call: Call = call
        .parse()
        .map_err(|e: UnknownCall| Fail::bad(e.to_string()))?;
    let body = json::parse(body, limits.max_depth, limits.max_object_keys)
        .map_err(|e| Fail::bad(e.to_string()))?;
    let mut f = Fields::of("the request body", body)?;
    let token = match f.string("token")? {
        Some(t) => t,
        None => match authorization {
            Some(h) => bearer(h)?.to_owned(),
            None => return Err(Fail::new(Code::Unauthorized, "API token required")),
        },
    };
    let scope = api.tokens.scope(&token).ok_or_else(|| {
        Fail::new(
            Code::Unauthorized,
            "API token required: the token given is not registered",
        )
    })?;
    Ok((call, scope, f))
}

/// Checks the ids among `who` as the engine would take them (1 to 64 bytes), for a
/// write checked without being made.
fn check_ids<'a>(who: impl IntoIterator<Item = &'a OwnedMatch>) -> Result<(), Fail> {
    for w in who {
        if let OwnedMatch::Id(id) = w {
            crate::ProfileId::new(id)?;
        }
    }
    Ok(())
}

fn allow(scope: &TokenScope, rel_id: u32, write: bool) -> Result<(), Fail> {
    if scope.allows(rel_id, write) {
        Ok(())
    } else if scope.allows(rel_id, false) {
        // It may read this relation type, so what it lacks is the right to write.
        Err(Fail::new(
            Code::Forbidden,
            "no access: the token is read-only",
        ))
    } else {
        Err(Fail::new(
            Code::Forbidden,
            format!("no access to relation {rel_id}"),
        ))
    }
}

fn read_get_counter(scope: &TokenScope, mut f: Fields) -> Result<Request, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, false)?;
    let profile = Who::read(&mut f)?;
    f.finish()?;
    Ok(Request::GetCounter { rel_id, profile })
}

fn read_get(scope: &TokenScope, mut f: Fields) -> Result<Request, Fail> {
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
    Ok(Request::Get {
        rel_id,
        profile: who,
        skip,
        limit,
    })
}

fn read_write(api: &Api, scope: &TokenScope, call: Call, mut f: Fields) -> Result<Request, Fail> {
    let rel_id = f.req_u32("rel_id")?;
    allow(scope, rel_id, true)?;
    let profile_a = Who::of_field(&mut f, "profile_a")?;
    let profile_b = Who::of_field(&mut f, "profile_b")?;
    let op = match call {
        Call::Strengthen => Op::Strengthen,
        Call::Edit => Op::Edit,
        Call::Detach => Op::Detach,
        _ => Op::Attach,
    };
    let weights = if op == Op::Detach {
        Vec::new()
    } else {
        weights(api, rel_id, &mut f)?
    };
    f.finish()?;
    Ok(Request::Write {
        op,
        rel_id,
        profile_a,
        profile_b,
        weights,
    })
}

/// `relations/import`: a batch of attaches for one `rel_id`, profiles by id; every row
/// is read and checked before any is applied, and a refused row names its index.
fn read_import_relations(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<Request, Fail> {
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
    Ok(Request::ImportRelations { rel_id, rows })
}

/// How many profiles a write could create: one per side named by an id no profile
/// has yet, and with a host's resolver one per side named otherwise (the resolver
/// may answer an id not in the engine, which the write creates; without one, the
/// other modes name existing profiles only). Nothing when the relation type is
/// unknown (the write is then refused).
fn new_ids(api: &Api, rel_id: u32, sides: [(&OwnedMatch, bool); 2]) -> u64 {
    let Some(def) = api.engine.relation_type(rel_id) else {
        return 0;
    };
    let resolved = api.engine.has_resolver();
    let mut others = 0;
    let ids = sides.into_iter().filter_map(|(who, is_a)| {
        let db = if is_a { def.db_a() } else { def.db_b() };
        match who {
            OwnedMatch::Id(id) => Some((db, id.as_str())),
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
pub type ImportRow = (String, String, Vec<(String, Value)>);

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

fn read_define(scope: &TokenScope, mut f: Fields) -> Result<Request, Fail> {
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
    Ok(Request::Define(def))
}

fn read_import_profiles(api: &Api, scope: &TokenScope, mut f: Fields) -> Result<Request, Fail> {
    if !scope.allows_profiles() {
        return Err(Fail::new(
            Code::Forbidden,
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
    Ok(Request::ImportProfiles(batch))
}

fn read_delete(scope: &TokenScope, mut f: Fields) -> Result<Request, Fail> {
    if !scope.allows_profiles() {
        return Err(Fail::new(
            Code::Forbidden,
            "no access: deleting profiles needs an unscoped, writing token",
        ));
    }
    let db = f.req_u32("db_id")?;
    let profile = Who::read(&mut f)?;
    f.finish()?;
    Ok(Request::DeleteProfile { db, profile })
}
