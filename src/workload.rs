//! A reproducible, realistic workload: the seed page's relation type, and relations
//! whose fan-in per recipient follows a Zipf law, so a few recipients have 100k+
//! initiators while most have a handful. The demo, the benches and the fuzz targets all
//! draw from here, so their figures describe the same data.
//!
//! # Examples
//!
//! ```
//! use relcount::{Engine, workload::Workload};
//!
//! let w = Workload::new(1_000, 5_000, 42);
//! let engine = Engine::new();
//! engine.define(Workload::seed_schema(w.rel_id)).unwrap();
//! for rel in w.relations(2_000) {
//!     engine.attach(w.rel_id, &rel.a, &rel.b, &rel.weights()).unwrap();
//! }
//! assert!(engine.relation_count() > 1_900); // a few draws repeat a pair
//! ```

use crate::schema::{PropSpec, RelationType};
use crate::value::Value;

/// SplitMix64: a tiny, fast, well-mixed PRNG; the same seed gives the same stream on
/// every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A uniform integer in `0..n` (`n > 0`; Lemire's multiply-shift, bias below 2^-32
    /// for the sizes used here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n` ranks (`n > 0`) with exponent `s`.
    #[must_use]
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cdf = (1..=n.max(1))
            .map(|k| {
                total += (k as f64).powf(-s);
                total
            })
            .collect();
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let u = rng.unit() * total;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// One generated relation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRelation {
    /// Recipient id (database A), 24 hex characters.
    pub a: String,
    /// Initiator id (database B), 24 hex characters.
    pub b: String,
    /// `Donate`: 1..=1000, skewed low.
    pub donate: i64,
    /// `Like`: 1..=5.
    pub like: i64,
    /// `Subscriber`.
    pub subscriber: bool,
}

impl GenRelation {
    /// The weights of the seed schema.
    #[must_use]
    pub fn weights(&self) -> [(&'static str, Value); 3] {
        [
            ("Donate", Value::Int(self.donate)),
            ("Like", Value::Int(self.like)),
            ("Subscriber", Value::Bool(self.subscriber)),
        ]
    }
}

/// A workload over `a_count` recipients and `b_count` initiators.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The relation type used.
    pub rel_id: u32,
    /// Database of the recipients.
    pub db_a: u32,
    /// Database of the initiators.
    pub db_b: u32,
    b_count: u64,
    seed: u64,
    zipf: Zipf,
}

/// Zipf exponent of the fan-in: with 100k recipients, the busiest one takes about 12%
/// of all relations.
pub const FAN_IN_EXPONENT: f64 = 1.1;

impl Workload {
    /// A workload with `a_count` recipients and `b_count` initiators, seeded by `seed`.
    #[must_use]
    pub fn new(a_count: usize, b_count: u64, seed: u64) -> Self {
        Self::with_exponent(a_count, b_count, seed, FAN_IN_EXPONENT)
    }

    /// The same with the fan-in's Zipf exponent `s` (with `s = 1` over 100k
    /// recipients, a few hold tens of thousands of relations each: a hot-recipient
    /// load).
    #[must_use]
    pub fn with_exponent(a_count: usize, b_count: u64, seed: u64, s: f64) -> Self {
        Workload {
            rel_id: 3,
            db_a: 1,
            db_b: 2,
            b_count: b_count.max(1),
            seed,
            zipf: Zipf::new(a_count.max(1), s),
        }
    }

    /// The seed page's relation type: `Donate` (int, top 10), `Like` (int, sum),
    /// `Subscriber` (bool), from database 1 to database 2.
    #[must_use]
    pub fn seed_schema(rel_id: u32) -> RelationType {
        RelationType::new(rel_id, 1, 2)
            .prop("Donate", PropSpec::int().top(10))
            .prop("Like", PropSpec::int().sum())
            .prop("Subscriber", PropSpec::bool())
    }

    /// The id of recipient `rank` (rank 0 is the busiest).
    #[must_use]
    pub fn a_id(&self, rank: usize) -> String {
        format!("{:08x}{:016x}", self.db_a, mix(rank as u64 | (0xA << 40)))
    }

    /// The id of initiator `i`.
    #[must_use]
    pub fn b_id(&self, i: u64) -> String {
        format!("{:08x}{:016x}", self.db_b, mix(i | (0xB << 40)))
    }

    /// `n` relations, the same ones for the same seed.
    pub fn relations(&self, n: usize) -> impl Iterator<Item = GenRelation> + '_ {
        let mut rng = Rng::new(self.seed);
        (0..n).map(move |_| {
            let a = self.zipf.sample(&mut rng);
            let b = rng.below(self.b_count);
            let r = rng.next_u64();
            // Donations skew low: 1000 / (1..=1000), so ties are common at small values.
            let donate = 1000 / (1 + (r % 1000) as i64);
            GenRelation {
                a: self.a_id(a),
                b: self.b_id(b),
                donate,
                like: 1 + ((r >> 20) % 5) as i64,
                subscriber: (r >> 40) & 1 == 1,
            }
        })
    }
}
