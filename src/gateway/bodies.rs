//! The bodies of `POST /execute`, each the one definition of its shape
//! (the OpenAPI schemas derive from them): the request as a client sends it,
//! parsed and checked field by field against the tenant's limits, and the
//! 200 answer a successful run becomes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ScriptFailure};
use crate::sandbox::files::{self, RunFile};
use crate::sandbox::{Job, Outcome, RunReport, SandboxPolicy};
use crate::tenants::Tenant;

// The one definition of the request's fields: the OpenAPI schema derives
// from it (`deny_unknown_fields` is `additionalProperties: false`), and
// `parse` checks a body field by field for its own messages, then decodes it
// with this type.
/// The `POST /execute` request body. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"script": "def main(n):\n    return {\"double\": 2 * n}", "args": {"n": 21}}))]
pub struct ExecuteRequest {
    /// Python source defining a top-level `def main(...)`; at most the
    /// tenant's `maxScriptBytes` (10 KiB by default), UTF-8, no NUL.
    pub script: String,
    /// Keyword arguments: `main(**args)`. Keys must be Python identifiers.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Map<String, Value>,
    /// Wall-clock limit for this run, from 1 to the tenant's limit.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// `false` runs the script even when a cached result exists.
    #[serde(default)]
    pub cache: Option<bool>,
    /// Files written under the run's working folder (`/tmp`) before
    /// `main()` runs; at most the tenant's `maxInputFiles` (64), their
    /// decoded bytes at most its `maxInputBytes` (8 MiB).
    #[serde(default)]
    #[schema(nullable)]
    pub files: Vec<InputFile>,
}

const FIELDS: &[&str] = &["script", "args", "timeout_ms", "cache", "files"];

/// One input file.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    /// Relative to `/tmp`, folders included (`data/in.csv`): no `..`, not
    /// absolute, no NUL, at most 8 levels and 255 bytes a name.
    // The pattern is the plain form of a path the gateway accepts, with
    // names short enough (63 characters) to stay under 255 bytes in UTF-8.
    #[schema(
        example = "data.csv",
        pattern = r"^([^/.\x00][^/\x00]{0,62}|\.[^/.\x00][^/\x00]{0,61}|\.\.[^/\x00]{1,61})(/([^/.\x00][^/\x00]{0,62}|\.[^/.\x00][^/\x00]{0,61}|\.\.[^/\x00]{1,61})){0,7}$"
    )]
    pub path: String,
    /// The file's bytes, base64 (RFC 4648, padded).
    #[schema(format = Byte, example = "YSxiCjEsMgo=")]
    pub content: String,
}

/// One file the script left in `/tmp/out`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputFileBody {
    /// Relative to `/tmp/out`.
    #[schema(example = "chart.csv")]
    pub path: String,
    /// Its length in bytes, before encoding.
    pub size: u64,
    /// Its bytes, base64 (RFC 4648, padded).
    #[schema(format = Byte)]
    pub content: String,
}

/// The 200 body of `POST /execute`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResult {
    /// Exactly the value `main()` returned, as JSON (it travels on its own
    /// channel: nothing the script prints can forge it).
    #[schema(value_type = Value)]
    pub result: Value,
    /// What the script printed, capped at the tenant's `maxOutputBytes`.
    pub stdout: String,
    pub stderr: String,
    /// Always `nsjail`.
    #[schema(example = "nsjail")]
    pub execution_method: &'static str,
    pub duration_ms: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Every regular file left under `/tmp/out` when `main()` returned,
    /// sorted by path (symlinks and special files are never followed).
    pub files: Vec<OutputFileBody>,
}

impl ExecuteRequest {
    /// The tenant's sandbox policy with this request's timeout, and the job.
    pub fn into_run(self, tenant: &Tenant) -> (SandboxPolicy, Job) {
        let mut policy = tenant.sandbox.clone();
        if let Some(ms) = self.timeout_ms {
            policy.limits.wall_timeout = Duration::from_millis(ms);
        }
        let job = Job {
            script: self.script,
            args: self.args,
            files: self
                .files
                .into_iter()
                .map(|file| RunFile {
                    path: file.path,
                    content: file.content,
                })
                .collect(),
        };
        (policy, job)
    }

