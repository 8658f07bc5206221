//! Profile ids: validation, compact storage of 24-hex ids, and `profile_xxh`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use crate::error::Error;
use crate::limits::MAX_PROFILE_ID_LEN;

/// A function that hashes a profile id's bytes to the 64-bit value that places it.
///
/// The engine uses [`xxh64`] unless a test injects another one through
/// [`EngineBuilder::profile_hasher`](crate::EngineBuilder::profile_hasher).
pub type ProfileHasher = fn(&[u8]) -> u64;

/// XXH64 with seed 0 over `bytes`: the platform's `profile_xxh`.
///
/// # Examples
///
/// ```
/// assert_eq!(
///     relcount::format_xxh(relcount::xxh64(b"5c910f6bc484d023b1309bee")),
///     "54ec2d76ac22a964"
/// );
/// ```
#[must_use]
pub fn xxh64(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, 0)
}

/// Formats a `profile_xxh` as the platform prints it: 16 lowercase hex digits.
#[must_use]
pub fn format_xxh(xxh: u64) -> String {
    format!("{xxh:016x}")
}

/// A profile id: any non-empty string of at most 64 bytes.
///
/// The platform's ids are 24 lowercase hex characters (12-byte object ids); those are
/// stored in 12 bytes inline, every other id on the heap. Two ids are equal exactly when
/// their strings are equal, and they order as their strings do (byte-wise).
///
/// # Examples
///
/// ```
/// use relcount::ProfileId;
///
/// let id = ProfileId::new("5c910f6bc484d023b1309bee").unwrap();
/// assert_eq!(id, "5c910f6bc484d023b1309bee");
/// assert_eq!(id.as_str(), "5c910f6bc484d023b1309bee");
/// assert_eq!(id.as_str().len(), 24); // derefs to `str`
/// assert!(ProfileId::new("").is_err());
/// ```
#[derive(Clone)]
pub struct ProfileId(Repr);

#[derive(Clone)]
enum Repr {
    /// 24 lowercase hex characters, packed two to a byte.
    Hex(Packed),
    /// Any other id, behind a thin pointer: an id is 16 bytes in either form (a
    /// profile, a key and a command hold one), and the platform's ids are hex.
    Text(Box<Box<str>>),
}

/// The 12 packed bytes of a 24-hex id, 4-byte aligned: an id is copied in three
/// aligned words (at an odd offset after the enum's tag, its copies were split into
/// loads the CPU could not forward from the stores before them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(align(4))]
struct Packed([u8; 12]);

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn pack_hex24(s: &[u8]) -> Option<[u8; 12]> {
    if s.len() != 24 {
        return None;
    }
    let mut out = [0u8; 12];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

impl ProfileId {
    /// Validates and stores a profile id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProfileId`] when `id` is empty or longer than
    /// [`MAX_PROFILE_ID_LEN`] bytes.
    pub fn new(id: &str) -> Result<Self, Error> {
        if id.is_empty() || id.len() > MAX_PROFILE_ID_LEN {
            return Err(Error::InvalidProfileId { len: id.len() });
        }
        Ok(match pack_hex24(id.as_bytes()) {
            Some(packed) => ProfileId(Repr::Hex(Packed(packed))),
            None => ProfileId(Repr::Text(Box::new(id.into()))),
        })
    }

    /// The id as a string, without allocating.
    ///
    /// A compact id keeps 12 packed bytes, not its 24 characters (12 bytes saved on
    /// every profile), so this returns a small value that derefs to `str`, compares
    /// with `str` and `String`, and prints as the id; `&*id.as_str()` is a `&str`.
    #[must_use]
    pub fn as_str(&self) -> ProfileStr<'_> {
        match &self.0 {
            Repr::Hex(Packed(packed)) => {
                let mut buf = [0u8; 24];
                for (i, b) in packed.iter().enumerate() {
                    buf[2 * i] = HEX_DIGITS[usize::from(b >> 4)];
                    buf[2 * i + 1] = HEX_DIGITS[usize::from(b & 0xf)];
                }
                ProfileStr(StrRepr::Hex(buf))
            }
            Repr::Text(s) => ProfileStr(StrRepr::Text(s)),
        }
    }

    /// The hash that places the profile of this id: `hasher` (the engine's, XXH64
    /// unless a test injected another) over the id's text.
    pub(crate) fn hash_with(&self, hasher: ProfileHasher) -> u64 {
        hasher(self.as_str().as_bytes())
    }

    /// The 12 packed bytes of a 24-hex id (`None` for any other id). Packed ids
    /// order as their strings do, so comparing them compares the ids.
    pub(crate) fn packed(&self) -> Option<[u8; 12]> {
        match &self.0 {
            Repr::Hex(Packed(packed)) => Some(*packed),
            Repr::Text(_) => None,
        }
    }

    /// The id as a slot's cell holds it (`cell::IdWords`): a 24-hex id's packed bytes,
    /// its first 8 then its last 4 above [`cell::HEX`]; any other id as
    /// [`cell::TEXT`] alone (its text kept beside the cell).
    pub(crate) fn words(&self) -> crate::profile::cell::IdWords {
        use crate::profile::cell::{HEX, TEXT};
        match &self.0 {
            Repr::Hex(Packed(p)) => {
                let head = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                let tail = u32::from_le_bytes(p[8..].try_into().expect("4 bytes"));
                [head, u64::from(tail) << 32 | HEX]
            }
            Repr::Text(_) => [0, TEXT],
        }
    }

    /// The 24-hex id a cell's words hold (`None` for the words of a text id).
    pub(crate) fn from_words([head, tail]: crate::profile::cell::IdWords) -> Option<Self> {
        (tail & crate::profile::cell::HEX != 0)
            .then(|| Self::from_halves(head, (tail >> 32) as u32))
    }

    /// The text of an id that is not a 24-hex id.
    pub(crate) fn text(&self) -> Option<&str> {
        match &self.0 {
            Repr::Hex(_) => None,
            Repr::Text(s) => Some(s),
        }
    }

    /// The id of 24 hex characters whose packed bytes are `packed`.
    pub(crate) fn from_packed(packed: [u8; 12]) -> Self {
        ProfileId(Repr::Hex(Packed(packed)))
    }

    /// The id of 24 hex characters whose packed bytes are `head` then `tail` (each
    /// little endian).
    pub(crate) fn from_halves(head: u64, tail: u32) -> Self {
        ProfileId(Repr::Hex(Packed(packed_from_halves(head, tail))))
    }

    /// True when the id is stored in the compact 12-byte form.
    #[must_use]
    pub fn is_compact(&self) -> bool {
        matches!(self.0, Repr::Hex(_))
    }

    /// Heap bytes this id owns beyond its inline size (0 for compact ids; for
    /// another id its text and the 16-byte box that points to it).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Hex(_) => 0,
            Repr::Text(s) => s.len() + std::mem::size_of::<Box<str>>(),
        }
    }
}

