//! The harness's report on the result fd, parsed strictly.

use serde::Deserialize;
use serde_json::Value;

use super::Outcome;

#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
enum Frame {
    Ok {
        result: Value,
    },
    SyntaxError {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    MissingMain {
        message: String,
    },
    RuntimeError {
        exception: String,
        message: String,
        traceback: String,
    },
    NonJson {
        message: String,
    },
}

/// `None` when the bytes are not exactly one well-formed frame: the run then
/// ended without a result, whatever the script wrote there.
pub fn parse(bytes: &[u8]) -> Option<Outcome> {
    // serde_json refuses NaN/Infinity and trailing data, and its recursion
    // limit keeps a deeply nested result from overflowing our stack.
    let frame: Frame = serde_json::from_slice(bytes).ok()?;
    Some(match frame {
        Frame::Ok { result } => Outcome::Success(result),
        Frame::SyntaxError {
            message,
            line,
            column,
        } => Outcome::SyntaxError {
            message,
            line,
            column,
        },
        Frame::MissingMain { message } => Outcome::MissingMain(message),
        Frame::RuntimeError {
            exception,
            message,
            traceback,
        } if exception == "MemoryError" => Outcome::MemoryLimit {
            detail: format!("{exception}: {message}\n{traceback}"),
        },
        Frame::RuntimeError {
            exception,
            message,
            traceback,
        } => Outcome::RuntimeError {
            exception,
            message,
            traceback,
        },
        Frame::NonJson { message } => Outcome::NonJsonResult(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_frame_carries_the_value() {
        let outcome = parse(br#"{"status":"ok","result":{"a":[1,2.5,null]}}"#).unwrap();
        assert!(matches!(outcome, Outcome::Success(v) if v["a"][1] == 2.5));
    }

    #[test]
    fn two_frames_or_extra_fields_are_not_a_result() {
        assert!(parse(br#"{"status":"ok","result":1}{"status":"ok","result":2}"#).is_none());
        assert!(parse(br#"{"status":"ok","result":1,"stdout":"x"}"#).is_none());
        assert!(parse(br#"{"status":"ok","result":NaN}"#).is_none());
        assert!(parse(b"").is_none());
    }

    #[test]
    fn deeply_nested_frames_are_refused_without_overflowing() {
        let deep = format!(
            r#"{{"status":"ok","result":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse(deep.as_bytes()).is_none());
    }
}
