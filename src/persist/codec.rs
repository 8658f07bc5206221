//! The binary encoding shared by snapshots and the write log: little-endian integers,
//! length-prefixed strings, typed values, and a reader that checks every length against
//! what is left before it allocates, so a corrupted or hostile file can never make it
//! allocate without bound or panic.

use crate::profile::data::{Channel, FieldValue, ProfileData, Subscription};
use crate::schema::{PropSpec, RelationType};
use crate::value::{PropKind, Value};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) String);

pub(crate) type Decoded<T> = Result<T, Corrupt>;

fn corrupt<T>(what: impl Into<String>) -> Decoded<T> {
    Err(Corrupt(what.into()))
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Enc {
    pub(crate) buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Strings are at most 65535 bytes (the engine keeps none longer than 256).
    pub(crate) fn str(&mut self, s: &str) {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.buf
            .extend_from_slice(&s.as_bytes()[..usize::from(len)]);
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }

    pub(crate) fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub(crate) fn value(&mut self, v: Value) {
        match v {
            Value::Int(i) => {
                self.u8(0);
                self.u64(i as u64);
            }
            Value::Float(f) => {
                self.u8(1);
                self.u64(f.to_bits());
            }
            Value::Bool(b) => {
                self.u8(2);
                self.u8(u8::from(b));
            }
        }
    }

    pub(crate) fn weights(&mut self, w: &[(String, Value)]) {
        self.count(w.len());
        for (name, v) in w {
            self.str(name);
            self.value(*v);
        }
    }

    pub(crate) fn relation_type(&mut self, def: &RelationType) {
        self.u32(def.rel_id());
        self.u32(def.db_a());
        self.u32(def.db_b());
        self.count(def.props().len());
        for (name, spec) in def.props() {
            self.str(name);
            self.u8(match spec.kind() {
                PropKind::Int => 0,
                PropKind::Float => 1,
                PropKind::Bool => 2,
            });
            self.u8(u8::from(spec.has_sum()));
            self.u16(spec.top_size().unwrap_or(0));
        }
    }

    pub(crate) fn profile_data(&mut self, d: &ProfileData) {
        self.opt_str(d.email.as_deref());
        self.opt_str(d.phone.as_deref());
        self.count(d.fields.len());
        for (name, v) in &d.fields {
            self.str(name);
            match v {
                FieldValue::Text(t) => {
                    self.u8(0);
                    self.str(t);
                }
                FieldValue::Int(i) => {
                    self.u8(1);
                    self.u64(*i as u64);
                }
                FieldValue::Tags(tags) => {
                    self.u8(2);
                    self.count(tags.len());
                    for t in tags {
                        self.str(t);
                    }
                }
            }
        }
        self.count(d.subscriptions.len());
        for s in &d.subscriptions {
            self.u32(s.resource_id);
            self.u8(match s.channel {
                Channel::Email => 0,
                Channel::Sms => 1,
            });
            self.str(&s.address);
        }
    }
}

/// Reads encoded values from a byte slice, never past its end.
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Dec { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.remaining() {
            return corrupt(format!(
                "truncated: {n} bytes needed at offset {}, {} left",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Decoded<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Decoded<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn str(&mut self) -> Decoded<String> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => corrupt(format!("invalid UTF-8 at offset {}", self.pos - len)),
        }
    }

    fn opt_str(&mut self) -> Decoded<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            t => corrupt(format!("bad option tag {t}")),
        }
    }

    /// A count of items each at least `min_size` bytes: refused if they cannot fit in
    /// what is left, so no allocation is sized by a corrupted count.
    pub(crate) fn count(&mut self, min_size: usize) -> Decoded<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return corrupt(format!(
                "count {n} at offset {} exceeds the data left",
                self.pos - 4
            ));
        }
        Ok(n)
    }

    pub(crate) fn value(&mut self) -> Decoded<Value> {
        match self.u8()? {
            0 => Ok(Value::Int(self.u64()? as i64)),
            1 => Ok(Value::Float(f64::from_bits(self.u64()?))),
            2 => match self.u8()? {
                0 => Ok(Value::Bool(false)),
                1 => Ok(Value::Bool(true)),
                b => corrupt(format!("bad bool {b}")),
            },
            t => corrupt(format!("bad value tag {t}")),
        }
    }

    pub(crate) fn weights(&mut self) -> Decoded<Vec<(String, Value)>> {
        let n = self.count(4)?;
        (0..n).map(|_| Ok((self.str()?, self.value()?))).collect()
    }

    pub(crate) fn relation_type(&mut self) -> Decoded<RelationType> {
        let mut def = RelationType::new(self.u32()?, self.u32()?, self.u32()?);
        let n = self.count(6)?;
        for _ in 0..n {
            let name = self.str()?;
            let kind = match self.u8()? {
                0 => PropKind::Int,
                1 => PropKind::Float,
                2 => PropKind::Bool,
                k => return corrupt(format!("bad property kind {k}")),
            };
            let mut spec = PropSpec::of(kind);
            match self.u8()? {
                0 => {}
                1 => spec = spec.sum(),
                s => return corrupt(format!("bad sum flag {s}")),
            }
            let top = self.u16()?;
            if top > 0 {
                spec = spec.top(top);
            }
            def = def.prop(name, spec);
        }
        Ok(def)
    }

    pub(crate) fn profile_data(&mut self) -> Decoded<ProfileData> {
        let email = self.opt_str()?;
        let phone = self.opt_str()?;
        let n = self.count(3)?;
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?;
            let v = match self.u8()? {
                0 => FieldValue::Text(self.str()?),
                1 => FieldValue::Int(self.u64()? as i64),
                2 => {
                    let k = self.count(2)?;
                    FieldValue::Tags((0..k).map(|_| self.str()).collect::<Decoded<_>>()?)
                }
                t => return corrupt(format!("bad field tag {t}")),
            };
            fields.push((name, v));
        }
        let n = self.count(7)?;
        let mut subscriptions = Vec::with_capacity(n);
        for _ in 0..n {
            let resource_id = self.u32()?;
            let channel = match self.u8()? {
                0 => Channel::Email,
                1 => Channel::Sms,
                c => return corrupt(format!("bad channel {c}")),
            };
            subscriptions.push(Subscription {
                resource_id,
                channel,
                address: self.str()?,
            });
        }
        Ok(ProfileData {
            email,
            phone,
            fields,
            subscriptions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let def = RelationType::new(3, 1, 2)
            .prop("Donate", PropSpec::int().top(10))
            .prop("Score", PropSpec::float().sum())
            .prop("Sub", PropSpec::bool());
        let data = ProfileData {
            email: Some("a@b.c".into()),
            phone: None,
            fields: vec![
                ("F".into(), FieldValue::Int(-5)),
                ("T".into(), FieldValue::Tags(vec!["x".into(), "y".into()])),
                ("S".into(), FieldValue::Text("é".into())),
            ],
            subscriptions: vec![Subscription {
                resource_id: 7,
                channel: Channel::Sms,
                address: "+1".into(),
            }],
        };
        let w = vec![
            ("a".to_string(), Value::Int(i64::MIN)),
            ("b".to_string(), Value::Float(-0.5)),
            ("c".to_string(), Value::Bool(true)),
        ];
        let mut e = Enc::default();
        e.relation_type(&def);
        e.profile_data(&data);
        e.weights(&w);
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.relation_type().unwrap(), def);
        assert_eq!(d.profile_data().unwrap(), data);
        assert_eq!(d.weights().unwrap(), w);
        assert_eq!(d.remaining(), 0);
        // Every truncation is an error, never a panic.
        for cut in 0..e.buf.len() {
            let mut d = Dec::new(&e.buf[..cut]);
            let r = d
                .relation_type()
                .and_then(|_| d.profile_data())
                .and_then(|_| d.weights());
            assert!(r.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn counts_are_bounded_by_the_data() {
        let mut e = Enc::default();
        e.u32(u32::MAX);
        assert!(Dec::new(&e.buf).count(1).is_err());
    }
}
