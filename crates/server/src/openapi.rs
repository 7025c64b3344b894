//! Checks answers against CircleCI's published OpenAPI document for API v2
//! (`../shared/reference/circleci-api-v2.openapi.yaml`, OpenAPI 3.0.3), for the conformance
//! test in `openapi_tests.rs`. The document is loaded once; when it is missing the test panics
//! rather than skip, since a conformance test that passes without its schema proves nothing.
//!
//! The validator follows OpenAPI 3.0's schema semantics for what the document uses: local
//! `$ref`s, `type`, `nullable`, `required`, `properties`, `additionalProperties`, `items`,
//! `enum`, the formats `uuid` and `date-time` (RFC 3339), `allOf`, `oneOf` and `anyOf`. Other
//! keywords (`minimum`, `pattern`, …) are not checked.
//!
//! Two readings beyond the letter of OpenAPI 3.0, each because CircleCI's own answers need it:
//! - `x-nullable: true` counts as `nullable: true`. The document was converted from Swagger 2
//!   and marks 76 fields (`stopped_at`, `next_page_token`, …) that way, 2 the 3.0 way.
//! - [`NULL_ALLOWED`]: a short list of required fields CircleCI itself answers `null` for
//!   although the document does not say they may be; a null there is accepted, nothing else.

use std::sync::OnceLock;

use serde_json::Value;

/// Where the document is, as CI clones the repository (`../shared` beside it).
const DOCUMENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/circleci-api-v2.openapi.yaml"
);

/// `(schema, property)`: required fields CircleCI answers `null` for, in the document's
/// (generator-renamed) schema names. A queued or blocked job has not started: CircleCI answers
/// `"started_at": null` for it in job lists and job details alike, and so does bosun.
const NULL_ALLOWED: &[(&str, &str)] = &[
    ("Job", "started_at"),
    ("JobGetDetailsResponse", "started_at"),
];

/// The document as JSON, loaded on first use; panics naming the file when it cannot be read.
fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(DOCUMENT).unwrap_or_else(|err| {
            panic!("CircleCI's OpenAPI document {DOCUMENT} is missing ({err}): the conformance tests need it")
        });
        let docs = yaml_rust2::YamlLoader::load_from_str(&text)
            .unwrap_or_else(|err| panic!("{DOCUMENT} is not YAML: {err}"));
        let doc = docs
            .first()
            .unwrap_or_else(|| panic!("{DOCUMENT} is empty"));
        let json = yaml_to_json(doc);
        assert!(
            json["paths"].as_object().is_some_and(|paths| paths.len() > 50),
            "{DOCUMENT} has no `paths`"
        );
        json
    })
}

/// YAML to JSON; mapping keys become strings (`200:` and `"200":` alike).
fn yaml_to_json(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text.clone()), Value::Number),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let key = match yaml_to_json(key) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    (key, yaml_to_json(value))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// Whether the document has operation `method` on `spec_path` (as the document writes it).
pub(crate) fn has_operation(method: &str, spec_path: &str) -> bool {
    operation(method, spec_path).is_some()
}

fn operation(method: &str, spec_path: &str) -> Option<&'static Value> {
    document()["paths"]
        .get(spec_path)?
        .get(method.to_ascii_lowercase())
}