impl PartialEq for ProfileId {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Hex(a), Repr::Hex(b)) => a == b,
            (Repr::Text(a), Repr::Text(b)) => a == b,
            // A text id is never 24 lowercase hex characters, so the forms never meet.
            _ => false,
        }
    }
}

impl Eq for ProfileId {}

impl Hash for ProfileId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.0 {
            Repr::Hex(a) => a.hash(state),
            Repr::Text(s) => s.hash(state),
        }
    }
}

impl Ord for ProfileId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // Packed nibbles order as their lowercase hex digits do.
            (Repr::Hex(a), Repr::Hex(b)) => a.cmp(b),
            _ => self.as_str().as_bytes().cmp(other.as_str().as_bytes()),
        }
    }
}

impl PartialOrd for ProfileId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The 12 packed bytes of a 24-hex id held as `head` then `tail` (each little
/// endian); packed ids order as their strings do.
pub(crate) fn packed_from_halves(head: u64, tail: u32) -> [u8; 12] {
    let mut packed = [0; 12];
    packed[..8].copy_from_slice(&head.to_le_bytes());
    packed[8..].copy_from_slice(&tail.to_le_bytes());
    packed
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProfileId({:?})", &*self.as_str())
    }
}

/// A profile id borrowed as a `str` (see [`ProfileId::as_str`]): derefs to `str`,
/// compares with `str`, `&str` and `String`, and prints as the id. (Not `Clone`, so
/// that `to_owned()` gives the `String`, as on a `&str`.)
pub struct ProfileStr<'a>(StrRepr<'a>);

enum StrRepr<'a> {
    Hex([u8; 24]),
    Text(&'a str),
}

impl Deref for ProfileStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            // Every byte comes from HEX_DIGITS, so the buffer is ASCII; the fallback is
            // unreachable and keeps this module free of unsafe code.
            StrRepr::Hex(buf) => std::str::from_utf8(buf).unwrap_or_default(),
            StrRepr::Text(s) => s,
        }
    }
}

impl fmt::Display for ProfileStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for ProfileStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl AsRef<str> for ProfileStr<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl std::borrow::Borrow<str> for ProfileStr<'_> {
    fn borrow(&self) -> &str {
        self
    }
}

impl PartialEq for ProfileStr<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for ProfileStr<'_> {}

impl PartialOrd for ProfileStr<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProfileStr<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl Hash for ProfileStr<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl From<ProfileStr<'_>> for String {
    fn from(s: ProfileStr<'_>) -> String {
        (*s).to_owned()
    }
}

