//! What a profile carries besides its id (email, phone, custom fields, subscriptions),
//! how it is normalised once at import, and how a lookup is matched against it.

use crate::error::Error;
use crate::limits::{MAX_PROFILE_ITEMS, MAX_TEXT_LEN};

/// A subscription's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// An email subscription: its address is an email.
    Email,
    /// An SMS subscription: its address is a phone number.
    Sms,
}

/// One subscription of a profile to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The resource subscribed to.
    pub resource_id: u32,
    /// Email or SMS.
    pub channel: Channel,
    /// The email address or phone number.
    pub address: String,
}

/// A custom field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// A text value (matched as text).
    Text(String),
    /// An integer value (matched as its decimal text).
    Int(i64),
    /// A tag-type field: a set of tags (a lookup `"tag-1, tag-2"` finds the profile
    /// holding all of them).
    Tags(Vec<String>),
}

/// Everything a profile holds besides its id; [`Engine::import_profile`] replaces it
/// whole.
///
/// [`Engine::import_profile`]: crate::Engine::import_profile
///
/// # Examples
///
/// ```
/// use relcount::{Channel, FieldValue, ProfileData, Subscription};
///
/// let data = ProfileData {
///     email: Some("John@Example.com".into()),
///     phone: Some("+7 900 000-00-00".into()),
///     fields: vec![
///         ("CRM_ID".into(), FieldValue::Int(123)),
///         ("Interests".into(), FieldValue::Tags(vec!["tag-1".into(), "tag-2".into()])),
///     ],
///     subscriptions: vec![Subscription {
///         resource_id: 24,
///         channel: Channel::Email,
///         address: "john.work@example.com".into(),
///     }],
/// };
/// # let _ = data;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileData {
    /// The profile's email.
    pub email: Option<String>,
    /// The profile's phone.
    pub phone: Option<String>,
    /// Custom fields, by name.
    pub fields: Vec<(String, FieldValue)>,
    /// Subscriptions.
    pub subscriptions: Vec<Subscription>,
}

/// How a call names a profile (docs/api.md, *Matching a profile*).
///
/// A `&str` converts to [`Match::Id`], so the id is the default everywhere.
///
/// # Examples
///
/// ```
/// use relcount::Match;
///
/// let by_id: Match = "5c910f6bc484d023b1309bee".into();
/// let by_email = Match::Email { email: "john@example.com", resource_id: None };
/// let by_tags = Match::Custom { field: "Interests", value: "tag-1, tag-2" };
/// # let _ = (by_id, by_email, by_tags);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Match<'a> {
    /// The profile with this id. In a write, a missing id is created.
    Id(&'a str),
    /// The profile whose email, or one of whose email subscriptions (only those in
    /// `resource_id`, when given), has this address.
    Email {
        /// The address (compared trimmed and case-insensitively).
        email: &'a str,
        /// Narrows the match to subscriptions in this resource.
        resource_id: Option<u32>,
    },
    /// The profile whose own email (subscriptions ignored) has this address.
    EmailProfile(&'a str),
    /// The profile whose phone, or one of whose SMS subscriptions (only those in
    /// `resource_id`, when given), has this number.
    Phone {
        /// The number (compared by its digits).
        phone: &'a str,
        /// Narrows the match to subscriptions in this resource.
        resource_id: Option<u32>,
    },
    /// The profile whose custom field `field` equals `value` as text; for a tag-type
    /// field, `"tag-1, tag-2"` finds the profile holding all the listed tags.
    Custom {
        /// The field's name.
        field: &'a str,
        /// The value, as text.
        value: &'a str,
    },
}

impl<'a> From<&'a str> for Match<'a> {
    fn from(id: &'a str) -> Self {
        Match::Id(id)
    }
}

impl<'a> From<&'a String> for Match<'a> {
    fn from(id: &'a String) -> Self {
        Match::Id(id)
    }
}

