//! Why a plugin instance cannot start: the config Kong sent is refused. Every message names
//! the field, because it ends up in Kong's error log (`dispatch` wraps it as
//! `<plugin>: invalid config: <message>`) and an operator has to find the line of decK YAML.

/// A config refused at StartInstance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Refused by a check shared with other modules (the schema validation, the reserved
    /// header list), which words its own message: `field '<name>': …`, one per problem.
    #[error("{0}")]
    Checked(String),
    /// The validated config does not fit the plugin's struct (a field table and struct out
    /// of step: a bug of ours, not the operator's).
    #[error("config: {0}")]
    Shape(String),
    /// One field is well-formed but unusable here.
    #[error("field '{field}': {problem}")]
    Field { field: &'static str, problem: String },
}

impl StartError {
    pub fn field(field: &'static str, problem: impl Into<String>) -> StartError {
        StartError::Field { field, problem: problem.into() }
    }
}

impl From<String> for StartError {
    /// A message from a shared check (it already names the field).
    fn from(message: String) -> StartError {
        StartError::Checked(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            StartError::field("key_names", "\"X-User-Id\" is reserved").to_string(),
            "field 'key_names': \"X-User-Id\" is reserved"
        );
        let checked: StartError = "field 'ttl': expected an integer, got string".to_string().into();
        assert_eq!(checked.to_string(), "field 'ttl': expected an integer, got string");
    }
}
