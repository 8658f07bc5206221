//! Where a request goes in a cluster: the partition of the profile it names (by id),
//! every partition (the control stream), or several partitions (a batch, split by
//! recipient). Pure functions over the request's text: the values are kept as sent
//! (raw JSON), so what the owner applies is exactly what the client wrote, less its
//! token (a token never enters the log).

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
    /// a profile's deletion (it may be an initiator anywhere).
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

/// The id a matching object names, when it names its profile by id and only so; in a
/// cluster, profiles are placed by id, so no other mode can find them.
fn named_id(o: &Object, what: &str) -> Result<String, Refused> {
    let by_id = || {
        format!(
            "in a cluster, {what} must name its profile by id, as {{\"profile_id\": \"...\"}} \
             (profiles are placed by their id's hash; email, phone and custom matching \
             cannot find them)"
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
        Call::ImportProfiles => match o.get("profiles") {
            None => {
                let id = imported_id(&o)?;
                Ok(Route::Partitions(vec![(
                    partition_of(&id, partitions),
                    without_token(o),
                )]))
            }
            Some(p) => {
                let rows: Vec<Box<RawValue>> = serde_json::from_str(p.get())
                    .map_err(|_| "profiles must be an array".to_owned())?;
                split(o, "profiles", rows, partitions, |row| {
                    imported_id(&object(row.get(), "a profile")?)
                })
            }
        },
        Call::GetCounter | Call::Get => Err(format!("{call} is a read")),
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
    fn other_matching_modes_are_refused() {
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
    fn an_imported_profile_keeps_its_email_and_phone() {
        let body = br#"{"db_id":1,"profile_id":"p1","email":"a@b.c","phone":"+1 555","token":"t"}"#;
        let Ok(Route::Partitions(parts)) = write(Call::ImportProfiles, body, 4) else {
            panic!("not routed")
        };
        assert_eq!(parts[0].0, partition_of("p1", 4));
        assert!(parts[0].1.contains(r#""email":"a@b.c""#), "{}", parts[0].1);
        assert!(!parts[0].1.contains("token"), "{}", parts[0].1);
        let batch = br#"{"db_id":1,"profiles":[{"profile_id":"p1","email":"a@b.c"},{"profile_id":"p2","phone":"+1"}]}"#;
        assert!(matches!(
            write(Call::ImportProfiles, batch, 4),
            Ok(Route::Partitions(_))
        ));
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