    /// Parses and checks a body against the tenant's limits; every problem
    /// gets its own message.
    pub fn parse(body: &[u8], tenant: &Tenant) -> Result<Self, ApiError> {
        // serde_json stops at 128 levels of nesting, so a hostile body cannot
        // overflow the stack.
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidRequest(format!("The body is not valid JSON: {e}.")))?;
        Self::from_value(value, tenant)
    }

    /// [`ExecuteRequest::parse`] for a body already parsed as JSON (`pyexec
    /// run` builds one from its flags).
    pub fn from_value(value: Value, tenant: &Tenant) -> Result<Self, ApiError> {
        let invalid = |m: &str| ApiError::InvalidRequest(m.to_string());
        let Value::Object(mut fields) = value else {
            return Err(invalid(
                "The body must be a JSON object such as {\"script\": \"def main(): ...\"}.",
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ApiError::InvalidRequest(format!(
                "Unknown field `{unknown}`; the fields are script, args, timeout_ms, cache and files."
            )));
        }
        // Every check reads the fields; the last step decodes them.
        fields.retain(|_, v| !v.is_null());
        let script = match fields.get("script") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(invalid("`script` must be a string.")),
            None => return Err(invalid("Missing required field `script`.")),
        };
        if script.len() > tenant.request.max_script_bytes {
            return Err(ApiError::TooLarge(format!(
                "The script is {} bytes; the limit is {} bytes.",
                script.len(),
                tenant.request.max_script_bytes
            )));
        }
        if script.contains('\0') {
            return Err(invalid("`script` must not contain NUL characters."));
        }
        if script.trim().is_empty() {
            return Err(invalid("`script` is empty."));
        }
        let args = match fields.get("args") {
            None => &Map::new(),
            Some(Value::Object(args)) => args,
            Some(_) => {
                return Err(invalid(
                    "`args` must be a JSON object; it is passed as main(**args).",
                ));
            }
        };
        if let Some(bad) = args.keys().find(|k| !is_identifier(k)) {
            return Err(ApiError::InvalidRequest(format!(
                "`args` key `{bad}` is not a Python identifier."
            )));
        }
        let max_timeout_ms = tenant.sandbox.limits.wall_timeout.as_millis() as u64;
        match fields.get("timeout_ms") {
            None => {}
            Some(Value::Number(n)) => {
                // JSON has one number type: `1500.0` is the whole number 1500
                // (JSON Schema's `integer` says the same).
                let whole = n.as_u64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && (1.0..=max_timeout_ms as f64).contains(f))
                        .map(|f| f as u64)
                });
                match whole {
                    Some(ms) if (1..=max_timeout_ms).contains(&ms) => {
                        fields.insert("timeout_ms".into(), Value::from(ms));
                    }
                    _ => {
                        return Err(ApiError::InvalidRequest(format!(
                            "`timeout_ms` must be a whole number from 1 to {max_timeout_ms}."
                        )));
                    }
                }
            }
            Some(_) => return Err(invalid("`timeout_ms` must be a number of milliseconds.")),
        };
        if fields.get("cache").is_some_and(|c| !c.is_boolean()) {
            return Err(invalid("`cache` must be true or false."));
        }
        if let Some(list) = fields.get_mut("files") {
            check_input_files(list, tenant)?;
        }
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| ApiError::InvalidRequest(format!("The body does not decode: {e}.")))
    }
}

