//! One description of each plugin's config fields, from which both the Kong schema in
//! `--dump` and the validation at StartInstance are derived, so the two cannot drift.
//!
//! A plugin declares `const FIELDS: &[Field]`; [`validate`] turns Kong's config JSON into a
//! JSON object holding exactly those fields (defaults filled, Kong's own keys such as
//! `__seq__` or `route_id` dropped) or a message naming every bad field; the plugin then
//! deserialises its typed config from that object. A struct field missing from `FIELDS`
//! makes that deserialisation fail in the plugin's own all-defaults unit test.

use serde_json::{json, Map, Value};

/// Longest string value unless a field says otherwise: far above any real URL, issuer, claim
/// or group name, far below what could hurt.
pub const DEFAULT_LEN_MAX: usize = 1024;
/// Longest header or cookie name.
pub const TOKEN_LEN_MAX: usize = 128;
/// Most elements of an array unless a field says otherwise.
pub const DEFAULT_ITEMS_MAX: usize = 32;

/// Kong's `not_match` (a Lua pattern): no control character. Kong then refuses such a value
/// at the Admin API / decK before it ever reaches us; we check again at StartInstance.
const NO_CONTROL_CHARS: &str = "%c";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Integer,
    Boolean,
    /// An array of strings.
    StringArray,
}

#[derive(Debug, Clone, Copy)]
pub enum Default {
    None,
    Str(&'static str),
    Int(i64),
    Bool(bool),
    Strs(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Type,
    pub required: bool,
    pub default: Default,
    /// Allowed values (of the string, or of each element of an array).
    pub one_of: &'static [&'static str],
    /// Inclusive integer bounds.
    pub between: Option<(i64, i64)>,
    /// Minimum string length / array length.
    pub len_min: Option<usize>,
    /// Maximum length in characters (as Kong's `len_max` counts) of the string, or of each
    /// element of an array. Every string
    /// has one (a config is stored by Kong, copied into every worker and parsed by us at each
    /// StartInstance: a multi-megabyte value is an attack or a mistake, never a setting).
    pub len_max: usize,
    /// Maximum number of elements of an array.
    pub items_max: usize,
    /// Must be an HTTP token (a header or cookie name, RFC 9110 §5.6.2).
    pub token: bool,
    /// Must be an absolute http(s) URL.
    pub url: bool,
    /// Must start with `/`.
    pub path: bool,
    /// May hold a Kong vault reference (`{vault://…}`), resolved by Kong before we see it.
    pub referenceable: bool,
    /// Stored encrypted by Kong (keyring) when enabled.
    pub encrypted: bool,
    pub description: &'static str,
}

impl Field {
    const fn new(name: &'static str, ty: Type) -> Field {
        Field {
            name,
            ty,
            required: false,
            default: Default::None,
            one_of: &[],
            between: None,
            len_min: None,
            len_max: DEFAULT_LEN_MAX,
            items_max: DEFAULT_ITEMS_MAX,
            token: false,
            url: false,
            path: false,
            referenceable: false,
            encrypted: false,
            description: "",
        }
    }
    pub const fn string(name: &'static str) -> Field {
        Field::new(name, Type::String)
    }
    pub const fn integer(name: &'static str) -> Field {
        Field::new(name, Type::Integer)
    }
    pub const fn boolean(name: &'static str) -> Field {
        Field::new(name, Type::Boolean)
    }
    pub const fn strings(name: &'static str) -> Field {
        Field::new(name, Type::StringArray)
    }
    pub const fn required(mut self) -> Field {
        self.required = true;
        self
    }
    pub const fn default(mut self, d: Default) -> Field {
        self.default = d;
        self
    }
    pub const fn one_of(mut self, values: &'static [&'static str]) -> Field {
        self.one_of = values;
        self
    }
    pub const fn between(mut self, lo: i64, hi: i64) -> Field {
        self.between = Some((lo, hi));
        self
    }
    pub const fn len_min(mut self, n: usize) -> Field {
        self.len_min = Some(n);
        self
    }
    pub const fn len_max(mut self, n: usize) -> Field {
        self.len_max = n;
        self
    }
    pub const fn items_max(mut self, n: usize) -> Field {
        self.items_max = n;
        self
    }
    /// A header or cookie name (of the string, or of each element).
    pub const fn token(mut self) -> Field {
        self.token = true;
        self.len_max = TOKEN_LEN_MAX;
        self
    }
    pub const fn url(mut self) -> Field {
        self.url = true;
        self
    }
    pub const fn path(mut self) -> Field {
        self.path = true;
        self
    }
    pub const fn secret(mut self) -> Field {
        self.referenceable = true;
        self.encrypted = true;
        self
    }
    pub const fn describe(mut self, text: &'static str) -> Field {
        self.description = text;
        self
    }

