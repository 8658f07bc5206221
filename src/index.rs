//! Secondary indexes of the profile directory: email, phone, custom field and tag
//! entries to the profiles under them, readable without a lock.
//!
//! An entry's posting is an immutable list while it is small (the usual case: an email
//! or a CRM id names one profile), replaced whole on change; past [`SMALL_MAX`]
//! profiles (a popular tag) it becomes a concurrent set updated in place, so adding one
//! profile never copies a large posting. Writers of one entry are serialised by a
//! striped lock; readers never take it. A lookup only *proposes* candidates: each one is
//! checked against the profile's current data, so a reader racing an import never
//! accepts a stale match.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use crate::profile::Profile;
use crate::profile_data::IndexKey;
use crate::sync::{Mutex, lock_free_map};

/// Largest posting kept as an immutable list.
pub(crate) const SMALL_MAX: usize = 32;
const STRIPES: usize = 64;

/// The profiles under one index entry.
#[derive(Debug)]
pub(crate) enum Posting {
    Small(Arc<[Arc<Profile>]>),
    Many(Arc<papaya::HashMap<u32, Arc<Profile>, DefaultHashBuilder>>),
}

impl Posting {
    pub(crate) fn len(&self) -> usize {
        match self {
            Posting::Small(list) => list.len(),
            Posting::Many(set) => set.len(),
        }
    }

    /// Calls `f` on each profile until it returns `false`.
    pub(crate) fn each(&self, mut f: impl FnMut(&Arc<Profile>) -> bool) {
        match self {
            Posting::Small(list) => {
                for p in list.iter() {
                    if !f(p) {
                        return;
                    }
                }
            }
            Posting::Many(set) => {
                for p in set.pin().values() {
                    if !f(p) {
                        return;
                    }
                }
            }
        }
    }
}

/// All entries of all databases.
#[derive(Debug)]
pub(crate) struct Index {
    map: papaya::HashMap<IndexKey, Posting, DefaultHashBuilder>,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: DefaultHashBuilder,
}

impl Index {
    pub(crate) fn new(collector: &Arc<seize::Collector>) -> Self {
        Index {
            map: lock_free_map(collector),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: DefaultHashBuilder::default(),
        }
    }

    fn stripe(&self, key: &IndexKey) -> &Mutex<()> {
        let h = self.stripe_hasher.hash_one(key) as usize;
        &self.stripes[h % STRIPES]
    }

    /// Puts `profile` under `key`.
    pub(crate) fn add(&self, key: IndexKey, profile: &Arc<Profile>) {
        let _serial = self.stripe(&key).lock().unwrap_or_else(|e| e.into_inner());
        let map = self.map.pin();
        let next = match map.get(&key) {
            None => Posting::Small(Arc::from([Arc::clone(profile)])),
            Some(Posting::Many(set)) => {
                set.pin().insert(profile.slot, Arc::clone(profile));
                return;
            }
            Some(Posting::Small(list)) if list.iter().any(|p| Arc::ptr_eq(p, profile)) => return,
            Some(Posting::Small(list)) if list.len() < SMALL_MAX => {
                let mut v: Vec<Arc<Profile>> = list.to_vec();
                v.push(Arc::clone(profile));
                Posting::Small(v.into())
            }
            Some(Posting::Small(list)) => {
                let set = papaya::HashMap::with_hasher(DefaultHashBuilder::default());
                {
                    let s = set.pin();
                    for p in list.iter().chain([profile]) {
                        s.insert(p.slot, Arc::clone(p));
                    }
                }
                Posting::Many(Arc::new(set))
            }
        };
        map.insert(key, next);
    }

    /// Takes `profile` from under `key`.
    pub(crate) fn remove(&self, key: &IndexKey, profile: &Profile) {
        let _serial = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        let map = self.map.pin();
        match map.get(key) {
            None => {}
            Some(Posting::Many(set)) => {
                let s = set.pin();
                s.remove(&profile.slot);
                if s.is_empty() {
                    map.remove(key);
                }
            }
            Some(Posting::Small(list)) => {
                let v: Vec<Arc<Profile>> = list
                    .iter()
                    .filter(|p| !std::ptr::eq(&***p, profile))
                    .cloned()
                    .collect();
                if v.is_empty() {
                    map.remove(key);
                } else if v.len() != list.len() {
                    map.insert(key.clone(), Posting::Small(v.into()));
                }
            }
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
