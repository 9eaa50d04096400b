//! What a run is and how it ended: the report the gateway answers from, the
//! errors that keep a run from starting, and the naming of a finished run's
//! outcome from its result frame (the harness's report, parsed strictly),
//! the gateway's timers and the kernel's counters.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SandboxMode;
use super::capture::Captured;
use super::cgroup::RunUsage;
use super::files::{self, OutputFile, OutputRefused, RunFile};
use super::limits::{Limits, MIB};

/// How a run ended, in the API contract's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success {
        result: Value,
        /// What the script left in `/tmp/out`, sorted by path.
        files: Vec<OutputFile>,
    },
    SyntaxError {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    MissingMain(String),
    RuntimeError {
        exception: String,
        message: String,
        traceback: String,
    },
    NonJsonResult(String),
    /// More files, or more bytes of them, in `/tmp/out` than the limits.
    OutputTooLarge(String),
    Timeout {
        detail: String,
    },
    MemoryLimit {
        detail: String,
    },
    Killed {
        detail: String,
    },
}

impl Outcome {
    /// A stable name, used as the problem type suffix and in traces/metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::SyntaxError { .. } => "syntax-error",
            Outcome::MissingMain(_) => "missing-main",
            Outcome::RuntimeError { .. } => "runtime-error",
            Outcome::NonJsonResult(_) => "non-json-result",
            Outcome::OutputTooLarge(_) => "output-too-large",
            Outcome::Timeout { .. } => "timeout",
            Outcome::MemoryLimit { .. } => "memory-limit",
            Outcome::Killed { .. } => "sandbox-killed",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Output {
    pub text: String,
    pub truncated: bool,
}

impl Output {
    /// The captured bytes as text, cut so that the text written as a JSON
    /// string (what goes on the wire) stays within `wire_cap` bytes: a
    /// control character costs six (`\u0001`), so a cap on raw bytes alone
    /// would let a script's output grow sixfold on the way out.
    pub(super) fn new(captured: Captured, wire_cap: u64) -> Self {
        let text = String::from_utf8_lossy(&captured.bytes);
        let mut wire = 0u64;
        let mut end = text.len();
        for (at, c) in text.char_indices() {
            wire += json_escaped_len(c);
            if wire > wire_cap {
                end = at;
                break;
            }
        }
        Self {
            truncated: captured.truncated || end < text.len(),
            text: text[..end].to_string(),
        }
    }
}

/// Bytes `serde_json` writes for `c` inside a string.
fn json_escaped_len(c: char) -> u64 {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8() as u64,
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    pub stdout: Output,
    pub stderr: Output,
    pub duration: Duration,
    pub usage: RunUsage,
    /// The signal that ended the jailed process, when one did.
    pub signal: Option<i32>,
    pub mode: SandboxMode,
}

/// What a run left behind, before it is named as an [`Outcome`].
#[derive(Debug, Default)]
pub(super) struct RawRun {
    pub(super) stdout: Captured,
    pub(super) stderr: Captured,
    pub(super) result: Captured,
    /// Exit code of the jailed process; 128 + n when signal n ended it.
    pub(super) code: Option<i32>,
    pub(super) signal: Option<i32>,
    /// The limit the gateway's watch ended the run at, if it did.
    pub(super) timed_out: Option<TimeLimit>,
    pub(super) duration: Duration,
}

/// Which of a run's time limits the gateway's watch ended it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeLimit {
    Wall,
    /// The CPU time of the run's whole cgroup: every process and thread of
    /// the run together, which `RLIMIT_CPU` (per process) never sees.
    Cpu,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox cannot run anything (missing nsjail, failed self-test…).
    #[error("{0}")]
    Unavailable(String),
    /// Every slot is busy and the queue is full, or the wait timed out.
    #[error("all sandboxes are busy")]
    Saturated,
    /// nsjail failed to build the jail for this run.
    #[error("{0}")]
    LaunchFailed(String),
}

/// The signal behind an exit code of 128 + n, the way nsjail and the warm
/// zygote report a process that a signal ended.
pub(super) fn signal_from_exit_code(code: i32) -> Option<i32> {
    (129..160).contains(&code).then(|| code - 128)
}

/// Names how a run ended from what it left: its result frame first, then the
/// gateway's timer, then how the process died.
pub(super) fn conclude(raw: &RawRun, limits: &Limits) -> Outcome {
    match raw.timed_out {
        Some(TimeLimit::Wall) => {
            return Outcome::Timeout {
                detail: format!(
                    "the script ran longer than its wall-clock limit of {} ms",
                    limits.wall_timeout.as_millis()
                ),
            };
        }
        Some(TimeLimit::Cpu) => return cpu_limit_reached(limits),
        None => {}
    }
    if raw.result.truncated {
        return Outcome::NonJsonResult(result_too_large(limits));
    }
    parse_frame(&raw.result.bytes, limits).unwrap_or_else(|| Outcome::Killed {
        detail: match (raw.signal, raw.code) {
            (Some(sig), _) => format!(
                "the script was killed by signal {} ({}) before it returned a result",
                sig,
                signal_name(sig)
            ),
            (None, Some(c)) => {
                format!("the script exited with status {c} before it returned a result")
            }
            (None, None) => "the script ended without a result".into(),
        },
    })
}