/// An owned [`Match`]: how a profile is named, holding its strings, for hosts that
/// decode a request or a message and name the profile afterwards.
///
/// Every engine call that takes a profile takes `&OwnedMatch` as it takes a `Match`.
///
/// # Examples
///
/// ```
/// use relcount::{Match, OwnedMatch};
///
/// let who = OwnedMatch::Email { email: String::from("john@example.com"), resource_id: None };
/// assert_eq!(who.as_match(), Match::Email { email: "john@example.com", resource_id: None });
/// assert_eq!(OwnedMatch::from(who.as_match()), who);
/// let by_id: OwnedMatch = String::from("5c910f6bc484d023b1309bee").into();
/// assert_eq!(by_id.as_match(), Match::Id("5c910f6bc484d023b1309bee"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnedMatch {
    /// As [`Match::Id`].
    Id(String),
    /// As [`Match::Email`].
    Email {
        /// The address.
        email: String,
        /// Narrows the match to subscriptions in this resource.
        resource_id: Option<u32>,
    },
    /// As [`Match::EmailProfile`].
    EmailProfile(String),
    /// As [`Match::Phone`].
    Phone {
        /// The number.
        phone: String,
        /// Narrows the match to subscriptions in this resource.
        resource_id: Option<u32>,
    },
    /// As [`Match::Custom`].
    Custom {
        /// The field's name.
        field: String,
        /// The value, as text.
        value: String,
    },
}

impl OwnedMatch {
    /// Borrows it as the [`Match`] the engine's calls take.
    #[must_use]
    pub fn as_match(&self) -> Match<'_> {
        match self {
            OwnedMatch::Id(id) => Match::Id(id),
            OwnedMatch::Email { email, resource_id } => Match::Email {
                email,
                resource_id: *resource_id,
            },
            OwnedMatch::EmailProfile(email) => Match::EmailProfile(email),
            OwnedMatch::Phone { phone, resource_id } => Match::Phone {
                phone,
                resource_id: *resource_id,
            },
            OwnedMatch::Custom { field, value } => Match::Custom { field, value },
        }
    }
}

impl Match<'_> {
    /// The same naming, owning its strings.
    #[must_use]
    pub fn to_owned_match(&self) -> OwnedMatch {
        OwnedMatch::from(*self)
    }
}

impl From<Match<'_>> for OwnedMatch {
    fn from(m: Match<'_>) -> Self {
        match m {
            Match::Id(id) => OwnedMatch::Id(id.into()),
            Match::Email { email, resource_id } => OwnedMatch::Email {
                email: email.into(),
                resource_id,
            },
            Match::EmailProfile(email) => OwnedMatch::EmailProfile(email.into()),
            Match::Phone { phone, resource_id } => OwnedMatch::Phone {
                phone: phone.into(),
                resource_id,
            },
            Match::Custom { field, value } => OwnedMatch::Custom {
                field: field.into(),
                value: value.into(),
            },
        }
    }
}

impl<'a> From<&'a OwnedMatch> for Match<'a> {
    fn from(m: &'a OwnedMatch) -> Self {
        m.as_match()
    }
}

impl From<String> for OwnedMatch {
    fn from(id: String) -> Self {
        OwnedMatch::Id(id)
    }
}

impl From<&str> for OwnedMatch {
    fn from(id: &str) -> Self {
        OwnedMatch::Id(id.into())
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidProfileData { reason }
}

/// `text` for an error message: whole when short, else its start.
fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &text[..end], text.len())
}

/// Checks the stored form of a text: the limit applies to what is kept (and so to
/// what the log, a snapshot and their replay see), never to the raw input, whose
/// normalisation can lengthen it (`Ⱥ` is 2 bytes, its lowercase `ⱥ` 3).
fn check_len(what: &str, stored: &str) -> Result<(), Error> {
    if stored.len() > MAX_TEXT_LEN {
        return Err(invalid(format!(
            "{what} must be at most {MAX_TEXT_LEN} bytes once normalised, got {} bytes: {}",
            stored.len(),
            shown(stored)
        )));
    }
    Ok(())
}

