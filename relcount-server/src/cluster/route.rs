//! Where a request goes in a cluster: the partition of the profile it names (by id),
//! every partition (the control stream: definitions, profile data, deletions), or
//! several partitions (a batch of relations, split by recipient). Pure functions over
//! the request's text: the values are kept as sent (raw JSON), so what the owner
//! applies is exactly what the client wrote, less its token (a token never enters the
//! log), and with a profile named by email, phone or a field named by its id instead
//! ([`name_by_id`]; the entry host looks it up in its directory).

use std::collections::BTreeMap;

use relcount::api::Call;
use serde_json::value::RawValue;

/// A request body's top-level fields, each value as sent.
type Object = BTreeMap<String, Box<RawValue>>;

/// Where a write goes, with the body each destination applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One or more partitions, each with its own body (a batch split by recipient).
    Partitions(Vec<(u32, String)>),
    /// Every partition, in order with their own writes: a relation type's definition,
    /// profiles' data (every host's directory keeps it), a profile's deletion (it may
    /// be an initiator anywhere).
    Control(String),
}

/// A refused request: the API's 400 with this text.
pub type Refused = String;

/// The partition of profile id `id` among `partitions`: XXH64 of its UTF-8 bytes
/// (seed 0, the `profile_xxh` of the platform) modulo the count.
#[must_use]
pub fn partition_of(id: &str, partitions: u32) -> u32 {
    // The remainder is below `partitions`, a u32.
    u32::try_from(relcount::xxh64(id.as_bytes()) % u64::from(partitions.max(1))).unwrap_or(0)
}

fn object(text: &str, what: &str) -> Result<Object, Refused> {
    serde_json::from_str(text).map_err(|e| format!("{what} must be a JSON object: {e}"))
}

fn to_text(o: &Object) -> String {
    // A map of raw values always serializes.
    serde_json::to_string(o).unwrap_or_default()
}

/// The fields that name a profile in a matching object.
const MATCHING: [&str; 7] = [
    "profile_id",
    "matching",
    "email",
    "phone",
    "field_name",
    "field_value",
    "resource_id",
];

/// `body` with the profile it names at `side` (a field, or the top level with
/// `None`) named by `id` instead, as `{"profile_id": id}`.
///
/// # Errors
///
/// A body or side that is not a JSON object (the API refused it before).
pub fn name_by_id(body: &[u8], side: Option<&str>, id: &str) -> Result<String, Refused> {
    let text = std::str::from_utf8(body).map_err(|_| "the body must be UTF-8".to_owned())?;
    let mut o = object(text, "the request body")?;
    let by_id = |o: &mut Object| -> Result<(), Refused> {
        for key in MATCHING {
            o.remove(key);
        }
        let raw =
            RawValue::from_string(relcount::api::json_string(id)).map_err(|e| e.to_string())?;
        o.insert("profile_id".to_owned(), raw);
        Ok(())
    };
    match side {
        None => by_id(&mut o)?,
        Some(side) => {
            let mut inner = Object::new();
            by_id(&mut inner)?;
            let raw = RawValue::from_string(to_text(&inner)).map_err(|e| e.to_string())?;
            o.insert(side.to_owned(), raw);
        }
    }
    Ok(to_text(&o))
}

/// The id a matching object names, when it names its profile by id and only so (the
/// entry host named it so, [`name_by_id`], when it was named otherwise).
fn named_id(o: &Object, what: &str) -> Result<String, Refused> {
    let by_id = || {
        format!(
            "{what} must name its profile by id here, as {{\"profile_id\": \"...\"}} \
             (profiles are placed by their id's hash)"
        )
    };
    for other in ["email", "phone", "field_name", "field_value", "resource_id"] {
        if o.contains_key(other) {
            return Err(by_id());
        }
    }
    if let Some(m) = o.get("matching")
        && serde_json::from_str::<String>(m.get()).ok().as_deref() != Some("profile_id")
    {
        return Err(by_id());
    }
    let raw = o.get("profile_id").ok_or_else(by_id)?;
    serde_json::from_str::<String>(raw.get()).map_err(|_| by_id())
}