fn result_too_large(limits: &Limits) -> String {
    format!(
        "main() returned more than {} bytes of JSON, the result limit",
        limits.result_bytes
    )
}

/// A kill is named for the limit the kernel says was reached.
pub(super) fn classify(
    outcome: Outcome,
    usage: &RunUsage,
    signal: Option<i32>,
    limits: &Limits,
) -> Outcome {
    match outcome {
        Outcome::Killed { .. } if usage.oom_kills > 0 => Outcome::MemoryLimit {
            detail: format!(
                "the script used more than its memory limit of {} MiB",
                limits.memory_bytes / MIB
            ),
        },
        Outcome::Killed { .. }
            if usage.cpu_time >= Duration::from_secs(limits.cpu_seconds)
                || signal == Some(libc::SIGXCPU) =>
        {
            cpu_limit_reached(limits)
        }
        other => other,
    }
}

fn cpu_limit_reached(limits: &Limits) -> Outcome {
    Outcome::Timeout {
        detail: format!(
            "the script used more than its CPU limit of {} s (all its processes together)",
            limits.cpu_seconds
        ),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS, a forbidden system call",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ, the file size limit",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    }
}

#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
enum Frame {
    Ok {
        result: Value,
        #[serde(default)]
        files: Vec<RunFile>,
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
    OutputTooLarge {
        message: String,
    },
}

/// The harness's report on the result fd, parsed strictly. `None` when the
/// bytes are not exactly one well-formed frame: the run then ended without a
/// result, whatever the script wrote there. Output files are checked
/// against `limits` again: the harness keeps to them, a script need not.
pub(super) fn parse_frame(bytes: &[u8], limits: &Limits) -> Option<Outcome> {
    // serde_json refuses NaN/Infinity and trailing data, and its recursion
    // limit keeps a deeply nested result from overflowing our stack.
    let frame: Frame = serde_json::from_slice(bytes).ok()?;
    Some(match frame {
        // The result's own limit; measured only when the whole frame is
        // larger (the result channel also carries the output files).
        Frame::Ok { result, .. }
            if bytes.len() as u64 > limits.result_bytes
                && serde_json::to_vec(&result)
                    .map_or(true, |json| json.len() as u64 > limits.result_bytes) =>
        {
            Outcome::NonJsonResult(result_too_large(limits))
        }
        Frame::Ok { result, files } => match files::check_output(files, limits) {
            Ok(files) => Outcome::Success { result, files },
            Err(OutputRefused::TooLarge(detail)) => Outcome::OutputTooLarge(detail),
            Err(OutputRefused::Malformed) => return None,
        },
        Frame::OutputTooLarge { message } => Outcome::OutputTooLarge(message),
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
    fn output_is_cut_at_its_escaped_size_on_a_character_boundary() {
        let captured = |bytes: &[u8]| Captured {
            bytes: bytes.to_vec(),
            truncated: false,
        };
        let control = Output::new(captured(&[1u8; 100]), 60);
        assert_eq!((control.text.len(), control.truncated), (10, true));
        assert_eq!(serde_json::to_string(&control.text).unwrap().len(), 62);
        let plain = Output::new(captured(b"hello"), 60);
        assert_eq!((plain.text.as_str(), plain.truncated), ("hello", false));
        let wide = Output::new(captured("é".repeat(10).as_bytes()), 5);
        assert_eq!((wide.text.as_str(), wide.truncated), ("éé", true));
    }

    #[test]
    fn ok_frame_carries_the_value() {
        let outcome = parse_frame(
            br#"{"status":"ok","result":{"a":[1,2.5,null]}}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(
            matches!(outcome, Outcome::Success { result, files } if result["a"][1] == 2.5 && files.is_empty())
        );
    }

    #[test]
    fn two_frames_or_extra_fields_are_not_a_result() {
        let parse = |bytes: &[u8]| parse_frame(bytes, &Limits::default());
        assert!(parse(br#"{"status":"ok","result":1}{"status":"ok","result":2}"#).is_none());
        assert!(parse(br#"{"status":"ok","result":1,"stdout":"x"}"#).is_none());
        assert!(parse(br#"{"status":"ok","result":NaN}"#).is_none());
        assert!(
            parse(br#"{"status":"ok","result":1,"files":[{"path":"/etc/x","content":""}]}"#)
                .is_none()
        );
        assert!(parse(b"").is_none());
    }

    #[test]
    fn output_files_come_back_checked_and_over_the_limit_are_a_problem() {
        let frame = br#"{"status":"ok","result":null,"files":[{"path":"a.csv","content":"eA=="}]}"#;
        let outcome = parse_frame(frame, &Limits::default()).unwrap();
        assert!(matches!(&outcome, Outcome::Success { files, .. } if files[0].size == 1));
        let tight = Limits {
            output_file_bytes: 0,
            ..Limits::default()
        };
        assert!(matches!(
            parse_frame(frame, &tight),
            Some(Outcome::OutputTooLarge(_))
        ));
    }

    #[test]
    fn deeply_nested_frames_are_refused_without_overflowing() {
        let deep = format!(
            r#"{{"status":"ok","result":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_frame(deep.as_bytes(), &Limits::default()).is_none());
    }
}