    fn default_json(&self) -> Option<Value> {
        match self.default {
            Default::None => None,
            Default::Str(s) => Some(json!(s)),
            Default::Int(i) => Some(json!(i)),
            Default::Bool(b) => Some(json!(b)),
            Default::Strs(a) => Some(json!(a)),
        }
    }

    /// This field as a Kong schema field definition (docs/protocol.md#schema).
    fn kong_definition(&self) -> Value {
        let mut def = Map::new();
        let one_of = (!self.one_of.is_empty()).then(|| json!(self.one_of));
        match self.ty {
            Type::String => {
                def.insert("type".into(), json!("string"));
                if let Some(o) = one_of {
                    def.insert("one_of".into(), o);
                }
                def.insert("len_max".into(), json!(self.len_max));
                def.insert("not_match".into(), json!(NO_CONTROL_CHARS));
            }
            Type::Integer => {
                def.insert("type".into(), json!("integer"));
            }
            Type::Boolean => {
                def.insert("type".into(), json!("boolean"));
            }
            Type::StringArray => {
                def.insert("type".into(), json!("array"));
                let mut elements = json!({"type": "string", "len_max": self.len_max, "not_match": NO_CONTROL_CHARS});
                if let Some(o) = one_of {
                    elements["one_of"] = o;
                }
                def.insert("elements".into(), elements);
                def.insert("len_max".into(), json!(self.items_max));
            }
        }
        def.insert("required".into(), json!(self.required));
        if let Some(d) = self.default_json() {
            def.insert("default".into(), d);
        }
        if let Some((lo, hi)) = self.between {
            def.insert("between".into(), json!([lo, hi]));
        }
        if let Some(n) = self.len_min {
            def.insert("len_min".into(), json!(n));
        }
        if self.url {
            // A Lua pattern (Kong's `match`), which this regex-looking text also is.
            def.insert("match".into(), json!("^https?://"));
        }
        if self.path {
            def.insert("starts_with".into(), json!("/"));
        }
        if self.referenceable {
            def.insert("referenceable".into(), json!(true));
        }
        if self.encrypted {
            def.insert("encrypted".into(), json!(true));
        }
        if !self.description.is_empty() {
            def.insert("description".into(), json!(self.description));
        }
        json!({ self.name: def })
    }

