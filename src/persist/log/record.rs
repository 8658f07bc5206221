//! A log record: a command's bytes (see `docs/format.md`), and its frame
//! `[len u32][xxh64(payload) as u32][payload]`.

use super::super::codec::{Corrupt, Dec, Decoded, Enc};
use crate::command::{BulkRow, Command};
use crate::error::{Error, StorageKind, fail};
use crate::write::{Op, Write as Change};

/// Largest record: a write is far smaller, a bulk import's batch may come near it.
/// A longer record is refused before it is acknowledged, and a bigger length field
/// read back is corruption, not a reason to allocate.
pub(crate) const MAX_RECORD: usize = 64 << 20;

/// The log's encoding of a command.
pub(crate) fn encode(command: &Command) -> Vec<u8> {
    let mut e = Enc::default();
    match command {
        Command::Define(def) => {
            e.u8(Tag::Define as u8);
            e.relation_type(def);
        }
        Command::Write(w) => {
            e.u8(op_code(w.op));
            e.u32(w.rel_id);
            e.str(&w.profile_a);
            e.str(&w.profile_b);
            if w.op != Op::Detach {
                e.weights(&w.values);
            }
        }
        Command::Batch(writes) => {
            e.u8(Tag::Batch as u8);
            // Property names once each, in a table the rows index.
            let mut names: Vec<&str> = Vec::new();
            let mut index: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::new();
            for w in writes {
                for (name, _) in &w.values {
                    index.entry(name.as_str()).or_insert_with(|| {
                        names.push(name);
                        names.len() - 1
                    });
                }
            }
            e.count(names.len());
            for name in &names {
                e.str(name);
            }
            e.count(writes.len());
            for w in writes {
                e.u8(op_code(w.op));
                e.u32(w.rel_id);
                e.str(&w.profile_a);
                e.str(&w.profile_b);
                e.u8(u8::try_from(w.values.len()).unwrap_or(u8::MAX));
                for (name, v) in &w.values {
                    e.count(index[name.as_str()]);
                    e.value(*v);
                }
            }
        }
        Command::Profiles(items) => {
            e.u8(Tag::Profiles as u8);
            e.count(items.len());
            for (db, id, data) in items {
                e.u32(*db);
                e.str(id);
                e.profile_data(data);
            }
        }
        Command::Bulk {
            rel_id,
            names,
            rows,
        } => {
            e.u8(Tag::Bulk as u8);
            e.u32(*rel_id);
            e.count(names.len());
            for name in names {
                e.str(name);
            }
            e.count(rows.len());
            for row in rows {
                e.str(&row.a);
                e.str(&row.b);
                e.u8(u8::try_from(row.weights.len()).unwrap_or(u8::MAX));
                for &(i, v) in &row.weights {
                    e.u8(i);
                    e.value(v);
                }
            }
        }
        Command::Delete { db, id } => {
            e.u8(Tag::Delete as u8);
            e.u32(*db);
            e.str(id);
        }
        Command::Import { db, id, data } => {
            e.u8(Tag::Import as u8);
            e.u32(*db);
            e.str(id);
            e.profile_data(data);
        }
    }
    e.buf
}

/// What a record is: its payload's first byte (see `docs/format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Define = 1,
    Attach = 2,
    Strengthen = 3,
    Edit = 4,
    Detach = 5,
    Delete = 6,
    Import = 7,
    Bulk = 8,
    Profiles = 9,
    Batch = 10,
}

impl Tag {
    const ALL: [Tag; 10] = [
        Tag::Define,
        Tag::Attach,
        Tag::Strengthen,
        Tag::Edit,
        Tag::Detach,
        Tag::Delete,
        Tag::Import,
        Tag::Bulk,
        Tag::Profiles,
        Tag::Batch,
    ];

    fn of(byte: u8) -> Option<Tag> {
        Tag::ALL.into_iter().find(|t| *t as u8 == byte)
    }
}

/// The log's code of a single write: its record tag.
fn op_code(op: Op) -> u8 {
    (match op {
        Op::Attach => Tag::Attach,
        Op::Strengthen => Tag::Strengthen,
        Op::Edit => Tag::Edit,
        Op::Detach => Tag::Detach,
    }) as u8
}

/// The write of a record tag (see [`op_code`]).
fn op_of(code: u8) -> Option<Op> {
    Some(match Tag::of(code)? {
        Tag::Attach => Op::Attach,
        Tag::Strengthen => Op::Strengthen,
        Tag::Edit => Op::Edit,
        Tag::Detach => Op::Detach,
        _ => return None,
    })
}

