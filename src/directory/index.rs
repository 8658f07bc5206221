//! Secondary indexes of the profile directory: email, phone, custom field and tag
//! entries to the profiles under them, readable without a lock.
//!
//! An entry's posting is an immutable list while it is small (the usual case: an email
//! or a CRM id names one profile), replaced whole on change; past [`SMALL_MAX`]
//! profiles (a popular tag) it becomes a concurrent set updated in place, so adding one
//! profile never copies a large posting. Writers of one entry are serialised by a
//! striped lock; readers never take it. A posting names profiles by slot (4 bytes, no
//! reference count): a profile's entries are removed before its slot is given back,
//! so a slot is under an entry only while its profile holds that data. A lookup only
//! *proposes* candidates: each one is checked against the current data of the profile
//! in its slot, so a reader racing an import or a delete never accepts a stale match.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use crate::map::LockFreeMap;
use crate::profile::data::IndexKey;
use crate::sync::Mutex;

/// Largest posting kept as an immutable list.
pub(crate) const SMALL_MAX: usize = 32;
const STRIPES: usize = 64;

/// The slots of the profiles under one index entry.
#[derive(Debug)]
pub(crate) enum Posting {
    Small(Arc<[u32]>),
    /// Each slot keyed by itself.
    Many(Arc<LockFreeMap<u32, u32>>),
}

impl Posting {
    pub(crate) fn len(&self) -> usize {
        match self {
            Posting::Small(list) => list.len(),
            Posting::Many(set) => set.len(),
        }
    }

    /// Calls `f` on each slot until it returns `false`.
    pub(crate) fn each(&self, mut f: impl FnMut(u32) -> bool) {
        match self {
            Posting::Small(list) => {
                for &slot in list.iter() {
                    if !f(slot) {
                        return;
                    }
                }
            }
            Posting::Many(set) => set.each(|&slot| f(slot)),
        }
    }
}

/// All entries of all databases.
#[derive(Debug)]
pub(crate) struct Index {
    map: LockFreeMap<IndexKey, Posting>,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: DefaultHashBuilder,
}

impl Index {
    pub(crate) fn new(collector: &Arc<seize::Collector>) -> Self {
        Index {
            map: LockFreeMap::new(collector),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: DefaultHashBuilder::default(),
        }
    }

    fn stripe(&self, key: &IndexKey) -> &Mutex<()> {
        let h = self.stripe_hasher.hash_one(key) as usize;
        &self.stripes[h % STRIPES]
    }

    /// Puts the profile in `slot` under `key`.
    pub(crate) fn add(&self, key: IndexKey, slot: u32) {
        let _serial = self.stripe(&key).lock().unwrap_or_else(|e| e.into_inner());
        let next = self.map.with(&key, |posting| match posting {
            None => Some(Posting::Small(Arc::from([slot]))),
            Some(Posting::Many(set)) => {
                set.insert(slot, slot);
                None
            }
            Some(Posting::Small(list)) if list.contains(&slot) => None,
            Some(Posting::Small(list)) if list.len() < SMALL_MAX => {
                let mut v: Vec<u32> = list.to_vec();
                v.push(slot);
                Some(Posting::Small(v.into()))
            }
            Some(Posting::Small(list)) => {
                let set = LockFreeMap::iterable();
                for &s in list.iter().chain([&slot]) {
                    set.insert(s, s);
                }
                Some(Posting::Many(Arc::new(set)))
            }
        });
        if let Some(next) = next {
            self.map.insert(key, next);
        }
    }

    /// Takes the profile in `slot` from under `key`.
    pub(crate) fn remove(&self, key: &IndexKey, slot: u32) {
        let _serial = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        // What becomes of the posting: emptied (`None`), replaced, or kept.
        let next = self.map.with(key, |posting| match posting {
            None => Some(None),
            Some(Posting::Many(set)) => {
                set.remove(&slot);
                set.is_empty().then_some(None)
            }
            Some(Posting::Small(list)) => {
                let v: Vec<u32> = list.iter().copied().filter(|&s| s != slot).collect();
                if v.is_empty() {
                    Some(None)
                } else if v.len() != list.len() {
                    Some(Some(Posting::Small(v.into())))
                } else {
                    None
                }
            }
        });
        match next {
            Some(None) => self.map.remove(key),
            Some(Some(posting)) => self.map.insert(key.clone(), posting),
            None => {}
        }
    }

    /// The posting of `key`, for as long as `guard` lives.
    pub(crate) fn get<'g>(
        &self,
        key: &IndexKey,
        guard: &'g impl seize::Guard,
    ) -> Option<&'g Posting> {
        self.map.get(key, guard)
    }
}
