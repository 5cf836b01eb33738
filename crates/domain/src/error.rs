//! The one error of the domain: a value from outside that is not acceptable.

/// A value that failed validation: which field or parameter, and what is wrong with it.
///
/// `field` is the name the outside world used (a query parameter or a wire field name),
/// so a client can be told exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The field or parameter name, as the caller spelled it.
    pub field: String,
    /// What is wrong, in words a client can act on.
    pub reason: String,
}

impl ValidationError {
    /// Build an error for `field` with a human-readable `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error reported under another field name (e.g. a wire name).
    #[must_use]
    pub fn for_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}
