//! The platform's JSON API: one entry point a host's HTTP route forwards to.
//!
//! [`Api::handle`] takes the call name (`relations/get_counter`, ...), the
//! `Authorization` header if any and the raw body, and returns the response body in the
//! platform's envelope: `{"error": 0, "error_text": "Successful operation", "data": ...}`
//! for reads, `{"error": 0, "error_text": ""}` for writes, and for a refused request
//! `{"error": <code>, "error_text": "<what to fix>"}`. Over HTTP the platform answers
//! every call with status 200 and this envelope.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 400 | incorrect request: malformed JSON, nesting deeper than the limit, a missing, unknown or mistyped field, an invalid value |
//! | 401 | API token required: none given, or not a registered one |
//! | 402 | limit reached: a cap of [`Quotas`] (profiles, relations, relation types, memory), or the engine has no profile slot left |
//! | 403 | no access: the token is read-only or scoped to other relation types |
//! | 404 | profile not found (by id, or no profile matches the lookup) |
//! | 409 | several profiles match the lookup (the matched field must be unique) |
//! | 410 | relation not found (detach of a relation that does not exist) |
//! | 411 | relation type not defined |
//! | 412 | relation type already defined with another schema |
//! | 413 | request body larger than the limit |
//! | 500 | storage error: the write log could not be written (the write was not applied) |
//!
//! A refused request changes nothing, and no answer ever contains a token. A 500's
//! text is generic (it would otherwise show the data directory's paths); the engine's
//! own error is in [`Response::detail`], for the host's log.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use relcount::Engine;
//! use relcount::api::{Api, TokenScope};
//!
//! let api = Api::new(Arc::new(Engine::new()));
//! api.add_token("8d08f4ea57c74916909e9d324c20a6bc", TokenScope::full());
//! let define = br#"{"token": "8d08f4ea57c74916909e9d324c20a6bc", "rel_id": 3, "db_a": 1, "db_b": 2,
//!   "props": {"Like": {"type": "int", "sum": true}}}"#;
//! assert_eq!(api.handle("relations/define", None, define).body, r#"{"error":0,"error_text":""}"#);
//! let attach = br#"{"rel_id": 3, "profile_a": {"profile_id": "a"}, "profile_b": {"profile_id": "b"},
//!   "weights": {"Like": 2}}"#;
//! let bearer = Some("Bearer 8d08f4ea57c74916909e9d324c20a6bc");
//! assert_eq!(api.handle("relations/attach", bearer, attach).code, relcount::api::Code::Ok);
//! let read = api.handle("relations/get_counter", bearer, br#"{"rel_id": 3, "profile_id": "a"}"#);
//! assert!(read.body.contains(r#""Like":{"total":1,"top":null,"sum":2}"#));
//! ```

mod calls;
mod json;
mod quota;
mod render;
mod request;
mod tokens;

use std::sync::Arc;

pub use calls::{Call, ImportRow, Request, UnknownCall};
pub use quota::{Quotas, resident_bytes};
pub use tokens::TokenScope;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind};

/// `text` as a JSON string literal (quoted and escaped), for a host that writes an
/// envelope of its own (a timeout, a shutdown) in the API's shape.
#[must_use]
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    json::write_str(&mut out, text);
    out
}

/// Bounds on what one request may ask for; each bound answers a clear error past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest body, in bytes (default 1 MiB); past it: 413.
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects (default 16); past it: 400.
    pub max_depth: usize,
    /// Most profiles in one `profiles/import` (default 1000); past it: 400.
    pub max_batch: usize,
    /// Most rows in one `relations/import` (default 100,000; the body limit usually
    /// binds first, at about 15,000 rows a MiB); past it: 400.
    pub max_import_rows: usize,
    /// Most keys in one JSON object (default 1000); past it: 400, with the body read
    /// no further.
    pub max_object_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_depth: 16,
            max_batch: 1000,
            max_import_rows: 100_000,
            max_object_keys: 1000,
        }
    }
}

/// An answer's code: the envelope's `error` (see the table above). Over the wire it
/// is the number ([`Code::number`]); a host branches on the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 0: success.
    Ok,
    /// 400: incorrect request.
    BadRequest,
    /// 401: API token required.
    Unauthorized,
    /// 402: limit reached.
    LimitReached,
    /// 403: no access.
    Forbidden,
    /// 404: profile not found.
    ProfileNotFound,
    /// 409: several profiles match the lookup.
    Ambiguous,
    /// 410: relation not found.
    RelationNotFound,
    /// 411: relation type not defined.
    UnknownRelation,
    /// 412: relation type already defined with another schema.
    SchemaConflict,
    /// 413: request body larger than the limit.
    TooLarge,
    /// 500: storage error.
    Storage,
}

