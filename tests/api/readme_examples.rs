//! Every curl example in README.md runs against a live server.
//!
//! The README marks its examples explicitly: a fenced block whose info
//! string contains `example` (```` ```sh example ````) is run, and a
//! ```` ```text output ```` block right after it holds what it must print.
//! Each expected line must match one printed line, in order; `…` in an
//! expected line matches any text (ids, durations, keys). Any block that
//! calls `curl` without the mark fails the test, so no example goes unrun.
//!
//! The server is the real `pyexec serve` binary as `scripts/run.sh` starts
//! it: no `PYEXEC_API_KEY` (so it prints a generated key) and the default
//! `--policies policies`, in a scratch folder laid out like a checkout:
//! `policies/` (a copy of the shipped ones), `nsjail/` and
//! `target/debug/pyexec`. The examples get `PYEXEC_URL` and `KEY`, the two
//! variables the README tells the reader to set, and run one after another
//! as if pasted into one terminal: variables one example sets are seen by
//! the next.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{SpawnOptions, SpawnedServer, repo_path};

struct Block {
    info: String,
    body: String,
    line: usize,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        for (_, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        blocks.push(Block {
            info: info.trim().to_string(),
            body,
            line: n + 1,
        });
    }
    blocks
}

/// A line that calls curl, comments aside ("prints a curl line" is not one).
fn runs_curl(body: &str) -> bool {
    body.lines()
        .any(|line| line.split('#').next().unwrap_or("").contains("curl "))
}

fn has_word(info: &str, word: &str) -> bool {
    info.split_whitespace().any(|w| w == word)
}

/// An example and, when the next block is its `text output`, what it prints.
fn examples(markdown: &str) -> Vec<(Block, Option<String>)> {
    let blocks = fenced_blocks(markdown);
    let mut examples = Vec::new();
    let mut iter = blocks.into_iter().peekable();
    while let Some(block) = iter.next() {
        if !has_word(&block.info, "example") {
            assert!(
                !runs_curl(&block.body),
                "README.md line {}: a block that runs curl must be marked ```sh example",
                block.line
            );
            continue;
        }
        let expected = match iter.peek() {
            Some(next) if has_word(&next.info, "output") => iter.next().map(|b| b.body),
            _ => None,
        };
        examples.push((block, expected));
    }
    examples
}

/// `pattern` matches all of `line`, `…` standing for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = parts.split_first().unwrap();
    let Some(mut remaining) = line.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.is_empty()
}

/// Each non-empty expected line matches a printed line, in order.
fn check_output(expected: &str, actual: &str) -> Result<(), String> {
    let mut printed = actual.lines().map(str::trim_end);
    for want in expected
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
    {
        if !printed.any(|got| matches(want, got)) {
            return Err(format!("no printed line matches `{want}`"));
        }
    }
    Ok(())
}

/// A scratch folder shaped like a checkout after `scripts/run.sh`.
fn checkout_like(dir: &Path) {
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    };
    copy(&repo_path("policies"), &dir.join("policies"));
    copy(&repo_path("policies/keys"), &dir.join("policies/keys"));
    std::os::unix::fs::symlink(repo_path("nsjail"), dir.join("nsjail")).unwrap();
    std::fs::create_dir_all(dir.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_pyexec"),
        dir.join("target/debug/pyexec"),
    )
    .unwrap();
}

/// The key and the curl line the server printed when it generated its key.
fn printed_key_and_curl(server: &SpawnedServer) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = server.stderr_lines();
        let key = lines
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("pyx_"))
            .map(str::to_string);
        let curl_at = lines.iter().position(|l| l.trim().starts_with("curl "));
        if let (Some(key), Some(at)) = (key, curl_at) {
            if lines.len() >= at + 3 {
                return (key, lines[at..at + 3].join("\n"));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no generated key printed: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `script` with bash in `dir`, carrying exported state in `state`.
fn run_bash(
    dir: &Path,
    state: &Path,
    envs: &[(&str, &str)],
    script: &str,
) -> (bool, String, String) {
    // `set -a` exports every assignment, so `export -p` at exit hands the
    // example's variables to the next one, like one terminal would.
    let wrapped = format!(
        "set -a\n. {state}\ntrap 'export -p > {state}' EXIT\nset -e\n{script}",
        state = state.display()
    );
    let output = Command::new("timeout")
        .arg("120")
        .args(["bash", "-c", &wrapped])
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .expect("bash runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_curl_example_in_the_readme_works_against_a_live_server() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(examples.len() >= 5, "the README's examples were not found");

    let scratch = tempfile::tempdir().unwrap();
    checkout_like(scratch.path());
    let server = SpawnedServer::start_with(SpawnOptions {
        cwd: Some(scratch.path()),
        generate_key: true,
        ..SpawnOptions::default()
    });
    let url = server.api.base.clone();
    let state = scratch.path().join(".examples-state");
    std::fs::write(&state, "").unwrap();
    let envs = [("PYEXEC_URL", url.as_str())];

    // What `scripts/run.sh` prints is the reader's first step: the key and
    // a curl line that works as printed.
    let (key, printed_curl) = printed_key_and_curl(&server);
    let (ok, stdout, stderr) = run_bash(scratch.path(), &state, &envs, &printed_curl);
    assert!(ok, "the printed curl line failed: {stderr}");
    assert!(
        stdout.contains(r#""result":{"hello":"world"}"#),
        "the printed curl line answered {stdout}"
    );

    let envs = [
        ("PYEXEC_URL", url.as_str()),
        ("KEY", key.as_str()),
        ("PYEXEC_OPS_URL", server.api.ops_base.as_str()),
    ];
    for (block, expected) in &examples {
        let (ok, stdout, stderr) = run_bash(scratch.path(), &state, &envs, &block.body);
        let context = format!(
            "README.md line {}:\n{}\nprinted:\n{stdout}\nstderr:\n{stderr}",
            block.line, block.body
        );
        assert!(ok, "the example failed. {context}");
        if let Some(expected) = expected {
            if let Err(e) = check_output(expected, &stdout) {
                panic!("{e}. {context}");
            }
        }
    }
}

#[test]
fn output_patterns_match_as_documented() {
    assert!(matches("a…c", "abbbc"));
    assert!(matches("x-cache: HIT", "x-cache: HIT"));
    assert!(!matches("x-cache: HIT", "x-cache: MISS"));
    assert!(matches(
        r#"{"duration_ms":…,"ok":true}"#,
        r#"{"duration_ms":12,"ok":true}"#
    ));
    assert!(!matches("a…c", "abd"));
    assert!(check_output("one\nthree\n", "one\ntwo\nthree\n").is_ok());
    assert!(check_output("three\none\n", "one\ntwo\nthree\n").is_err());
}
