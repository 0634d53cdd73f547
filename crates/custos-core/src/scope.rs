//! The scope grammar: grants `service:operation[:resource-glob]`.
//!
//! A grant with no resource part covers every resource of its service; `*` as the operation
//! covers every operation. In a resource glob `*` matches any run of characters (including
//! none, and including `/`). Everything after the second `:` is the resource glob, so resource
//! names may themselves contain colons (ARNs, URNs).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_RESOURCE_LEN: usize = 512;
pub const MAX_GRANTS: usize = 256;

/// Why a grant's text form was refused. Messages are specific enough to fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("grant is empty")]
    Empty,
    #[error("grant {0:?} needs at least service:operation")]
    MissingOperation(String),
    #[error(
        "service {0:?} must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    )]
    InvalidService(String),
    #[error("operation {0:?} must be '*' or 1-64 characters of a-z, A-Z, 0-9, '.', '_', '-', '/'")]
    InvalidOperation(String),
    #[error("resource glob {0:?} must be 1-512 printable characters without spaces")]
    InvalidResource(String),
    #[error("a scope holds at most {MAX_GRANTS} grants")]
    TooManyGrants,
}

/// One permission: a service, an operation (or every operation) and an optional resource glob.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    service: String,
    operation: Operation,
    resource: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Operation {
    Any,
    Named(String),
}

/// One concrete thing an identity wants to do: an operation on a service, maybe on a resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Action {
    pub service: String,
    pub operation: String,
    pub resource: Option<String>,
}

fn is_valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn is_valid_operation(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

fn is_valid_resource(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_RESOURCE_LEN && s.chars().all(|c| c.is_ascii_graphic())
}

impl Grant {
    /// Builds a grant from parts. A resource glob of `*` means every resource, the same as none.
    pub fn new(service: &str, operation: &str, resource: Option<&str>) -> Result<Self, ScopeError> {
        if !is_valid_service(service) {
            return Err(ScopeError::InvalidService(service.to_owned()));
        }
        let operation = if operation == "*" {
            Operation::Any
        } else if is_valid_operation(operation) {
            Operation::Named(operation.to_owned())
        } else {
            return Err(ScopeError::InvalidOperation(operation.to_owned()));
        };
        let resource = match resource {
            None => None,
            Some(r) if !is_valid_resource(r) => {
                return Err(ScopeError::InvalidResource(r.to_owned()));
            }
            Some(r) if r.bytes().all(|b| b == b'*') => None,
            Some(r) => Some(r.to_owned()),
        };
        Ok(Self {
            service: service.to_owned(),
            operation,
            resource,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        if text.is_empty() {
            return Err(ScopeError::Empty);
        }
        let mut parts = text.splitn(3, ':');
        let service = parts.next().unwrap_or_default();
        let operation = parts
            .next()
            .ok_or_else(|| ScopeError::MissingOperation(text.to_owned()))?;
        let resource = parts.next();
        Self::new(service, operation, resource)
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The operation, `*` for every operation.
    pub fn operation(&self) -> &str {
        match &self.operation {
            Operation::Any => "*",
            Operation::Named(op) => op,
        }
    }

    /// The resource glob; `None` means every resource.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// Does this grant allow the action?
    pub fn covers(&self, action: &Action) -> bool {
        if self.service != action.service {
            return false;
        }
        if let Operation::Named(op) = &self.operation
            && *op != action.operation
        {
            return false;
        }
        match (&self.resource, &action.resource) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(glob), Some(resource)) => glob_matches(glob.as_bytes(), resource.as_bytes()),
        }
    }

    /// Is everything this grant allows also allowed by `other`? Sound: a `true` answer is a
    /// proof, since `other`'s glob matches this glob with its `*`s read as arbitrary text.
    pub fn is_subset_of(&self, other: &Grant) -> bool {
        if self.service != other.service {
            return false;
        }
        let operation_ok = match (&self.operation, &other.operation) {
            (_, Operation::Any) => true,
            (Operation::Any, Operation::Named(_)) => false,
            (Operation::Named(a), Operation::Named(b)) => a == b,
        };
        operation_ok
            && match (&self.resource, &other.resource) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(mine), Some(theirs)) => glob_contains(theirs.as_bytes(), mine.as_bytes()),
            }
    }
}