/// Checks `files` against the tenant's limits and puts each path in its
/// normal form; every problem names the file.
fn check_input_files(list: &mut Value, tenant: &Tenant) -> Result<(), ApiError> {
    let limits = &tenant.request;
    let Value::Array(list) = list else {
        return Err(ApiError::InvalidRequest(
            "`files` must be a list of {\"path\": ..., \"content\": <base64>} objects.".into(),
        ));
    };
    if list.len() > limits.max_input_files {
        return Err(ApiError::TooLarge(format!(
            "The request has {} input files; the limit is {} (maxInputFiles).",
            list.len(),
            limits.max_input_files
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0u64;
    for (index, entry) in list.iter_mut().enumerate() {
        let invalid = |what: String| ApiError::InvalidRequest(format!("`files[{index}]` {what}."));
        let Value::Object(entry) = entry else {
            return Err(invalid(
                "must be an object with `path` and `content`".into(),
            ));
        };
        if let Some(unknown) = entry
            .keys()
            .find(|k| !["path", "content"].contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "has an unknown field `{unknown}`; a file has path and content"
            )));
        }
        let Some(Value::String(raw)) = entry.get("path") else {
            return Err(invalid("needs a `path` string".into()));
        };
        let path = files::normalize_path(raw).map_err(|why| {
            ApiError::InvalidRequest(format!("The path of `files[{index}]` ({raw:?}) {why}."))
        })?;
        let named =
            |what: String| ApiError::InvalidRequest(format!("The input file `{path}` {what}."));
        if path == files::OUTPUT_DIR {
            return Err(named(
                "would take the place of the folder of output files".into(),
            ));
        }
        let Some(Value::String(content)) = entry.get("content") else {
            return Err(named("needs a `content` string of base64".into()));
        };
        let size = files::decoded_len(content).map_err(named)?;
        if size > tenant.sandbox.limits.file_size_bytes {
            return Err(ApiError::TooLarge(format!(
                "The input file `{path}` is {size} bytes; a file may have at most {} (fileSizeMiB).",
                tenant.sandbox.limits.file_size_bytes
            )));
        }
        total += size;
        if total > limits.max_input_bytes {
            return Err(ApiError::TooLarge(format!(
                "The input files hold more than {} bytes (maxInputBytes), decoded.",
                limits.max_input_bytes
            )));
        }
        // A file cannot also be a folder of another, nor be given twice.
        let as_folder = format!("{path}/");
        let clash = !seen.insert(path.clone())
            || path
                .match_indices('/')
                .any(|(at, _)| seen.contains(&path[..at]))
            || seen
                .range(as_folder.clone()..)
                .next()
                .is_some_and(|next| next.starts_with(&as_folder));
        if clash {
            return Err(named(
                "is given twice, or is also the folder of another input file".into(),
            ));
        }
        entry.insert("path".into(), Value::String(path));
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// The 200 body of the API contract, or the problem a failed run becomes.
/// `pyexec run` prints the same.
pub fn success_body(report: RunReport) -> Result<ExecuteResult, ApiError> {
    match report.outcome {
        Outcome::Success { result, files } => Ok(ExecuteResult {
            result,
            files: files
                .into_iter()
                .map(|file| OutputFileBody {
                    path: file.path,
                    size: file.size,
                    content: file.content,
                })
                .collect(),
            stdout: report.stdout.text,
            stderr: report.stderr.text,
            execution_method: "nsjail",
            duration_ms: report.duration.as_millis() as u64,
            stdout_truncated: report.stdout.truncated,
            stderr_truncated: report.stderr.truncated,
        }),
        outcome => Err(ApiError::Script(Box::new(ScriptFailure {
            outcome,
            stdout: report.stdout,
            stderr: report.stderr,
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: &str) -> Result<ExecuteRequest, ApiError> {
        ExecuteRequest::parse(body.as_bytes(), &Tenant::bootstrap())
    }

    fn kind(body: &str) -> &'static str {
        parse(body).unwrap_err().kind()
    }

    #[test]
    fn a_plain_script_with_args_and_options_is_accepted() {
        let r = parse(
            r#"{"script":"def main(n): return n","args":{"n":3},"timeout_ms":500,"cache":false}"#,
        )
        .unwrap();
        assert_eq!(r.args["n"], 3);
        assert_eq!(r.timeout_ms, Some(500));
        assert_eq!(r.cache, Some(false));
    }

    #[test]
    fn a_whole_number_written_with_a_fraction_is_a_timeout() {
        let r = parse(r#"{"script": "def main(): pass", "timeout_ms": 1500.0}"#).unwrap();
        assert_eq!(r.timeout_ms, Some(1500));
        assert_eq!(
            kind(r#"{"script": "def main(): pass", "timeout_ms": 1500.5}"#),
            "invalid-request"
        );
    }

    #[test]
    fn malformed_bodies_and_fields_are_invalid_requests() {
        for body in [
            "not json",
            "[1]",
            "{}",
            r#"{"script": 5}"#,
            r#"{"script": "def main(): pass", "args": [1]}"#,
            r#"{"script": "def main(): pass", "args": {"not an identifier": 1}}"#,
            r#"{"script": "def main(): pass", "timeout_ms": "5"}"#,
            r#"{"script": "def main(): pass", "timeout_ms": 0}"#,
            r#"{"script": "def main(): pass", "timeout_ms": 999999999}"#,
            r#"{"script": "def main(): pass", "cache": "yes"}"#,
            r#"{"script": "def main(): pass", "scirpt": 1}"#,
            r#"{"script": "def main():\u0000 pass"}"#,
            r#"{"script": "   "}"#,
        ] {
            assert_eq!(kind(body), "invalid-request", "{body}");
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
        let body = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert_eq!(kind(&body), "invalid-request");
    }

    #[test]
    fn a_script_over_the_tenant_limit_is_too_large() {
        let body = json!({"script": format!("def main(): return 1\n#{}", "x".repeat(10_240))});
        assert_eq!(kind(&body.to_string()), "too-large");
    }
}
