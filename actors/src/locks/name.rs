//! Lock names and the keys they are stored under.

use super::error::NameError;

/// The longest lock name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Namespaces with this prefix belong to Colony itself.
pub const RESERVED_PREFIX: &str = "colony.";

/// Checks a lock name or namespace.
///
/// # Errors
/// [`NameError::Empty`] or [`NameError::TooLong`].
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    Ok(())
}

/// Checks an application's entity-lock namespace.
///
/// # Errors
/// As [`validate`], plus [`NameError::Reserved`].
pub fn validate_namespace(namespace: &str) -> Result<(), NameError> {
    validate(namespace)?;
    if namespace.starts_with(RESERVED_PREFIX) {
        return Err(NameError::Reserved(namespace.to_owned()));
    }
    Ok(())
}

/// The stored key of a named lock. Named and entity locks live in separate key spaces, so the
/// name `repo/5` never collides with key 5 of namespace `repo`.
pub fn named_key(name: &str) -> String {
    format!("n:{name}")
}

/// The stored key of an entity lock. The namespace's length goes first, so that no two
/// (namespace, key) pairs share a key: `("a/b", "c")` and `("a", "b/c")` are different locks.
pub fn entity_key(namespace: &str, key: &str) -> String {
    format!("e:{}:{namespace}/{key}", namespace.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_length_and_namespaces_for_the_reserved_prefix() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert!(validate(&"x".repeat(255)).is_ok());
        assert_eq!(
            validate(&"x".repeat(256)),
            Err(NameError::TooLong { len: 256 })
        );
        assert!(matches!(
            validate_namespace("colony.internal"),
            Err(NameError::Reserved(_))
        ));
        assert!(validate_namespace("repository").is_ok());
        assert_ne!(named_key("repo/5"), entity_key("repo", "5"));
        assert_ne!(entity_key("a/b", "c"), entity_key("a", "b/c"));
    }
}