/// `==` between an id (or its borrowed form) and the string types, both ways round.
macro_rules! eq_str {
    ($($lhs:ty => $rhs:ty),* $(,)?) => {$(
        impl PartialEq<$rhs> for $lhs {
            fn eq(&self, other: &$rhs) -> bool {
                Text::text(self, |s| s == AsRef::<str>::as_ref(other))
            }
        }

        impl PartialEq<$lhs> for $rhs {
            fn eq(&self, other: &$lhs) -> bool {
                other == self
            }
        }
    )*};
}

/// Reads an id or its borrowed form as a `&str`.
trait Text {
    fn text<R>(&self, f: impl FnOnce(&str) -> R) -> R;
}

impl Text for ProfileId {
    fn text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(&self.as_str())
    }
}

impl Text for ProfileStr<'_> {
    fn text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        f(self)
    }
}

eq_str! {
    ProfileId => str,
    ProfileId => &str,
    ProfileId => String,
    ProfileStr<'_> => str,
    ProfileStr<'_> => &str,
    ProfileStr<'_> => String,
}

impl From<&ProfileId> for String {
    fn from(id: &ProfileId) -> String {
        id.as_str().to_owned()
    }
}

impl std::str::FromStr for ProfileId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        ProfileId::new(s)
    }
}

impl TryFrom<&str> for ProfileId {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        ProfileId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_pairs() {
        for (id, xxh) in [
            ("5c910f6bc484d023b1309bee", "54ec2d76ac22a964"),
            ("669e6968ebf4ac52b623a997", "5af1023c84f66195"),
            ("6751b8f1c5e3db9bcb75befa", "879cebbb0e6b6723"),
        ] {
            assert_eq!(format_xxh(xxh64(id.as_bytes())), xxh, "{id}");
        }
    }

    #[test]
    fn ids_read_as_str_in_both_forms() {
        for text in [
            "0123456789abcdef01234567",
            "alice@example",
            "0123456789ABCDEF01234567",
        ] {
            let id: ProfileId = text.parse().unwrap();
            assert_eq!(id, text);
            assert_eq!(text, id);
            assert_eq!(id, text.to_owned());
            assert_eq!(id.as_str(), text);
            assert_eq!(id.as_str(), *text);
            assert_eq!(format!("{:?}", id.as_str()), format!("{text:?}"));
            assert_eq!(String::from(&id), text);
            assert_eq!(String::from(id.as_str()), text);
            assert_eq!(id.as_str().to_owned(), text);
            assert_ne!(id, "someone else");
            assert_ne!(id.as_str(), "0123456789abcdef01234568");
        }
        let (low, high) = (ProfileId::new("0a").unwrap(), ProfileId::new("0b").unwrap());
        assert!(low.as_str() < high.as_str());
        assert!(ProfileId::try_from("").is_err());
    }

    #[test]
    fn hex_ids_are_compact_and_round_trip() {
        let id = ProfileId::new("0123456789abcdef01234567").unwrap();
        assert!(id.is_compact());
        assert_eq!(&*id.as_str(), "0123456789abcdef01234567");
        let upper = ProfileId::new("0123456789ABCDEF01234567").unwrap();
        assert!(!upper.is_compact());
        assert_ne!(id, upper);
    }

    /// An id is 16 bytes in either form (a profile, a key and a command each hold
    /// one), and text ids hash, compare and read back as their strings.
    #[test]
    fn ids_are_16_bytes_in_either_form() {
        assert_eq!(std::mem::size_of::<ProfileId>(), 16);
        let text = ProfileId::new("user-42@example").unwrap();
        assert!(!text.is_compact());
        assert_eq!(&*text.as_str(), "user-42@example");
        assert_eq!(text, ProfileId::new("user-42@example").unwrap());
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        assert_eq!(state.hash_one(&text), state.hash_one("user-42@example"));
        assert_eq!(text.heap_bytes(), "user-42@example".len() + 16);
    }

    #[test]
    fn order_matches_string_order_across_forms() {
        let ids = [
            "0123456789abcdef01234567",
            "0123456789abcdef0123456",
            "0123456789abcdef012345678",
            "ffffffffffffffffffffffff",
            "g",
            "A",
            "a",
            "zzzzzzzzzzzzzzzzzzzzzzzz",
        ];
        for a in ids {
            for b in ids {
                let (pa, pb) = (ProfileId::new(a).unwrap(), ProfileId::new(b).unwrap());
                assert_eq!(pa.cmp(&pb), a.cmp(b), "{a} vs {b}");
                assert_eq!(pa == pb, a == b);
            }
        }
    }

    #[test]
    fn length_limits() {
        assert!(ProfileId::new(&"x".repeat(64)).is_ok());
        assert_eq!(
            ProfileId::new(&"x".repeat(65)).unwrap_err(),
            Error::InvalidProfileId { len: 65 }
        );
    }
}