/// Validates `body`, answered with `status` to `method spec_path`, against the document's
/// response schema for that status (else its `default`). Each error names the JSON path.
pub(crate) fn check(
    method: &str,
    spec_path: &str,
    status: u16,
    body: &Value,
) -> Result<(), Vec<String>> {
    let operation = operation(method, spec_path).ok_or_else(|| {
        vec![format!(
            "the document has no operation {method} {spec_path}"
        )]
    })?;
    let responses = &operation["responses"];
    // `default` stands for errors only: a success status the document does not list is a
    // mismatch, not a body to check against the (all-optional) error schema.
    let fallback = (status >= 400).then(|| responses.get("default")).flatten();
    let response = responses
        .get(status.to_string())
        .or(fallback)
        .ok_or_else(|| {
            let listed: Vec<&String> = responses
                .as_object()
                .into_iter()
                .flat_map(|r| r.keys())
                .collect();
            vec![format!(
                "{method} {spec_path} answered {status}; the document lists {listed:?}"
            )]
        })?;
    let schema = response
        .pointer("/content/application~1json/schema")
        .ok_or_else(|| {
            vec![format!(
                "{method} {spec_path} {status}: the document gives no JSON schema"
            )]
        })?;
    let mut validator = Validator::default();
    validator.validate(schema, body, "$", None);
    if validator.errors.is_empty() {
        Ok(())
    } else {
        Err(validator.errors)
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<String>,
}

impl Validator {
    /// Validates `value` at `path` against `schema`; `component` names the schema last reached
    /// through a `$ref` (for [`NULL_ALLOWED`]).
    fn validate(&mut self, schema: &Value, value: &Value, path: &str, component: Option<&str>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let Some(target) = reference
                .strip_prefix('#')
                .and_then(|pointer| document().pointer(pointer))
            else {
                self.errors
                    .push(format!("{path}: unresolvable $ref `{reference}`"));
                return;
            };
            let name = reference.rsplit('/').next();
            return self.validate(target, value, path, name);
        }
        if value.is_null() {
            if !is_nullable(schema) && schema.get("type").is_some() {
                self.errors.push(format!(
                    "{path}: null where the document wants {}",
                    schema["type"].as_str().unwrap_or("a value")
                ));
            }
            return;
        }
        self.combinators(schema, value, path, component);
        if let Some(kind) = schema.get("type").and_then(Value::as_str) {
            if !has_type(value, kind) {
                self.errors.push(format!(
                    "{path}: {} where the document wants {kind}",
                    type_name(value)
                ));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                self.errors
                    .push(format!("{path}: {value} is not one of {allowed:?}"));
            }
        }
        if let (Some(format), Some(text)) =
            (schema.get("format").and_then(Value::as_str), value.as_str())
        {
            check_format(format, text, path, &mut self.errors);
        }
        if let Some(object) = value.as_object() {
            self.object(schema, object, path, component);
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (index, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{path}[{index}]"), component);
            }
        }
    }

    /// `allOf` (every one), `anyOf` (at least one), `oneOf` (exactly one).
    fn combinators(&mut self, schema: &Value, value: &Value, path: &str, component: Option<&str>) {
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(sub, value, path, component);
            }
        }
        for (keyword, wanted) in [("anyOf", None), ("oneOf", Some(1))] {
            let Some(subs) = schema.get(keyword).and_then(Value::as_array) else {
                continue;
            };
            let mut passed = 0;
            let mut failures = Vec::new();
            for sub in subs {
                let mut inner = Validator::default();
                inner.validate(sub, value, path, component);
                if inner.errors.is_empty() {
                    passed += 1;
                } else {
                    failures.extend(inner.errors);
                }
            }
            let ok = match wanted {
                Some(n) => passed == n,
                None => passed > 0,
            };
            if !ok {
                self.errors.push(format!(
                    "{path}: {passed} of the {} `{keyword}` schemas match ({})",
                    subs.len(),
                    failures.join("; ")
                ));
            }
        }
    }

    fn object(
        &mut self,
        schema: &Value,
        object: &serde_json::Map<String, Value>,
        path: &str,
        component: Option<&str>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for field in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(field) {
                self.errors
                    .push(format!("{path}.{field}: missing required field"));
            }
        }
        for (field, value) in object {
            let at = format!("{path}.{field}");
            match properties.and_then(|properties| properties.get(field)) {
                Some(_)
                    if value.is_null()
                        && component
                            .is_some_and(|c| NULL_ALLOWED.contains(&(c, field.as_str()))) => {}
                Some(property) => self.validate(property, value, &at, component),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => self
                        .errors
                        .push(format!("{at}: a field the document does not allow")),
                    Some(extra @ Value::Object(_)) => self.validate(extra, value, &at, component),
                    _ => {}
                },
            }
        }
    }
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable") == Some(&Value::Bool(true))
        || schema.get("x-nullable") == Some(&Value::Bool(true))
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_format(format: &str, text: &str, path: &str, errors: &mut Vec<String>) {
    let ok = match format {
        // The hyphenated form CircleCI answers; `Uuid::parse_str` alone would take others.
        "uuid" => text.len() == 36 && uuid::Uuid::parse_str(text).is_ok(),
        "date-time" => is_rfc3339(text),
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: {text:?} is not a {format}"));
    }
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, fields in range.
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let head = (|| {
        let (_, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        let separators = bytes.get(4) == Some(&b'-')
            && bytes.get(7) == Some(&b'-')
            && matches!(bytes.get(10), Some(b'T' | b't'))
            && bytes.get(13) == Some(&b':')
            && bytes.get(16) == Some(&b':');
        Some(
            separators
                && (1..=12).contains(&month)
                && (1..=31).contains(&day)
                && hour < 24
                && minute < 60
                && second <= 60,
        )
    })();
    if head != Some(true) {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return false;
        }
        rest = &fraction[len..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit())
                && (h1 - b'0') * 10 + (h2 - b'0') < 24
                && (m1 - b'0') * 10 + (m2 - b'0') < 60
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A workflow list as CircleCI answers one.
    fn workflows() -> Value {
        json!({
            "items": [{
                "id": "5034460f-c7c4-4c43-9457-de07e2029e7b",
                "name": "build",
                "pipeline_id": "046b6c7f-0b8a-43b9-b35d-6489e6daee91",
                "pipeline_number": 25,
                "project_slug": "gh/acme/widgets",
                "started_by": "046b6c7f-0b8a-43b9-b35d-6489e6daee91",
                "status": "running",
                "created_at": "2026-12-02T08:21:14.123Z",
                "stopped_at": null
            }],
            "next_page_token": null
        })
    }

    fn errors_of(body: &Value) -> Vec<String> {
        check("GET", "/pipeline/{pipeline-id}/workflow", 200, body)
            .expect_err("the body should not validate")
    }

    #[test]
    fn a_valid_body_passes() {
        assert_eq!(
            check("GET", "/pipeline/{pipeline-id}/workflow", 200, &workflows()),
            Ok(())
        );
    }

    #[test]
    fn a_missing_required_field_fails_naming_its_path() {
        let mut body = workflows();
        body["items"][0]
            .as_object_mut()
            .unwrap()
            .remove("started_by");
        assert_eq!(
            errors_of(&body),
            ["$.items[0].started_by: missing required field"]
        );
    }

    #[test]
    fn a_wrong_type_fails_naming_its_path() {
        let mut body = workflows();
        body["items"][0]["pipeline_number"] = json!("25");
        assert_eq!(
            errors_of(&body),
            ["$.items[0].pipeline_number: a string where the document wants integer"]
        );
        let mut body = workflows();
        body["items"][0]["pipeline_number"] = json!(2.5);
        assert_eq!(errors_of(&body).len(), 1);
        let mut body = workflows();
        body["items"][0]["name"] = Value::Null;
        assert_eq!(
            errors_of(&body),
            ["$.items[0].name: null where the document wants string"]
        );
    }

    #[test]
    fn a_bad_enum_value_fails_naming_its_path() {
        let mut body = workflows();
        body["items"][0]["status"] = json!("exploded");
        let errors = errors_of(&body);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("$.items[0].status: \"exploded\" is not one of"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_uuids_and_date_times_fail_naming_their_path() {
        for (field, bad) in [
            ("id", "5034460fc7c44c439457de07e2029e7b"),
            ("id", "not-a-uuid"),
            ("created_at", "2026-12-02 08:21:14Z"),
            ("created_at", "2026-13-02T08:21:14Z"),
            ("created_at", "2026-12-02T08:21:14"),
        ] {
            let mut body = workflows();
            body["items"][0][field] = json!(bad);
            let format = if field == "id" { "uuid" } else { "date-time" };
            assert_eq!(
                errors_of(&body),
                [format!("$.items[0].{field}: {bad:?} is not a {format}")]
            );
        }
        for good in ["2026-12-02T08:21:14+01:00", "2026-12-02T08:21:14.5-00:30"] {
            assert!(is_rfc3339(good), "{good}");
        }
    }

    #[test]
    fn errors_answer_the_default_schema_and_unknown_operations_fail() {
        assert_eq!(
            check(
                "GET",
                "/pipeline/{pipeline-id}",
                404,
                &json!({"message": "no"})
            ),
            Ok(())
        );
        assert!(
            check(
                "GET",
                "/pipeline/{pipeline-id}",
                404,
                &json!({"message": 4})
            )
            .is_err()
        );
        // A typo in a path or method is an error, never a pass.
        assert!(!has_operation("GET", "/pipeline/{pipeline_id}"));
        assert!(check("GET", "/pipeline/{pipeline_id}", 200, &json!({})).is_err());
        assert!(check("PATCH", "/pipeline/{pipeline-id}", 200, &json!({})).is_err());
        // A success status the document does not list never falls back to `default`.
        assert!(check("POST", "/project/{project-slug}/pipeline", 200, &json!({})).is_err());
    }

    #[test]
    fn null_is_allowed_only_for_the_listed_fields() {
        let job = |started_at: Value| {
            json!({"items": [{
                "dependencies": [],
                "id": "5034460f-c7c4-4c43-9457-de07e2029e7b",
                "name": "test",
                "project_slug": "gh/acme/widgets",
                "started_at": started_at,
                "status": "blocked",
                "type": "build",
                "job_number": null
            }], "next_page_token": null})
        };
        let errors = check("GET", "/workflow/{id}/job", 200, &job(Value::Null)).unwrap_err();
        // `started_at` is listed; `job_number` is not.
        assert_eq!(
            errors,
            ["$.items[0].job_number: null where the document wants integer"]
        );
    }
}