impl Code {
    /// Every code, in the table's order.
    pub const ALL: [Code; 12] = [
        Code::Ok,
        Code::BadRequest,
        Code::Unauthorized,
        Code::LimitReached,
        Code::Forbidden,
        Code::ProfileNotFound,
        Code::Ambiguous,
        Code::RelationNotFound,
        Code::UnknownRelation,
        Code::SchemaConflict,
        Code::TooLarge,
        Code::Storage,
    ];

    /// Its number in the envelope.
    ///
    /// ```
    /// use relcount::api::Code;
    ///
    /// assert_eq!(Code::UnknownRelation.number(), 411);
    /// assert_eq!(Code::of(402), Some(Code::LimitReached));
    /// assert_eq!(Code::of(418), None);
    /// ```
    #[must_use]
    pub const fn number(self) -> u32 {
        match self {
            Code::Ok => 0,
            Code::BadRequest => 400,
            Code::Unauthorized => 401,
            Code::LimitReached => 402,
            Code::Forbidden => 403,
            Code::ProfileNotFound => 404,
            Code::Ambiguous => 409,
            Code::RelationNotFound => 410,
            Code::UnknownRelation => 411,
            Code::SchemaConflict => 412,
            Code::TooLarge => 413,
            Code::Storage => 500,
        }
    }

    /// The code of an envelope's number, if it is one.
    #[must_use]
    pub fn of(number: u32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.number() == number)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// An answer of [`Api::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The envelope's `error` ([`Code::Ok`] on success), for the host's logs and
    /// metrics.
    pub code: Code,
    /// The response body (JSON).
    pub body: String,
    /// For a 500, the engine's error behind the body's generic text (with paths and
    /// the OS's reason), for the host's log; never sent to the client.
    pub detail: Option<String>,
}

impl Response {
    /// The answer [`Api::handle`] gives a call the engine refused with `error`: a
    /// host that looks a profile up itself (a cluster's entry host) answers a failed
    /// lookup as one engine would.
    #[must_use]
    pub fn refusal(error: Error) -> Response {
        Api::envelope(Fail::from(error))
    }
}

/// The JSON API over one engine.
#[derive(Debug)]
pub struct Api {
    engine: Arc<Engine>,
    tokens: tokens::Tokens,
    limits: Limits,
    ledger: quota::Ledger,
}

/// Why a request was refused: the envelope's code and text.
#[derive(Debug)]
pub(crate) struct Fail {
    code: Code,
    text: String,
    /// What the host's log gets beside a generic text (see [`Response::detail`]).
    detail: Option<String>,
}

impl Fail {
    pub(crate) fn bad(text: impl Into<String>) -> Fail {
        Fail::new(Code::BadRequest, text)
    }

    fn new(code: Code, text: impl Into<String>) -> Fail {
        Fail {
            code,
            text: text.into(),
            detail: None,
        }
    }
}

/// The text of every 500: what the client may know.
const STORAGE_TEXT: &str =
    "storage error: the write was not applied (the server's log has the details)";

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        match code_of(&e) {
            Code::Storage => Fail {
                code: Code::Storage,
                text: STORAGE_TEXT.to_owned(),
                detail: Some(e.to_string()),
            },
            code => Fail::new(code, e.to_string()),
        }
    }
}

/// The platform's code for an error (a refused row: its own error's code). Every kind
/// is listed, with no catch-all: a new kind does not compile until it is given its
/// code.
fn code_of(e: &Error) -> Code {
    match e.kind() {
        ErrorKind::ProfileNotFound | ErrorKind::NoMatch => Code::ProfileNotFound,
        ErrorKind::Ambiguous => Code::Ambiguous,
        ErrorKind::RelationNotFound => Code::RelationNotFound,
        ErrorKind::UnknownRelation => Code::UnknownRelation,
        ErrorKind::SchemaConflict => Code::SchemaConflict,
        ErrorKind::CapacityExceeded => Code::LimitReached,
        ErrorKind::Storage => Code::Storage,
        ErrorKind::InvalidSchema
        | ErrorKind::InvalidProfileId
        | ErrorKind::InvalidProfileData
        | ErrorKind::UnknownProperty
        | ErrorKind::DuplicateProperty
        | ErrorKind::WrongType
        | ErrorKind::NotFinite
        | ErrorKind::IntOverflow
        | ErrorKind::FloatOverflow
        | ErrorKind::InvalidArgument
        | ErrorKind::LookupTooBroad => Code::BadRequest,
    }
}