/// A command from its log encoding.
pub(crate) fn decode(bytes: &[u8]) -> Decoded<Command> {
    let mut d = Dec::new(bytes);
    let byte = d.u8()?;
    let tag = Tag::of(byte).ok_or_else(|| Corrupt(format!("unknown record type {byte}")))?;
    let r = match tag {
        Tag::Define => Command::Define(d.relation_type()?),
        Tag::Attach | Tag::Strengthen | Tag::Edit => Command::Write(Change {
            op: op_of(byte).expect("a write's tag"),
            rel_id: d.u32()?,
            profile_a: d.str()?,
            profile_b: d.str()?,
            values: d.weights()?,
        }),
        Tag::Detach => Command::Write(Change {
            op: Op::Detach,
            rel_id: d.u32()?,
            profile_a: d.str()?,
            profile_b: d.str()?,
            values: Vec::new(),
        }),
        Tag::Delete => Command::Delete {
            db: d.u32()?,
            id: d.str()?,
        },
        Tag::Import => Command::Import {
            db: d.u32()?,
            id: d.str()?,
            data: d.profile_data()?,
        },
        Tag::Bulk => {
            let rel_id = d.u32()?;
            // A name is at least its 2-byte length; a row at least two ids' 2-byte
            // lengths and a weight count. (A tighter bound refused records the log had
            // acknowledged: 1-letter names, rows of short ids without weights.)
            let names = (0..d.count(2)?).map(|_| d.str()).collect::<Decoded<_>>()?;
            let rows = (0..d.count(5)?)
                .map(|_| {
                    let (a, b) = (d.str()?, d.str()?);
                    let weights = (0..d.u8()?)
                        .map(|_| Ok((d.u8()?, d.value()?)))
                        .collect::<Decoded<_>>()?;
                    Ok(BulkRow { a, b, weights })
                })
                .collect::<Decoded<_>>()?;
            Command::Bulk {
                rel_id,
                names,
                rows,
            }
        }
        Tag::Profiles => {
            // A profile is at least a database (4 bytes), an id's length (2), two
            // absent options (2) and two counts (8).
            let items = (0..d.count(16)?)
                .map(|_| Ok((d.u32()?, d.str()?, d.profile_data()?)))
                .collect::<Decoded<_>>()?;
            Command::Profiles(items)
        }
        Tag::Batch => {
            let names: Vec<String> = (0..d.count(2)?).map(|_| d.str()).collect::<Decoded<_>>()?;
            // A write is at least its tag, type, two ids' lengths and a value count.
            let writes = (0..d.count(10)?)
                .map(|_| {
                    let op = d.u8()?;
                    let op = op_of(op).ok_or_else(|| Corrupt(format!("unknown write {op}")))?;
                    let (rel_id, profile_a, profile_b) = (d.u32()?, d.str()?, d.str()?);
                    let values = (0..d.u8()?)
                        .map(|_| {
                            let i = d.u32()?;
                            let name = names.get(i as usize).ok_or_else(|| {
                                Corrupt(format!("property {i} of {}", names.len()))
                            })?;
                            Ok((name.clone(), d.value()?))
                        })
                        .collect::<Decoded<_>>()?;
                    Ok(Change {
                        op,
                        rel_id,
                        profile_a,
                        profile_b,
                        values,
                    })
                })
                .collect::<Decoded<_>>()?;
            Command::Batch(writes)
        }
    };
    if d.remaining() != 0 {
        return Err(Corrupt("trailing bytes in a record".into()));
    }
    Ok(r)
}

pub(super) fn checksum(payload: &[u8]) -> u32 {
    crate::xxh64(payload) as u32
}

/// A frame's header read back: its payload's length and checksum (see
/// [`frame_of`]).
pub(super) fn frame_header(head: &[u8]) -> (usize, u32) {
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    (word(0) as usize, word(4))
}

/// The frame of one command: `[len u32][checksum u32][payload]`, refused when its
/// payload passes [`MAX_RECORD`] (the reader would take it for corruption).
pub(super) fn frame_of(command: &Command) -> Result<Vec<u8>, Error> {
    let payload = encode(command);
    if payload.len() > MAX_RECORD {
        return Err(fail(
            StorageKind::Refused,
            None,
            format!(
                "write log: this write's log record would be {} bytes, over the {MAX_RECORD} bytes a record may have",
                payload.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&checksum(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::data::ProfileData;
    use crate::schema::RelationType;
    use crate::value::Value;

    #[test]
    fn records_round_trip() {
        let records = [
            Command::Define(RelationType::new(1, 1, 2)),
            Command::Write(Change::strengthen(1, "a", "b", [("W", Value::Int(-3))])),
            Command::Write(Change::detach(1, "a", "b")),
            Command::Batch(vec![
                Change::attach(
                    1,
                    "a",
                    "b",
                    [("W", Value::Int(2)), ("F", Value::Float(0.5))],
                ),
                Change::edit(1, "a", "c", [("F", Value::Float(-1.0))]),
                Change::detach(2, "x", "b"),
                Change::strengthen(1, "", "b", [("W", Value::Int(7))]),
            ]),
            Command::Batch(Vec::new()),
            Command::Bulk {
                rel_id: 1,
                names: vec!["W".into(), "F".into()],
                rows: vec![
                    crate::command::BulkRow {
                        a: "a".into(),
                        b: "b".into(),
                        weights: vec![(0, Value::Int(-3)), (1, Value::Float(0.5))],
                    },
                    crate::command::BulkRow {
                        a: "a".into(),
                        b: "c".into(),
                        weights: vec![],
                    },
                ],
            },
            // The smallest encodings of each count's items: 1-letter names, rows of
            // 1-letter ids without weights, an empty profile.
            Command::Bulk {
                rel_id: 1,
                names: (b'A'..=b'Z').map(|c| char::from(c).to_string()).collect(),
                rows: vec![crate::command::BulkRow {
                    a: "a".into(),
                    b: "b".into(),
                    weights: vec![(0, Value::Int(1))],
                }],
            },
            Command::Bulk {
                rel_id: 1,
                names: vec![],
                rows: (0..50)
                    .map(|i| crate::command::BulkRow {
                        a: "a".into(),
                        b: char::from(b'a' + i % 26).to_string(),
                        weights: vec![],
                    })
                    .collect(),
            },
            Command::Profiles(vec![(1, "p".into(), ProfileData::default()); 20]),
            Command::Profiles(vec![
                (1, "p".into(), ProfileData::default()),
                (
                    2,
                    "q".into(),
                    ProfileData {
                        email: Some("q@x.io".into()),
                        ..ProfileData::default()
                    },
                ),
            ]),
            Command::Delete {
                db: 2,
                id: "b".into(),
            },
            Command::Import {
                db: 1,
                id: "a".into(),
                data: ProfileData::default(),
            },
        ];
        for r in records {
            assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }
}