/// Trimmed and case-folded (Unicode full case folding, so the comparison is
/// case-insensitive: `ΟΔΟΣ` and `οδοσ`, `STRASSE` and `straße` are one address, which
/// lowercasing alone misses); must look like `local@domain`.
pub(crate) fn normalize_email(email: &str) -> Result<Box<str>, Error> {
    let e = caseless::default_case_fold_str(email.trim());
    check_len("an email", &e)?;
    let ok = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !e.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !ok {
        return Err(invalid(format!("{} is not an email address", shown(email))));
    }
    Ok(e.into())
}

/// `+` and the digits; spaces, `-`, `(`, `)` and `.` are ignored; 1 to 15 digits.
pub(crate) fn normalize_phone(phone: &str) -> Result<Box<str>, Error> {
    let trimmed = phone.trim();
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut out = String::with_capacity(16);
    out.push('+');
    for c in body.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => {
                return Err(invalid(format!(
                    "{} is not a phone number (digits, spaces and + - ( ) . only)",
                    shown(phone)
                )));
            }
        }
        if out.len() > 16 {
            break; // too many digits already: no need to read the rest
        }
    }
    if !(2..=16).contains(&out.len()) {
        return Err(invalid(format!(
            "{} is not a phone number (1 to 15 digits)",
            shown(phone)
        )));
    }
    Ok(out.into())
}

/// A field name or text value: trimmed, non-empty (names), bounded.
fn normalize_text(what: &str, text: &str, allow_empty: bool) -> Result<Box<str>, Error> {
    let t = text.trim();
    check_len(what, t)?;
    if t.is_empty() && !allow_empty {
        return Err(invalid(format!("{what} must not be empty")));
    }
    Ok(t.into())
}

/// The tags of a lookup value `"tag-1, tag-2"`: split on commas, trimmed, empty parts
/// dropped, sorted, deduplicated.
pub(crate) fn parse_tags(value: &str) -> Vec<Box<str>> {
    let mut tags: Vec<Box<str>> = value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Box::from)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// A custom field as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NormField {
    Scalar(Box<str>),
    /// Sorted, deduplicated.
    Tags(Vec<Box<str>>),
}

/// A profile's data, normalised once at import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Normalized {
    pub(crate) email: Option<Box<str>>,
    pub(crate) phone: Option<Box<str>>,
    /// Sorted by name, names unique.
    pub(crate) fields: Vec<(Box<str>, NormField)>,
    pub(crate) subscriptions: Vec<(u32, Channel, Box<str>)>,
}

/// One entry of the secondary indexes: what a lookup asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    /// Profile email or email subscription address.
    Email(u32, Box<str>),
    /// Profile phone or SMS subscription number.
    Phone(u32, Box<str>),
    /// A scalar field's text.
    Field(u32, Box<str>, Box<str>),
    /// One tag of a tag-type field.
    Tag(u32, Box<str>, Box<str>),
}

impl Normalized {
    pub(crate) fn new(data: &ProfileData) -> Result<Self, Error> {
        if data.fields.len() > MAX_PROFILE_ITEMS || data.subscriptions.len() > MAX_PROFILE_ITEMS {
            return Err(invalid(format!(
                "at most {MAX_PROFILE_ITEMS} fields and {MAX_PROFILE_ITEMS} subscriptions"
            )));
        }
        let email = data.email.as_deref().map(normalize_email).transpose()?;
        let phone = data.phone.as_deref().map(normalize_phone).transpose()?;
        let mut fields = Vec::with_capacity(data.fields.len());
        for (name, value) in &data.fields {
            let name = normalize_text("a field name", name, false)?;
            let value = match value {
                FieldValue::Text(t) => NormField::Scalar(normalize_text("a field value", t, true)?),
                FieldValue::Int(i) => NormField::Scalar(i.to_string().into()),
                FieldValue::Tags(tags) => {
                    if tags.len() > MAX_PROFILE_ITEMS {
                        return Err(invalid(format!(
                            "field {name} has more than {MAX_PROFILE_ITEMS} tags"
                        )));
                    }
                    let mut norm = Vec::with_capacity(tags.len());
                    for tag in tags {
                        let t = normalize_text("a tag", tag, false)?;
                        if t.contains(',') {
                            return Err(invalid(format!(
                                "tag {t:?} of field {name} contains a comma"
                            )));
                        }
                        norm.push(t);
                    }
                    norm.sort();
                    norm.dedup();
                    NormField::Tags(norm)
                }
            };
            fields.push((name, value));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = fields.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(invalid(format!("field {} is given twice", w[0].0)));
        }
        let mut subscriptions = Vec::with_capacity(data.subscriptions.len());
        for s in &data.subscriptions {
            let address = match s.channel {
                Channel::Email => normalize_email(&s.address)?,
                Channel::Sms => normalize_phone(&s.address)?,
            };
            subscriptions.push((s.resource_id, s.channel, address));
        }
        Ok(Normalized {
            email,
            phone,
            fields,
            subscriptions,
        })
    }