/// Classic wildcard match with backtracking on the last `*`: linear in practice, never
/// exponential, because only one star position is remembered at a time.
pub(crate) fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((star_g, star_t)) = star {
            g = star_g + 1;
            t = star_t + 1;
            star = Some((star_g, star_t + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

/// Does `outer` match every string that `inner` matches? `outer` is matched against the text
/// of `inner` where `inner`'s `*` is a symbol only an `outer` `*` may absorb.
fn glob_contains(outer: &[u8], inner: &[u8]) -> bool {
    // With '*' in `inner` treated as an ordinary symbol that a literal never equals, the
    // wildcard algorithm above decides it: a literal '*' in `outer` is a star anyway.
    glob_matches(outer, inner)
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.operation())?;
        if let Some(resource) = &self.resource {
            write!(f, ":{resource}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Grant {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Grant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Grants are accepted in text form (`"crm:read:customers/*"`) or as an object
/// (`{"service": "crm", "operation": "read", "resource": "customers/*"}`); they are always
/// written in text form.
impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Object(GrantObject),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct GrantObject {
            service: String,
            operation: String,
            #[serde(default)]
            resource: Option<String>,
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => Grant::parse(&text),
            Form::Object(o) => Grant::new(&o.service, &o.operation, o.resource.as_deref()),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// A set of grants. Kept sorted and without duplicates so that equal scopes compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Scope(Vec<Grant>);

impl Scope {
    pub fn new(grants: impl IntoIterator<Item = Grant>) -> Result<Self, ScopeError> {
        let mut grants: Vec<Grant> = grants.into_iter().collect();
        grants.sort();
        grants.dedup();
        if grants.len() > MAX_GRANTS {
            return Err(ScopeError::TooManyGrants);
        }
        Ok(Self(grants))
    }

    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Self, ScopeError> {
        Self::new(
            texts
                .iter()
                .map(|t| Grant::parse(t.as_ref()))
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    pub fn grants(&self) -> &[Grant] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn covers(&self, action: &Action) -> bool {
        self.0.iter().any(|g| g.covers(action))
    }

    /// Every grant here lies within some grant of `other`.
    pub fn is_subset_of(&self, other: &Scope) -> bool {
        self.excess_over(other).next().is_none()
    }

    /// The grants here that `ceiling` does not contain: what a human would have to approve.
    pub fn excess_over<'a>(&'a self, ceiling: &'a Scope) -> impl Iterator<Item = &'a Grant> + 'a {
        self.0
            .iter()
            .filter(move |g| !ceiling.0.iter().any(|c| g.is_subset_of(c)))
    }

    /// The services this scope reaches and `before` did not reach at all, each once: what a
    /// change of scope opens that is new, not merely wider.
    pub fn services_added_since(&self, before: &Scope) -> Vec<&str> {
        let mut services: Vec<&str> = self
            .0
            .iter()
            .map(Grant::service)
            .filter(|service| !before.0.iter().any(|g| g.service() == *service))
            .collect();
        services.dedup();
        services
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let grants = Vec::<Grant>::deserialize(deserializer)?;
        Scope::new(grants).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(s: &str, o: &str, r: Option<&str>) -> Action {
        Action {
            service: s.into(),
            operation: o.into(),
            resource: r.map(Into::into),
        }
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Grant::parse("mail:send").unwrap().to_string(), "mail:send");
        assert_eq!(
            Grant::parse("crm:read:customers/*").unwrap().resource(),
            Some("customers/*")
        );
        assert_eq!(Grant::parse("crm:*:*").unwrap().to_string(), "crm:*");
        let arn = Grant::parse("s3:get:arn:aws:s3:::bucket/*").unwrap();
        assert_eq!(arn.resource(), Some("arn:aws:s3:::bucket/*"));
    }

    #[test]
    fn refuses_bad_grants_precisely() {
        assert_eq!(Grant::parse(""), Err(ScopeError::Empty));
        assert_eq!(
            Grant::parse("crm"),
            Err(ScopeError::MissingOperation("crm".into()))
        );
        assert_eq!(
            Grant::parse("CRM:read"),
            Err(ScopeError::InvalidService("CRM".into()))
        );
        assert_eq!(
            Grant::parse("crm:"),
            Err(ScopeError::InvalidOperation("".into()))
        );
        assert_eq!(
            Grant::parse("crm:read:"),
            Err(ScopeError::InvalidResource("".into()))
        );
        assert_eq!(
            Grant::parse("crm:read:a b"),
            Err(ScopeError::InvalidResource("a b".into()))
        );
        assert!(Grant::parse("*:read").is_err());
    }

    #[test]
    fn covers_follows_the_grammar() {
        let g = Grant::parse("crm:read:customers/*").unwrap();
        assert!(g.covers(&action("crm", "read", Some("customers/42"))));
        assert!(g.covers(&action("crm", "read", Some("customers/"))));
        assert!(!g.covers(&action("crm", "read", Some("orders/1"))));
        assert!(!g.covers(&action("crm", "write", Some("customers/42"))));
        assert!(!g.covers(&action("crm", "read", None)));
        assert!(
            Grant::parse("mail:*")
                .unwrap()
                .covers(&action("mail", "send", None))
        );
    }

    #[test]
    fn subset_examples() {
        let p = |s: &str| Grant::parse(s).unwrap();
        assert!(p("crm:read:customers/1").is_subset_of(&p("crm:read:customers/*")));
        assert!(p("crm:read:customers/*").is_subset_of(&p("crm:read")));
        assert!(p("crm:read:a*").is_subset_of(&p("crm:read:*a*")));
        assert!(!p("crm:read").is_subset_of(&p("crm:read:customers/*")));
        assert!(!p("crm:*").is_subset_of(&p("crm:read")));
        assert!(!p("crm:read:*a*").is_subset_of(&p("crm:read:a*")));
    }

    #[test]
    fn json_forms() {
        let s: Scope = serde_json::from_str(
            r#"["mail:send", {"service":"crm","operation":"read","resource":"c/*"}, "mail:send"]"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["crm:read:c/*","mail:send"]"#
        );
        assert!(serde_json::from_str::<Scope>(r#"["nope"]"#).is_err());
    }
}
