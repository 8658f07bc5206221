//! API tokens: registered by the host, stored only as SHA-256 digests, compared in
//! constant time, each with an optional `rel_id` scope and a read-only flag. A token
//! never appears in an error text, a log or a `Debug` output.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

/// What a token may do.
///
/// # Examples
///
/// ```
/// use relcount::api::TokenScope;
///
/// let admin = TokenScope::full();
/// let reader = TokenScope::full().read_only().rel_ids([3]);
/// assert!(reader.allows(3, false) && !reader.allows(3, true) && !reader.allows(4, false));
/// assert!(admin.allows(4, true));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    rel_ids: Option<Vec<u32>>,
    read_only: bool,
}

impl TokenScope {
    /// Every call on every relation type.
    #[must_use]
    pub fn full() -> Self {
        TokenScope {
            rel_ids: None,
            read_only: false,
        }
    }

    /// Limits the token to these relation types (and so away from the calls that are
    /// not about one relation type: `profiles/import`, `profiles/delete`).
    #[must_use]
    pub fn rel_ids(mut self, rel_ids: impl IntoIterator<Item = u32>) -> Self {
        self.rel_ids = Some(rel_ids.into_iter().collect());
        self
    }

    /// Limits the token to reads (`get_counter`, `get`).
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Whether the token may make a call on `rel_id` that reads (`write == false`) or
    /// writes.
    #[must_use]
    pub fn allows(&self, rel_id: u32, write: bool) -> bool {
        (!write || !self.read_only) && self.rel_ids.as_ref().is_none_or(|r| r.contains(&rel_id))
    }

    /// Whether the token may make a call that is not about one relation type
    /// (profile imports and deletes): only unscoped, writing tokens may.
    #[must_use]
    pub fn allows_profiles(&self) -> bool {
        !self.read_only && self.rel_ids.is_none()
    }
}

type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without an early exit.
fn ct_eq(a: &Digest32, b: &Digest32) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The registered tokens, replaced whole on change (rare), read without a lock.
#[derive(Default)]
pub(crate) struct Tokens {
    /// Digest prefix -> (digest, scope): the prefix picks candidates, the full digest
    /// is compared in constant time.
    by_prefix: ArcSwap<HashMap<u64, Vec<(Digest32, TokenScope)>>>,
}

impl Tokens {
    pub(crate) fn add(&self, token: &str, scope: TokenScope) {
        let d = digest(token);
        let prefix = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        self.by_prefix.rcu(|current| {
            let mut next = HashMap::clone(current);
            let bucket = next.entry(prefix).or_default();
            bucket.retain(|(existing, _)| !ct_eq(existing, &d));
            bucket.push((d, scope.clone()));
            Arc::new(next)
        });
    }

    pub(crate) fn remove(&self, token: &str) {
        let d = digest(token);
        self.by_prefix.rcu(|current| {
            let mut next = HashMap::clone(current);
            for bucket in next.values_mut() {
                bucket.retain(|(existing, _)| !ct_eq(existing, &d));
            }
            next.retain(|_, b| !b.is_empty());
            Arc::new(next)
        });
    }

    /// The scope of `token`, if registered.
    pub(crate) fn scope(&self, token: &str) -> Option<TokenScope> {
        let d = digest(token);
        let prefix = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let map = self.by_prefix.load();
        let mut found = None;
        for (stored, scope) in map.get(&prefix)? {
            if ct_eq(stored, &d) {
                found = Some(scope.clone());
            }
        }
        found
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokens({} registered)",
            self.by_prefix.load().values().map(Vec::len).sum::<usize>()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_check_remove() {
        let t = Tokens::default();
        t.add("secret", TokenScope::full().read_only());
        assert_eq!(t.scope("secret"), Some(TokenScope::full().read_only()));
        assert_eq!(t.scope("secret2"), None);
        assert_eq!(t.scope(""), None);
        t.add("secret", TokenScope::full());
        assert_eq!(t.scope("secret"), Some(TokenScope::full()));
        t.remove("secret");
        assert_eq!(t.scope("secret"), None);
        assert!(!format!("{t:?}").contains("secret"));
    }
}