    /// The data back in input form (re-normalising it gives `self` again), for
    /// snapshots and the write log.
    pub(crate) fn to_data(&self) -> ProfileData {
        ProfileData {
            email: self.email.as_deref().map(str::to_owned),
            phone: self.phone.as_deref().map(str::to_owned),
            fields: self
                .fields
                .iter()
                .map(|(name, v)| {
                    let value = match v {
                        NormField::Scalar(t) => FieldValue::Text(t.to_string()),
                        NormField::Tags(tags) => {
                            FieldValue::Tags(tags.iter().map(|t| t.to_string()).collect())
                        }
                    };
                    (name.to_string(), value)
                })
                .collect(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(r, c, a)| Subscription {
                    resource_id: *r,
                    channel: *c,
                    address: a.to_string(),
                })
                .collect(),
        }
    }

    /// Every index entry this profile belongs under, deduplicated.
    pub(crate) fn keys(&self, db: u32) -> Vec<IndexKey> {
        let mut keys = Vec::new();
        keys.extend(self.email.iter().map(|e| IndexKey::Email(db, e.clone())));
        keys.extend(self.phone.iter().map(|p| IndexKey::Phone(db, p.clone())));
        for (_, channel, address) in &self.subscriptions {
            keys.push(match channel {
                Channel::Email => IndexKey::Email(db, address.clone()),
                Channel::Sms => IndexKey::Phone(db, address.clone()),
            });
        }
        for (name, value) in &self.fields {
            match value {
                NormField::Scalar(v) => keys.push(IndexKey::Field(db, name.clone(), v.clone())),
                NormField::Tags(tags) => keys.extend(
                    tags.iter()
                        .map(|t| IndexKey::Tag(db, name.clone(), t.clone())),
                ),
            }
        }
        let mut seen = hashbrown::HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
        keys
    }

    fn field(&self, name: &str) -> Option<&NormField> {
        self.fields
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// Whether this profile answers `query`.
    pub(crate) fn matches(&self, query: &Query) -> bool {
        match query {
            Query::Email {
                email,
                resource_id,
                subscriptions,
            } => {
                let own = resource_id.is_none() && self.email.as_deref() == Some(&**email);
                own || (*subscriptions
                    && self.subscriptions.iter().any(|(r, c, a)| {
                        *c == Channel::Email
                            && **a == **email
                            && resource_id.is_none_or(|want| *r == want)
                    }))
            }
            Query::Phone { phone, resource_id } => {
                let own = resource_id.is_none() && self.phone.as_deref() == Some(&**phone);
                own || self.subscriptions.iter().any(|(r, c, a)| {
                    *c == Channel::Sms
                        && **a == **phone
                        && resource_id.is_none_or(|want| *r == want)
                })
            }
            Query::Custom { field, value, tags } => match self.field(field) {
                Some(NormField::Scalar(v)) => v == value,
                Some(NormField::Tags(have)) => {
                    !tags.is_empty() && tags.iter().all(|t| have.binary_search(t).is_ok())
                }
                None => false,
            },
        }
    }
}

/// A lookup other than by id, normalised once.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    Email {
        email: Box<str>,
        resource_id: Option<u32>,
        /// `email` mode looks at subscriptions too; `email_profile` does not.
        subscriptions: bool,
    },
    Phone {
        phone: Box<str>,
        resource_id: Option<u32>,
    },
    Custom {
        field: Box<str>,
        value: Box<str>,
        tags: Vec<Box<str>>,
    },
}

