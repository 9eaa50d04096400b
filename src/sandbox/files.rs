//! Files a run starts with (the request's, which the harness writes under
//! `/tmp` before the script runs) and files it leaves (under `/tmp/out`,
//! returned with the result): one rule for their paths both ways, and their
//! bytes as base64 on the jail's channels.
//!
//! The gateway writes nothing to disk: input files travel on the run's stdin
//! with the script, into a `/tmp` no other run sees, and output files come
//! back in the harness's frame on the result fd, checked here as strictly as
//! the result itself (a frame says no more than the script could).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::limits::Limits;

/// Folders a file's path may hold below its root (`a/b/c.csv` is 3 levels).
pub const MAX_PATH_DEPTH: usize = 8;
/// A path component's length (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// The folder, below the run's `/tmp`, whose files come back.
pub const OUTPUT_DIR: &str = "out";

/// A file as it crosses a channel of the jail: its path relative to its
/// root and its content, base64 (RFC 4648, padded). The text is canonical
/// (the decoder refuses non-zero padding bits), so it identifies the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    pub path: String,
    pub content: String,
}

/// A file a run left in `/tmp/out`, checked: `size` is its decoded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    pub content: String,
}

/// The decoded length of base64 `text`, or why it is not base64.
pub fn decoded_len(text: &str) -> Result<u64, String> {
    STANDARD
        .decode(text)
        .map(|bytes| bytes.len() as u64)
        .map_err(|e| format!("is not base64 ({e})"))
}

/// `raw` as a plain relative path (`./a//b.csv` is `a/b.csv`), or what is
/// wrong with it: absolute, `..`, NUL, empty, too deep or a name too long.
pub fn normalize_path(raw: &str) -> Result<String, String> {
    if raw.contains('\0') {
        return Err("contains a NUL character".into());
    }
    if raw.starts_with('/') {
        return Err("is absolute; paths are relative to the run's folder".into());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err("contains `..`".into()),
            name if name.len() > MAX_NAME_BYTES => {
                return Err(format!("has a name longer than {MAX_NAME_BYTES} bytes"));
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return Err("names no file".into());
    }
    if parts.len() > MAX_PATH_DEPTH {
        return Err(format!("is more than {MAX_PATH_DEPTH} levels deep"));
    }
    Ok(parts.join("/"))
}

/// Why a frame's output files are not returned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OutputRefused {
    /// Over the run's count or byte limit.
    TooLarge(String),
    /// Not what the harness writes: the frame is not a result.
    Malformed,
}

/// The output files of a frame, checked against the run's limits: plain
/// paths, each once and in order, valid base64, within the count and bytes.
pub(super) fn check_output(
    files: Vec<RunFile>,
    limits: &Limits,
) -> Result<Vec<OutputFile>, OutputRefused> {
    if files.len() as u64 > limits.output_files {
        return Err(OutputRefused::TooLarge(too_many_files(limits)));
    }
    let mut total = 0u64;
    let mut checked: Vec<OutputFile> = Vec::with_capacity(files.len());
    for RunFile { path, content } in files {
        let plain = normalize_path(&path).map_err(|_| OutputRefused::Malformed)?;
        let in_order = checked.last().is_none_or(|last| last.path < plain);
        if plain != path || !in_order {
            return Err(OutputRefused::Malformed);
        }
        let size = decoded_len(&content).map_err(|_| OutputRefused::Malformed)?;
        total += size;
        if total > limits.output_file_bytes {
            return Err(OutputRefused::TooLarge(too_many_bytes(limits)));
        }
        checked.push(OutputFile {
            path,
            size,
            content,
        });
    }
    Ok(checked)
}

pub(super) fn too_many_files(limits: &Limits) -> String {
    format!(
        "the script left more than {} files in /tmp/out, the tenant's maxOutputFiles",
        limits.output_files
    )
}

pub(super) fn too_many_bytes(limits: &Limits) -> String {
    format!(
        "the files the script left in /tmp/out hold more than {} bytes, the tenant's maxOutputFileBytes",
        limits.output_file_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused_with_the_reason() {
        assert_eq!(normalize_path("data.csv").unwrap(), "data.csv");
        assert_eq!(normalize_path("./in//x/y.csv").unwrap(), "in/x/y.csv");
        assert_eq!(normalize_path("a/b/").unwrap(), "a/b");
        for bad in [
            "",
            ".",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\0b",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_path(&"n".repeat(256)).is_err());
        assert!(normalize_path(&"n".repeat(255)).is_ok());
        assert!(normalize_path("a/b/c/d/e/f/g/h").is_ok());
    }

    #[test]
    fn base64_must_be_canonical_and_padded() {
        assert_eq!(decoded_len("aGVsbG8=").unwrap(), 5);
        assert_eq!(decoded_len("").unwrap(), 0);
        for bad in ["aGVsbG8", "aGVsbG9=", "not base64!", "aGVs bG8="] {
            assert!(decoded_len(bad).is_err(), "{bad}");
        }
    }

    fn file(path: &str, content: &str) -> RunFile {
        RunFile {
            path: path.into(),
            content: content.into(),
        }
    }

    #[test]
    fn output_files_are_checked_against_the_limits_and_the_harness_shape() {
        let limits = Limits {
            output_files: 2,
            output_file_bytes: 8,
            ..Limits::default()
        };
        let ok = check_output(vec![file("a.csv", "aGVsbG8="), file("b/c", "")], &limits).unwrap();
        assert_eq!((ok[0].size, ok[1].size), (5, 0));
        let three = vec![file("a", ""), file("b", ""), file("c", "")];
        assert!(matches!(
            check_output(three, &limits),
            Err(OutputRefused::TooLarge(_))
        ));
        let big = vec![file("a", "aGVsbG8="), file("b", "aGVsbG8=")];
        assert!(matches!(
            check_output(big, &limits),
            Err(OutputRefused::TooLarge(_))
        ));
        for malformed in [
            vec![file("b", ""), file("a", "")],
            vec![file("a", ""), file("a", "")],
            vec![file("./a", "")],
            vec![file("../a", "")],
            vec![file("a", "!!")],
        ] {
            assert_eq!(
                check_output(malformed.clone(), &limits),
                Err(OutputRefused::Malformed),
                "{malformed:?}"
            );
        }
    }
}
