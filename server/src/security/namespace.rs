//! Namespaces: separate lock spaces on one server, applied by the server to the plain names
//! clients send. The default namespace is the names as they are (what every server before
//! namespaces stored); namespace `billing` keeps `jobs/1` as `\u{1}billing\u{1}jobs/1`. Names
//! sent by clients cannot hold control characters, so no client name can reach into another
//! namespace, and every namespaced name sorts before every plain one.

/// The name of the namespace the plain secret and unqualified names live in.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What starts and ends a namespace's prefix in stored names and lease ids.
const MARK: char = '\u{1}';

/// A name that sorts after every namespaced name and before every plain one: where a listing of
/// the whole default namespace starts.
const AFTER_NAMESPACED: &str = "\u{1}\u{10FFFF}";

/// A lock space.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    /// Empty for the default namespace, else `\u{1}name\u{1}`.
    prefix: String,
}

/// A namespace name that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("namespace `{0}` must be 1 to 64 of the characters A-Z a-z 0-9 _ . -")]
pub struct NamespaceError(pub String);

impl Namespace {
    /// The namespace called `name` (`default` is the default namespace).
    pub fn new(name: &str) -> Result<Self, NamespaceError> {
        let valid = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        match name {
            _ if !valid => Err(NamespaceError(name.to_string())),
            DEFAULT_NAMESPACE => Ok(Namespace::default()),
            _ => Ok(Namespace { prefix: format!("{MARK}{name}{MARK}") }),
        }
    }

    /// Its name, as keys files and admins write it.
    pub fn name(&self) -> &str {
        if self.prefix.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            &self.prefix[1..self.prefix.len() - 1]
        }
    }

    /// The stored form of a client's name (a lock name or a lease id).
    pub fn qualify(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            let mut qualified = String::with_capacity(self.prefix.len() + name.len());
            qualified.push_str(&self.prefix);
            qualified.push_str(name);
            qualified
        }
    }

    /// [`Namespace::qualify`], reusing the name's allocation in the default namespace.
    pub fn qualify_owned(&self, name: String) -> String {
        if self.prefix.is_empty() {
            name
        } else {
            self.qualify(&name)
        }
    }

    /// The client's form of a stored name; `None` when it is another namespace's.
    pub fn unqualify(&self, stored: &str) -> Option<String> {
        if self.prefix.is_empty() {
            (!stored.starts_with(MARK)).then(|| stored.to_string())
        } else {
            stored.strip_prefix(self.prefix.as_str()).map(str::to_string)
        }
    }

    /// The client's form of a stored name of this namespace; a name of another (which only an
    /// admin's answers can hold) as stored.
    pub fn show(&self, stored: &str) -> String {
        self.unqualify(stored).unwrap_or_else(|| stored.to_string())
    }

    /// Where a listing of this namespace's names starting with `prefix` starts: the stored
    /// prefix, and the stored name to list after (never one of another namespace).
    pub fn list_range(&self, prefix: &str, after: Option<&str>) -> (String, Option<String>) {
        let after = match after {
            Some(after) => Some(self.qualify(after)),
            None if self.prefix.is_empty() && prefix.is_empty() => Some(AFTER_NAMESPACED.to_string()),
            None => None,
        };
        (self.qualify(prefix), after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_apart() {
        let billing = Namespace::new("billing").unwrap();
        let default = Namespace::new("default").unwrap();
        let stored = billing.qualify("jobs/1");
        assert_ne!(stored, default.qualify("jobs/1"));
        assert_eq!(billing.unqualify(&stored).as_deref(), Some("jobs/1"));
        assert_eq!(default.unqualify(&stored), None);
        assert_eq!(Namespace::new("search").unwrap().unqualify(&stored), None);
        assert_eq!(default.unqualify("jobs/1").as_deref(), Some("jobs/1"));
        assert_eq!(billing.name(), "billing");
        assert_eq!(default.name(), "default");
        assert!(Namespace::new("a:b").is_err() && Namespace::new("").is_err());
    }

    #[test]
    fn the_default_listing_starts_after_every_namespaced_name() {
        let (prefix, after) = Namespace::default().list_range("", None);
        let after = after.unwrap();
        assert_eq!(prefix, "");
        assert!(Namespace::new("zzzz").unwrap().qualify("\u{10FFFF}") < after);
        assert!(after.as_str() < " ");
    }
}