impl Query {
    /// The normalised query of a non-id match; `None` for [`Match::Id`].
    pub(crate) fn of(m: &Match<'_>) -> Result<Option<Query>, Error> {
        let q = match *m {
            Match::Id(_) => return Ok(None),
            Match::Email { email, resource_id } => Query::Email {
                email: normalize_email(email)?,
                resource_id,
                subscriptions: true,
            },
            Match::EmailProfile(email) => Query::Email {
                email: normalize_email(email)?,
                resource_id: None,
                subscriptions: false,
            },
            Match::Phone { phone, resource_id } => Query::Phone {
                phone: normalize_phone(phone)?,
                resource_id,
            },
            // No length limit on the value: a scalar past it matches no stored one,
            // and a tag list is matched tag by tag.
            Match::Custom { field, value } => Query::Custom {
                field: normalize_text("a field name", field, false)?,
                value: value.trim().into(),
                tags: parse_tags(value),
            },
        };
        Ok(Some(q))
    }

    /// The index entries whose profiles may answer the query (each candidate is then
    /// checked with [`Normalized::matches`]).
    pub(crate) fn keys(&self, db: u32) -> Vec<IndexKey> {
        match self {
            Query::Email { email, .. } => vec![IndexKey::Email(db, email.clone())],
            Query::Phone { phone, .. } => vec![IndexKey::Phone(db, phone.clone())],
            Query::Custom { field, value, tags } => {
                let mut keys = vec![IndexKey::Field(db, field.clone(), value.clone())];
                keys.extend(
                    tags.iter()
                        .map(|t| IndexKey::Tag(db, field.clone(), t.clone())),
                );
                keys
            }
        }
    }

    /// Describes the query for an error text.
    pub(crate) fn describe(&self) -> String {
        match self {
            Query::Email {
                email,
                resource_id,
                subscriptions,
            } => {
                let mode = if *subscriptions {
                    "email"
                } else {
                    "profile email"
                };
                match resource_id {
                    Some(r) => format!("{mode} {email:?} in resource {r}"),
                    None => format!("{mode} {email:?}"),
                }
            }
            Query::Phone { phone, resource_id } => match resource_id {
                Some(r) => format!("phone {phone:?} in resource {r}"),
                None => format!("phone {phone:?}"),
            },
            Query::Custom { field, value, .. } => format!("field {field} = {value:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_and_validate() {
        assert_eq!(
            &*normalize_email("  John@Example.COM ").unwrap(),
            "john@example.com"
        );
        // Case-insensitive, not merely lowercased (final sigma, sharp s).
        for (a, b) in [("ΟΔΟΣ@x.gr", "οδοσ@x.gr"), ("Straße@x.de", "STRASSE@X.DE")] {
            assert_eq!(
                normalize_email(a).unwrap(),
                normalize_email(b).unwrap(),
                "{a}"
            );
        }
        for bad in ["", "john", "@x", "john@", "a b@c", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_normalise_by_digits() {
        for p in ["+7 900 000-00-00", "79000000000", " +7(900)000.00.00 "] {
            assert_eq!(&*normalize_phone(p).unwrap(), "+79000000000");
        }
        for bad in ["", "+", "12a", "1234567890123456"] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_parse_trimmed_sorted_unique() {
        let t = parse_tags(" tag-2, tag-1 ,, tag-2");
        assert_eq!(t, vec![Box::from("tag-1"), Box::from("tag-2")]);
    }
}