/// The id an imported profile carries (its email and phone are its data there, not
/// a lookup).
fn imported_id(o: &Object) -> Result<String, Refused> {
    o.get("profile_id")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or_else(|| "an imported profile needs its profile_id, a string".to_owned())
}

fn side(o: &Object, name: &str) -> Result<String, Refused> {
    let raw = o.get(name).ok_or_else(|| format!("{name} is required"))?;
    // The API takes a bare id string for a side too.
    if let Ok(id) = serde_json::from_str::<String>(raw.get()) {
        return Ok(id);
    }
    named_id(&object(raw.get(), name)?, name)
}

/// The body without its `token` (the caller's rights were checked before; the owner
/// applies with its own).
fn without_token(mut o: Object) -> String {
    o.remove("token");
    to_text(&o)
}

/// Where a write goes. The body was already checked by the API (`validate`), so
/// what is refused here is only what a cluster cannot place.
///
/// # Errors
///
/// A text for the API's 400: a profile not named by id, a body that is not an object.
pub fn write(call: Call, body: &[u8], partitions: u32) -> Result<Route, Refused> {
    let text = std::str::from_utf8(body).map_err(|_| "the body must be UTF-8".to_owned())?;
    let o = object(text, "the request body")?;
    match call {
        Call::Define => Ok(Route::Control(without_token(o))),
        Call::DeleteProfile => {
            named_id(&o, "the profile")?;
            Ok(Route::Control(without_token(o)))
        }
        Call::Attach | Call::Detach | Call::Strengthen | Call::Edit => {
            let a = side(&o, "profile_a")?;
            side(&o, "profile_b")?;
            Ok(Route::Partitions(vec![(
                partition_of(&a, partitions),
                without_token(o),
            )]))
        }
        Call::ImportRelations => {
            let rows: Vec<Box<RawValue>> = match o.get("relations") {
                Some(r) => serde_json::from_str(r.get())
                    .map_err(|_| "relations must be an array".to_owned())?,
                None => return Err("relations is required".to_owned()),
            };
            split(o, "relations", rows, partitions, |row| {
                side(&object(row.get(), "a relation")?, "profile_a")
            })
        }
        Call::ImportProfiles => {
            profile_parts(&o, 1)?;
            Ok(Route::Control(without_token(o)))
        }
        Call::GetCounter | Call::Get => Err(format!("{call} is a read")),
    }
}

/// A profile import's parts by partition (see [`split`]).
fn profile_parts(o: &Object, partitions: u32) -> Result<Route, Refused> {
    match o.get("profiles") {
        None => {
            let id = imported_id(o)?;
            Ok(Route::Partitions(vec![(
                partition_of(&id, partitions),
                without_token(o.clone()),
            )]))
        }
        Some(p) => {
            let rows: Vec<Box<RawValue>> = serde_json::from_str(p.get())
                .map_err(|_| "profiles must be an array".to_owned())?;
            split(o.clone(), "profiles", rows, partitions, |row| {
                imported_id(&object(row.get(), "a profile")?)
            })
        }
    }
}

/// The part of a profile import (a body of `profiles/import`) whose profiles
/// partition `p` holds, if any: a partition keeps its own profiles' data, every
/// host's directory all of it.
///
/// # Errors
///
/// A body that is not an import (its entry host checked it).
pub fn profiles_of(body: &[u8], partitions: u32, p: u32) -> Result<Option<String>, Refused> {
    let text = std::str::from_utf8(body).map_err(|_| "the body must be UTF-8".to_owned())?;
    match profile_parts(&object(text, "the request body")?, partitions)? {
        Route::Partitions(parts) => Ok(parts.into_iter().find(|(q, _)| *q == p).map(|(_, b)| b)),
        Route::Control(_) => Ok(None),
    }
}

/// A batch split by partition: each part keeps the batch's other fields and its own
/// rows, in their order.
fn split(
    mut o: Object,
    key: &str,
    rows: Vec<Box<RawValue>>,
    partitions: u32,
    id_of: impl Fn(&RawValue) -> Result<String, Refused>,
) -> Result<Route, Refused> {
    o.remove("token");
    let mut parts: BTreeMap<u32, Vec<Box<RawValue>>> = BTreeMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        let id = id_of(&row).map_err(|e| format!("row {i}: {e}"))?;
        parts
            .entry(partition_of(&id, partitions))
            .or_default()
            .push(row);
    }
    let mut out = Vec::with_capacity(parts.len());
    for (p, rows) in parts {
        let mut part = o.clone();
        let list = serde_json::to_string(&rows).unwrap_or_default();
        let raw = RawValue::from_string(list).map_err(|e| e.to_string())?;
        part.insert(key.to_owned(), raw);
        out.push((p, to_text(&part)));
    }
    Ok(Route::Partitions(out))
}