impl Api {
    /// The API over `engine`, with default [`Limits`] and no token registered (so every
    /// call answers 401 until one is).
    #[must_use]
    pub fn new(engine: Arc<Engine>) -> Self {
        Api {
            engine,
            tokens: tokens::Tokens::default(),
            limits: Limits::default(),
            ledger: quota::Ledger::default(),
        }
    }

    /// Caps on what writes may create (none by default); a write that could pass one
    /// answers 402 and changes nothing.
    #[must_use]
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.ledger = quota::Ledger::new(quotas);
        self
    }

    /// The caps in force.
    #[must_use]
    pub fn quotas(&self) -> &Quotas {
        self.ledger.quotas()
    }

    /// Other limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The engine served.
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The answer to a body the host stopped reading past
    /// [`Limits::max_body_bytes`] (so it never has to buffer an oversized request to
    /// get the envelope [`handle`](Self::handle) would give it).
    #[must_use]
    pub fn too_large(&self) -> Response {
        let fail = Fail::new(
            Code::TooLarge,
            format!("request body exceeds {} bytes", self.limits.max_body_bytes),
        );
        Self::envelope(fail)
    }

    /// Registers `token` (or changes its scope). Only its SHA-256 digest is kept.
    pub fn add_token(&self, token: &str, scope: TokenScope) {
        self.tokens.add(token, scope);
    }

    /// Unregisters `token`.
    pub fn remove_token(&self, token: &str) {
        self.tokens.remove(token);
    }

    /// Checks an `Authorization` header before the body is read: `Ok` when there is
    /// none (the body must then carry the `token`) or it is `Bearer <a registered
    /// token>`; else the 401 answer. [`handle`](Self::handle) checks it first too; a
    /// host runs it as soon as it has the headers, so an unauthenticated client never
    /// gets its body read.
    ///
    /// # Errors
    ///
    /// The 401 [`Response`] for a header that is not `Bearer <token>` or names a token
    /// not registered.
    pub fn check_header(&self, authorization: Option<&str>) -> Result<(), Response> {
        calls::check_header(self, authorization).map_err(Self::envelope)
    }

    /// Serves one call. `call` is the path after `/api/v1.1/` (see [`Call`]),
    /// `authorization` the `Authorization` header's value if any (`Bearer <token>`,
    /// checked before the body is read: see [`check_header`](Self::check_header); a
    /// `token` in the body, when also given, is the one whose rights apply), `body`
    /// the raw request body. Never panics on any input; a refused request changes
    /// nothing.
    #[must_use]
    pub fn handle(&self, call: &str, authorization: Option<&str>, body: &[u8]) -> Response {
        self.answer(calls::serve(self, call, authorization, body))
    }

    /// Handles a call as [`handle`](Self::handle) does, but only when it is cheap and
    /// cannot wait: a `relations/get_counter` of at most 512 bytes that names its profile
    /// by id, of a relation type whose counter has at most 64 entries (properties and
    /// top-list items), or one refused while it is read. Its work is then a parse of a
    /// small body, lock-free lookups and a small answer, so a server may run it on the
    /// thread that serves the connection instead of handing it to a worker. `None`:
    /// the call may take longer (a lookup by email, phone or field may examine many
    /// profiles, a large counter renders many entries, other calls may wait on locks
    /// or the log); pass it to [`handle`](Self::handle), which reads it again.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use relcount::{Engine, PropSpec, RelationType, api::{Api, TokenScope}};
    ///
    /// let engine = Arc::new(Engine::new());
    /// engine.define(RelationType::new(3, 1, 2).prop("Like", PropSpec::int().sum()))?;
    /// engine.attach(3, "a", "b", &[("Like", 2.into())])?;
    /// let api = Api::new(engine);
    /// api.add_token("t", TokenScope::full());
    /// let by_id = br#"{"rel_id": 3, "profile_id": "a"}"#;
    /// let r = api.handle_if_cheap("relations/get_counter", Some("Bearer t"), by_id);
    /// assert_eq!(r.map(|r| r.code), Some(relcount::api::Code::Ok));
    /// let by_email = br#"{"rel_id": 3, "email": "a@example.com"}"#;
    /// assert!(api.handle_if_cheap("relations/get_counter", Some("Bearer t"), by_email).is_none());
    /// # Ok::<(), relcount::Error>(())
    /// ```
    #[must_use]
    pub fn handle_if_cheap(
        &self,
        call: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Option<Response> {
        calls::serve_if_cheap(self, call, authorization, body).map(|served| self.answer(served))
    }

    /// Reads and checks a call exactly as [`handle`](Self::handle) does (the token and
    /// its rights, every field, weights against the relation type's schema, a
    /// definition against the one in place) and stops before the engine is touched:
    /// code 0 and the answer the call would give when it passes, else the refusal
    /// `handle` would answer. Checks that depend on the engine's relations and
    /// profiles are left to the write itself: whether a detached relation exists, a
    /// profile named other than by id is found, a strengthen stays within the i64
    /// range, a quota has room. A cluster's entry host checks a write this way before
    /// it enters the log.
    #[must_use]
    pub fn validate(&self, call: &str, authorization: Option<&str>, body: &[u8]) -> Response {
        self.answer(calls::validate(self, call, authorization, body))
    }

    /// [`validate`](Self::validate) for a write, keeping the typed request it read:
    /// the request and the answer it would give, or the refusal. A cluster's entry
    /// host reads a write once this way and places it by the request's profiles.
    ///
    /// # Errors
    ///
    /// The refusal [`handle`](Self::handle) would answer; a read is refused with 400
    /// (it is no write).
    pub fn validate_write(
        &self,
        call: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(Request, Response), Response> {
        let request = self.parse(call, authorization, body)?;
        if !request.call().is_write() {
            return Err(Self::envelope(Fail::bad(format!(
                "{} is a read, not a write",
                request.call()
            ))));
        }
        self.check(&request)?;
        let answer = self.answer(Ok(calls::dry_answer(&request)));
        Ok((request, answer))
    }

    /// Reads a call into its typed [`Request`], as [`handle`](Self::handle) does
    /// first: the `Authorization` header and the token's rights, the body's size, its
    /// JSON, every field, weights typed by the relation type's schema. Nothing is
    /// checked against the engine's data and nothing changes.
    ///
    /// # Errors
    ///
    /// The refusal [`handle`](Self::handle) would answer (401, 403, 400, 411 for
    /// weights of an undefined relation type, 413).
    pub fn parse(
        &self,
        call: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<Request, Response> {
        calls::parse(self, call, authorization, body).map_err(Self::envelope)
    }

    /// The checks of a request that need no relation or profile: its relation type
    /// defined, its weights against the schema, its ids valid, a definition against
    /// the one in place, profile data valid (see [`validate`](Self::validate)).
    ///
    /// # Errors
    ///
    /// The refusal [`handle`](Self::handle) would answer.
    pub fn check(&self, request: &Request) -> Result<(), Response> {
        calls::check(self, request).map_err(Self::envelope)
    }

    /// Runs a request read by [`parse`](Self::parse): reserves what it could create
    /// against the quotas, calls the engine, answers as [`handle`](Self::handle) does.
    ///
    /// It trusts its caller: it checks no token, no [`Limits`] and no revocation
    /// since the request was read (`parse` did). A request the host builds by hand
    /// runs on the host's own authority, as a call of the engine would.
    #[must_use]
    pub fn execute(&self, request: Request) -> Response {
        self.answer(calls::execute(self, request))
    }

    fn answer(&self, served: Result<String, Fail>) -> Response {
        match served {
            Ok(body) => Response {
                code: Code::Ok,
                body,
                detail: None,
            },
            Err(fail) => Self::envelope(fail),
        }
    }

    fn envelope(fail: Fail) -> Response {
        let mut body = String::with_capacity(fail.text.len() + 32);
        body.push_str("{\"error\":");
        body.push_str(&fail.code.number().to_string());
        body.push_str(",\"error_text\":");
        json::write_str(&mut body, &fail.text);
        body.push('}');
        Response {
            code: fail.code,
            body,
            detail: fail.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storage error answers 500 with a generic text: the engine's reason (with the
    /// data directory's paths) goes to `detail`, for the host's log only.
    #[test]
    fn a_500_shows_no_path() {
        let reason = "/srv/relcount/data/log.7";
        let r = Api::envelope(Fail::from(Error::Storage(crate::StorageError::io(
            reason,
            std::io::Error::from_raw_os_error(28),
        ))));
        assert_eq!(r.code, Code::Storage);
        assert!(!r.body.contains("/srv"), "{}", r.body);
        assert!(r.body.contains("storage error"), "{}", r.body);
        assert!(r.detail.as_deref().is_some_and(|d| d.contains(reason)));
        // Other codes keep their texts, and no detail.
        let r = Api::envelope(Fail::from(Error::UnknownRelation { rel_id: 9 }));
        assert_eq!(r.code, Code::UnknownRelation);
        assert!(r.body.contains('9') && r.detail.is_none(), "{}", r.body);
    }
}