    /// Checks one present, non-null value; returns the (possibly normalised) value.
    fn check(&self, value: Value) -> Result<Value, String> {
        match (self.ty, value) {
            (Type::String, Value::String(s)) => {
                self.check_string(&s)?;
                Ok(Value::String(s))
            }
            (Type::Integer, Value::Number(n)) => {
                let i = n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                    .ok_or_else(|| format!("expected an integer, got {n}"))?;
                if let Some((lo, hi)) = self.between {
                    if i < lo || i > hi {
                        return Err(format!("value should be between {lo} and {hi}, got {i}"));
                    }
                }
                Ok(json!(i))
            }
            (Type::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
            // An empty Lua table may reach us as `{}` (docs/protocol.md#encoding).
            (Type::StringArray, Value::Object(o)) if o.is_empty() => self.check(Value::Array(Vec::new())),
            (Type::StringArray, Value::Array(items)) => {
                if let Some(n) = self.len_min {
                    if items.len() < n {
                        return Err(format!("needs at least {n} element(s)"));
                    }
                }
                if items.len() > self.items_max {
                    return Err(format!("has {} elements, at most {} allowed", items.len(), self.items_max));
                }
                for (i, item) in items.iter().enumerate() {
                    let s = item.as_str().ok_or_else(|| format!("element {} is not a string", i + 1))?;
                    if !self.one_of.is_empty() && !self.one_of.contains(&s) {
                        return Err(format!(
                            "element {} must be one of {}, got {:?}",
                            i + 1,
                            self.one_of.join(", "),
                            shown(s)
                        ));
                    }
                    if s.is_empty() {
                        return Err(format!("element {} is empty", i + 1));
                    }
                    self.check_text(s).map_err(|why| format!("element {} {why}", i + 1))?;
                }
                Ok(Value::Array(items))
            }
            (ty, other) => Err(format!("expected {}, got {}", type_label(ty), json_type(&other))),
        }
    }

    /// The checks every string (or array element) gets: length, control characters, token.
    /// The message never repeats a long or secret value.
    fn check_text(&self, s: &str) -> Result<(), String> {
        // Bytes first: a multi-megabyte value is refused without walking its characters.
        if s.len() > self.len_max && s.chars().nth(self.len_max).is_some() {
            return Err(format!("is longer than {} characters", self.len_max));
        }
        if s.chars().any(char::is_control) {
            return Err("contains a control character (CR, LF, NUL, …)".into());
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.token && !s.chars().all(token) {
            return Err(format!("{:?} is not a valid header or cookie name", shown(s)));
        }
        Ok(())
    }

    fn check_string(&self, s: &str) -> Result<(), String> {
        self.check_text(s)?;
        if !self.one_of.is_empty() && !self.one_of.contains(&s) {
            return Err(format!("must be one of {}, got {:?}", self.one_of.join(", "), shown(s)));
        }
        if let Some(n) = self.len_min {
            if s.len() < n {
                return Err(format!("length must be at least {n}"));
            }
        }
        if self.url && (!(s.starts_with("http://") || s.starts_with("https://")) || s.contains(char::is_whitespace)) {
            return Err("must be an http:// or https:// URL".into());
        }
        if self.path && !s.starts_with('/') {
            return Err("must start with /".into());
        }
        Ok(())
    }
}

/// A value as an error message may show it: short values whole, long ones cut.
fn shown(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

fn type_label(ty: Type) -> &'static str {
    match ty {
        Type::String => "a string",
        Type::Integer => "an integer",
        Type::Boolean => "a boolean",
        Type::StringArray => "an array of strings",
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One field a config got wrong, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}': {problem}")]
pub struct FieldProblem {
    pub field: &'static str,
    pub problem: String,
}

/// A config the field table refuses. Every bad field is reported at once, so an operator
/// fixes the decK YAML in one pass rather than one field per reload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("config is not valid JSON: {0}")]
    NotJson(String),
    #[error("config must be a JSON object")]
    NotAnObject,
    /// `field 'a': …; field 'b': …`, in field-table order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Fields(Vec<FieldProblem>),
}

/// Validates Kong's config JSON text against `fields`. On failure the error names every
/// bad field, e.g. `field 'jwks_url': required; field 'leeway': expected an integer, got "x"`.
pub fn validate(fields: &[Field], config_json: &[u8]) -> Result<Map<String, Value>, SchemaError> {
    let parsed: Value = serde_json::from_slice(config_json).map_err(|e| SchemaError::NotJson(e.to_string()))?;
    let Value::Object(mut input) = parsed else {
        return Err(SchemaError::NotAnObject);
    };
    let mut out = Map::new();
    let mut problems = Vec::new();
    for field in fields {
        match input.remove(field.name) {
            None | Some(Value::Null) => {
                if let Some(d) = field.default_json() {
                    out.insert(field.name.into(), d);
                } else if field.required {
                    problems.push(FieldProblem { field: field.name, problem: "required".into() });
                }
            }
            Some(v) => match field.check(v) {
                Ok(v) => {
                    out.insert(field.name.into(), v);
                }
                Err(problem) => problems.push(FieldProblem { field: field.name, problem }),
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(SchemaError::Fields(problems))
    }
}

/// The `Schema` object of a `--dump` entry: `{name, fields: [{config: {type: record, …}}]}`.
pub fn kong_schema(plugin: &str, fields: &[Field]) -> Value {
    let config_fields: Vec<Value> = fields.iter().map(Field::kong_definition).collect();
    json!({
        "name": plugin,
        "fields": [
            { "protocols": { "type": "set", "required": true,
                "default": ["grpc", "grpcs", "http", "https"],
                "elements": { "type": "string", "one_of": ["grpc", "grpcs", "http", "https"] } } },
            { "config": { "type": "record", "required": true, "fields": config_fields } }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field::string("url").required().url(),
        Field::integer("ttl").default(Default::Int(60)).between(1, 3600),
        Field::strings("names").default(Default::Strs(&["x-api-key"])).len_min(1),
        Field::string("mode").default(Default::Str("strip")).one_of(&["strip", "reject"]),
    ];

    #[test]
    fn fills_defaults_and_drops_kong_keys() {
        let out = validate(FIELDS, br#"{"url":"http:\/\/a","__seq__":3,"route_id":"r","ttl":null}"#).unwrap();
        assert_eq!(Value::Object(out), json!({"url":"http://a","ttl":60,"names":["x-api-key"],"mode":"strip"}));
    }

    #[test]
    fn names_every_bad_field() {
        let err = validate(FIELDS, br#"{"ttl":"x","names":[],"mode":"log"}"#).unwrap_err();
        let SchemaError::Fields(problems) = &err else { panic!("{err}") };
        let named: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(named, ["url", "ttl", "names", "mode"], "every bad field, in table order");
        let err = err.to_string();
        assert!(err.contains("field 'url': required"), "{err}");
        assert!(err.contains("field 'ttl': expected an integer"), "{err}");
        assert!(err.contains("field 'names': needs at least 1"), "{err}");
        assert!(err.contains("field 'mode': must be one of strip, reject"), "{err}");
        let err = validate(FIELDS, br#"{"url":"ftp://x","ttl":0}"#).unwrap_err().to_string();
        assert!(err.contains("field 'url': must be an http") && err.contains("between 1 and 3600"), "{err}");
    }

    #[test]
    fn strings_are_bounded_in_characters_and_free_of_control_characters() {
        let field = Field::string("issuer");
        let at_limit = "é".repeat(DEFAULT_LEN_MAX);
        assert!(field.check_string(&at_limit).is_ok(), "Kong counts characters, so do we");
        let err = field.check_string(&format!("{at_limit}é")).unwrap_err();
        assert!(err.contains("longer than 1024 characters"), "{err}");
        assert!(field.check_string("a\r\nb").unwrap_err().contains("control character"));
        let name = Field::strings("cookie_names").token();
        assert!(name.check(json!(["session"])).is_ok());
        assert!(name.check(json!(["a;b"])).unwrap_err().contains("not a valid header or cookie name"));
        assert!(name.check(json!(vec!["c"; DEFAULT_ITEMS_MAX + 1])).unwrap_err().contains("at most 32"));
    }

    #[test]
    fn a_config_that_is_not_an_object_says_so() {
        assert_eq!(validate(FIELDS, b"[1]"), Err(SchemaError::NotAnObject));
        assert!(matches!(validate(FIELDS, b"{"), Err(SchemaError::NotJson(_))));
    }

    #[test]
    fn integral_floats_and_empty_objects_are_accepted() {
        let out = validate(FIELDS, br#"{"url":"https://a","ttl":30.0,"names":{}}"#);
        assert!(out.is_err(), "names {{}} becomes [] which is below len_min");
        let out = validate(FIELDS, br#"{"url":"https://a","ttl":30.0}"#).unwrap();
        assert_eq!(out["ttl"], json!(30));
    }

    #[test]
    fn schema_lists_every_field_with_default_and_rules() {
        let s = kong_schema("p", FIELDS);
        let fields = s["fields"][1]["config"]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), FIELDS.len());
        assert_eq!(fields[0]["url"]["required"], json!(true));
        assert_eq!(fields[1]["ttl"]["default"], json!(60));
        assert_eq!(fields[1]["ttl"]["between"], json!([1, 3600]));
        assert_eq!(fields[2]["names"]["elements"]["type"], json!("string"));
        assert_eq!(fields[3]["mode"]["one_of"], json!(["strip", "reject"]));
    }
}