/// The partition a read is served from: that of the profile it names by id.
///
/// # Errors
///
/// A text for the API's 400 when the read names its profile otherwise.
pub fn read(body: &[u8], partitions: u32) -> Result<u32, Refused> {
    let text = std::str::from_utf8(body).map_err(|_| "the body must be UTF-8".to_owned())?;
    let o = object(text, "the request body")?;
    Ok(partition_of(&named_id(&o, "a read")?, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_goes_to_its_recipients_partition_without_its_token() {
        let body = br#"{"token":"secret","rel_id":3,"profile_a":{"profile_id":"a1"},"profile_b":{"profile_id":"b1"},"weights":{"Donate":20}}"#;
        let Ok(Route::Partitions(parts)) = write(Call::Attach, body, 8) else {
            panic!("not routed")
        };
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, partition_of("a1", 8));
        assert!(!parts[0].1.contains("secret"), "{}", parts[0].1);
        assert!(
            parts[0].1.contains(r#""weights":{"Donate":20}"#),
            "{}",
            parts[0].1
        );
    }

    #[test]
    fn a_side_may_be_a_bare_id() {
        let body = br#"{"rel_id":3,"profile_a":"a1","profile_b":"b1"}"#;
        let Ok(Route::Partitions(parts)) = write(Call::Attach, body, 8) else {
            panic!("not routed")
        };
        assert_eq!(parts[0].0, partition_of("a1", 8));
    }

    #[test]
    fn numbers_are_kept_as_sent() {
        let body = br#"{"rel_id":3,"profile_a":{"profile_id":"a"},"profile_b":{"profile_id":"b"},"weights":{"x":123456789012345678901234567890,"y":1.50}}"#;
        let Ok(Route::Partitions(parts)) = write(Call::Edit, body, 4) else {
            panic!("not routed")
        };
        assert!(parts[0].1.contains("123456789012345678901234567890"));
        assert!(parts[0].1.contains("1.50"));
    }

    #[test]
    fn a_profile_named_otherwise_is_named_by_id() {
        let body = br#"{"token":"t","rel_id":1,"profile_a":{"email":"x@y.z","resource_id":4},"profile_b":{"profile_id":"b"},"weights":{"n":1.50}}"#;
        let named = name_by_id(body, Some("profile_a"), "a\"1").expect("named");
        let v: serde_json::Value = serde_json::from_str(&named).expect("json");
        assert_eq!(v["profile_a"], serde_json::json!({"profile_id": "a\"1"}));
        assert_eq!(v["profile_b"]["profile_id"], "b");
        assert!(named.contains("1.50"), "numbers kept as sent: {named}");
        let Ok(Route::Partitions(parts)) = write(Call::Attach, named.as_bytes(), 4) else {
            panic!("not routed")
        };
        assert_eq!(parts[0].0, partition_of("a\"1", 4));
        assert!(!parts[0].1.contains("token"), "{}", parts[0].1);
        // A read's profile is named at its top level.
        let read_body = br#"{"rel_id":1,"matching":"custom","field_name":"f","field_value":3}"#;
        let named = name_by_id(read_body, None, "p9").expect("named");
        assert_eq!(read(named.as_bytes(), 4), Ok(partition_of("p9", 4)));
        assert!(!named.contains("field_name"), "{named}");
    }

    #[test]
    fn unnamed_modes_are_refused_where_an_id_is_needed() {
        for a in [
            r#"{"email":"x@y.z"}"#,
            r#"{"matching":"phone","phone":"+1"}"#,
            r#"{"profile_id":"a","matching":"email"}"#,
            r#"{"profile_id":7}"#,
        ] {
            let body =
                format!(r#"{{"rel_id":1,"profile_a":{a},"profile_b":{{"profile_id":"b"}}}}"#);
            let e = write(Call::Attach, body.as_bytes(), 4).expect_err(a);
            assert!(e.contains("by id"), "{e}");
        }
        assert!(read(br#"{"rel_id":1,"email":"x@y.z"}"#, 4).is_err());
        assert!(write(Call::DeleteProfile, br#"{"db_id":1,"email":"x@y.z"}"#, 4).is_err());
    }

    #[test]
    fn a_batch_is_split_by_partition_keeping_row_order() {
        let partitions = 4;
        let ids: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
        let rows: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(r#"{{"profile_a":{{"profile_id":"{a}"}},"profile_b":{{"profile_id":"b"}},"weights":{{"n":{i}}}}}"#)
            })
            .collect();
        let body = format!(
            r#"{{"rel_id":2,"token":"t","relations":[{}]}}"#,
            rows.join(",")
        );
        let Ok(Route::Partitions(parts)) =
            write(Call::ImportRelations, body.as_bytes(), partitions)
        else {
            panic!("not routed")
        };
        let mut seen = 0;
        for (p, part) in &parts {
            let o: serde_json::Value = serde_json::from_str(part).expect("json");
            assert_eq!(o["rel_id"], 2);
            assert!(o.get("token").is_none());
            let mut last = -1;
            for row in o["relations"].as_array().expect("rows") {
                let a = row["profile_a"]["profile_id"].as_str().expect("id");
                assert_eq!(partition_of(a, partitions), *p);
                let n = row["weights"]["n"].as_i64().expect("n");
                assert!(n > last, "order kept");
                last = n;
                seen += 1;
            }
        }
        assert_eq!(seen, ids.len());
    }

    #[test]
    fn profile_data_goes_to_every_host_and_each_partition_keeps_its_own() {
        let body = br#"{"db_id":1,"profile_id":"p1","email":"a@b.c","phone":"+1 555","token":"t"}"#;
        let Ok(Route::Control(all)) = write(Call::ImportProfiles, body, 4) else {
            panic!("not to the control stream")
        };
        assert!(all.contains(r#""email":"a@b.c""#), "{all}");
        assert!(!all.contains("token"), "{all}");
        let home = partition_of("p1", 4);
        let mine = profiles_of(all.as_bytes(), 4, home).expect("an import");
        assert!(mine.is_some_and(|b| b.contains("a@b.c")));
        assert_eq!(profiles_of(all.as_bytes(), 4, (home + 1) % 4), Ok(None));
        let batch = br#"{"db_id":1,"profiles":[{"profile_id":"p1","email":"a@b.c"},{"profile_id":"p2","phone":"+1"},{"profile_id":"p3"}]}"#;
        let Ok(Route::Control(all)) = write(Call::ImportProfiles, batch, 4) else {
            panic!("not to the control stream")
        };
        let mut seen = 0;
        for p in 0..4 {
            if let Some(part) = profiles_of(all.as_bytes(), 4, p).expect("an import") {
                let v: serde_json::Value = serde_json::from_str(&part).expect("json");
                for row in v["profiles"].as_array().expect("rows") {
                    assert_eq!(partition_of(row["profile_id"].as_str().expect("id"), 4), p);
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 3);
        assert!(write(Call::ImportProfiles, br#"{"db_id":1,"email":"a@b.c"}"#, 4).is_err());
    }

    #[test]
    fn deletes_and_definitions_go_to_every_partition() {
        assert!(matches!(
            write(Call::DeleteProfile, br#"{"db_id":1,"profile_id":"x"}"#, 4),
            Ok(Route::Control(_))
        ));
        assert!(matches!(
            write(Call::Define, br#"{"rel_id":1,"db_a":1,"db_b":2}"#, 4),
            Ok(Route::Control(_))
        ));
    }

    #[test]
    fn the_partition_is_the_platforms_xxh_modulo_the_count() {
        // profile_xxh of this id is 54ec2d76ac22a964 (docs/api.md, *Profile ids*).
        let x = 0x54ec_2d76_ac22_a964_u64;
        assert_eq!(
            u64::from(partition_of("5c910f6bc484d023b1309bee", 12)),
            x % 12
        );
    }
}
