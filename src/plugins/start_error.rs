//! Why a plugin instance cannot start: the config Kong sent is refused. Every message names
//! the field, because it ends up in Kong's error log (`dispatch` wraps it as
//! `<plugin>: invalid config: <message>`) and an operator has to find the line of decK YAML.

use super::schema::SchemaError;

/// A config refused at StartInstance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Refused by the field table ([`SchemaError`]: every bad field, each named).
    #[error(transparent)]
    Schema(#[from] SchemaError),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            StartError::field("key_names", "\"X-User-Id\" is reserved").to_string(),
            "field 'key_names': \"X-User-Id\" is reserved"
        );
        let problem = super::super::schema::FieldProblem { field: "ttl", problem: "expected an integer".into() };
        let schema: StartError = SchemaError::Fields(vec![problem.clone(), problem]).into();
        assert_eq!(schema.to_string(), "field 'ttl': expected an integer; field 'ttl': expected an integer");
    }
}
