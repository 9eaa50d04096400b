//! The attack corpus: every hostile script under `tests/attacks/<class>/`
//! runs through real HTTP against the real nsjail sandbox, and its answer must
//! match the expectation in the script's header. After every batch the test
//! proves that nothing of those runs is left: no run cgroup, no process in this
//! server's cgroups, no new mount, no file a jailed user created on the host.
//!
//! The same files generate the results table of SECURITY.md; a test keeps the
//! two in step (`PYEXEC_UPDATE_SECURITY_TABLE=1 cargo test --test api attack_corpus::
//! security_md` rewrites it).
//!
//! `PYEXEC_SANDBOX_MODE=cold|warm` selects the sandbox mode, as for the rest of
//! the suite (see `crate::common::forced_mode_from_env`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{
    API_KEY, PolicyDir, Response, TestServer, policy_server_config, repo_path, tenant_yaml,
};
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

/// Runs at once: the suite's sandbox has 4 slots.
const PARALLEL: usize = 4;
/// A value the server's own environment holds; no response may ever show it.
const CANARY_VAR: &str = "PYEXEC_CORPUS_SECRET_CANARY";
const CANARY: &str = "canary-8d1f0c4e-not-for-the-jail";
/// The tenant whose runs the cross-run class attacks (the attacker uses the
/// server's bootstrap key, another tenant).
const VICTIM_KEY: &str = "pyx_corpus_victim_tenant_key";
/// A tenant allowed one CPU-second per run (`tenant: one-cpu-second`).
const ONE_CPU_SECOND_KEY: &str = "pyx_corpus_one_cpu_second_key";
/// Follow-up requests of the victim's tenant after each cross-run attack;
/// each must answer 200 well within its own wall limit.
const FOLLOW_UPS: usize = 4;
const FOLLOW_UP_TIMEOUT_MS: u64 = 5000;
/// The victim: in flight while the attack runs, it records every signal it
/// receives and whether its CPU or I/O priority changed under it.
const VICTIM_SCRIPT: &str = r#"
import ctypes, os, signal, time

def main():
    got = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, lambda s, f: got.append(signal.Signals(s).name))
    libc = ctypes.CDLL(None, use_errno=True)
    priority = lambda: (os.getpriority(os.PRIO_PROCESS, 0), libc.syscall(252, 1, 0))
    before = priority()
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"signals": got, "priority_unchanged": priority() == before}
"#;
/// How long after the victim starts the attack is sent.
const VICTIM_HEAD_START: Duration = Duration::from_millis(600);

const TABLE_START: &str = "<!-- attack-corpus-table:start -->";
const TABLE_END: &str = "<!-- attack-corpus-table:end -->";

#[derive(Debug, Clone)]
struct Expected {
    status: u16,
    /// The problem type suffix; `None` for a 200.
    problem: Option<String>,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Some(p) => write!(f, "{} {}", self.status, p),
            None => write!(f, "{}", self.status),
        }
    }
}

/// One hostile script and what must come of it, read from its header.
#[derive(Debug, Clone)]
struct Case {
    /// `class/name`, from the file's place in the corpus.
    id: String,
    /// The file, relative to the repository.
    file: String,
    class: String,
    attack: String,
    stopped_by: String,
    /// Any of these answers is right (e.g. a thread bomb may fail to start
    /// threads or be stopped by the pids limit, depending on timing).
    expect: Vec<Expected>,
    /// For a 200: the exact `result` the script must return.
    result: Option<Value>,
    /// Strings that must appear nowhere in the response.
    forbid: Vec<String>,
    timeout_ms: Option<u64>,
    /// The tenant the script runs as: the bootstrap tenant, or one of the
    /// corpus server's own (`one-cpu-second`).
    tenant: Option<String>,
    /// A text the problem's `detail` must contain.
    detail: Option<String>,
    /// Sent while another tenant's run is in flight (`cross-run: victim`);
    /// that run and the tenant's next requests must all answer 200.
    against_victim: bool,
    /// A host-side check made while the run holds what it took
    /// (`inotify`, `timer`): the host's own budgets must still answer.
    probe: Option<String>,
    /// Copies run at once (the concurrency class); a healthy client keeps
    /// running alongside them and must get 200s throughout.
    concurrent: usize,
    script: String,
}

const CLASSES: &[&str] = &[
    "secrets",
    "filesystem",
    "network",
    "processes",
    "resources",
    "result-channel",
    "abnormal-exits",
    "concurrency",
    "cross-run",
];

fn corpus_dir() -> PathBuf {
    repo_path("tests/attacks")
}

fn load_corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for class in CLASSES {
        let dir = corpus_dir().join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "py"))
            .collect();
        files.sort();
        for file in files {
            cases.push(parse_case(class, &file));
        }
    }
    cases
}

/// The header is the leading `# key: value` lines; a key may repeat
/// (`forbid`) or continue on lines starting with `#   ` (`attack`, `result`).
fn parse_case(class: &str, file: &Path) -> Case {
    let script = std::fs::read_to_string(file).unwrap();
    let id = format!(
        "{class}/{}",
        file.file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('_', "-")
    );
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in script.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        if let Some(more) = comment.strip_prefix("   ") {
            let last = fields
                .last_mut()
                .unwrap_or_else(|| panic!("{id}: continuation before any key"));
            last.1.push(' ');
            last.1.push_str(more.trim());
        } else if let Some((key, value)) = comment.trim().split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let required = |key: &str| get(key).unwrap_or_else(|| panic!("{id}: missing `# {key}:`"));
    let expect = required("expect")
        .split('|')
        .map(|alt| {
            let mut parts = alt.split_whitespace();
            let status = parts.next().unwrap().parse().unwrap();
            Expected {
                status,
                problem: parts.next().map(str::to_string),
            }
        })
        .collect();
    let result = get("result").map(|r| {
        serde_json::from_str(&r).unwrap_or_else(|e| panic!("{id}: bad `result` JSON: {e}"))
    });
    for (key, _) in &fields {
        assert!(
            [
                "attack",
                "stopped-by",
                "expect",
                "result",
                "forbid",
                "timeout_ms",
                "concurrent",
                "tenant",
                "detail",
                "probe",
                "cross-run"
            ]
            .contains(&key.as_str()),
            "{id}: unknown header key `{key}`"
        );
    }
    Case {
        class: class.to_string(),
        attack: required("attack"),
        stopped_by: required("stopped-by"),
        expect,
        result,
        forbid: fields
            .iter()
            .filter(|(k, _)| k == "forbid")
            .map(|(_, v)| v.clone())
            .collect(),
        timeout_ms: get("timeout_ms").map(|t| t.parse().unwrap()),
        tenant: get("tenant"),
        detail: get("detail"),
        probe: get("probe"),
        against_victim: match get("cross-run").as_deref() {
            None => false,
            Some("victim") => true,
            Some(other) => panic!("{id}: unknown `cross-run: {other}`"),
        },
        concurrent: get("concurrent").map_or(1, |c| c.parse().unwrap()),
        file: format!(
            "tests/attacks/{class}/{}",
            file.file_name().unwrap().to_string_lossy()
        ),
        script,
        id,
    }
}

/// What no response may contain, whatever the script did.
fn always_forbidden() -> Vec<String> {
    vec![
        API_KEY.to_string(),
        CANARY.to_string(),
        env!("CARGO_MANIFEST_DIR").to_string(),
        "/sys/fs/cgroup".to_string(),
        format!("pyexec-{}-", std::process::id()),
        "/opt/pyexec/bin".to_string(),
    ]
}

/// The script with its placeholders filled in.
fn script_for(case: &Case, server: &TestServer) -> String {
    let port = server.base.rsplit(':').next().unwrap();
    case.script
        .replace("{{GATEWAY_PORT}}", port)
        .replace("{{REPO}}", env!("CARGO_MANIFEST_DIR"))
}

/// A response, and what the host-side probe saw while the run was held.
struct Answer {
    response: Response,
    probe_failure: Option<String>,
}

async fn send(server: &TestServer, case: &Case) -> Answer {
    let mut body = json!({ "script": script_for(case, server), "cache": false });
    if let Some(ms) = case.timeout_ms {
        body["timeout_ms"] = json!(ms);
    }
    let key = match case.tenant.as_deref() {
        None => API_KEY,
        Some("one-cpu-second") => ONE_CPU_SECOND_KEY,
        Some(other) => panic!("{}: unknown tenant `{other}`", case.id),
    };
    let sent = server.execute_with_key(body, key);
    match case.probe.as_deref() {
        None => Answer {
            response: sent.await,
            probe_failure: None,
        },
        Some(probe) => {
            let probed = async {
                // The scripts take what they can at once, then hold it 2 s.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                host_probe(probe)
            };
            let (response, probed) = tokio::join!(sent, probed);
            Answer {
                response,
                probe_failure: probed
                    .err()
                    .map(|e| format!("host probe `{probe}` failed during the run: {e}")),
            }
        }
    }
}

/// Uses, as root on the host, the per-user kernel budget a script may have
/// tried to exhaust.
fn host_probe(probe: &str) -> Result<(), std::io::Error> {
    // SAFETY: plain system calls on resources created and released here.
    unsafe {
        match probe {
            "inotify" => {
                let fd = libc::inotify_init1(libc::IN_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            "timer" => {
                let mut timer: libc::timer_t = std::ptr::null_mut();
                if libc::timer_create(libc::CLOCK_MONOTONIC, std::ptr::null_mut(), &mut timer) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::timer_delete(timer);
            }
            other => panic!("unknown probe `{other}`"),
        }
    }
    Ok(())
}

/// Everything wrong with one answer (empty when it is as expected).
fn check(case: &Case, answer: &Answer) -> Vec<String> {
    let r = &answer.response;
    let mut problems = Vec::new();
    let got = (r.status, (r.status != 200).then(|| r.problem().to_string()));
    if !case
        .expect
        .iter()
        .any(|e| (e.status, e.problem.clone()) == got)
    {
        let wanted: Vec<String> = case.expect.iter().map(|e| e.to_string()).collect();
        problems.push(format!(
            "expected {}, got {} {}: {}",
            wanted.join(" or "),
            r.status,
            r.problem(),
            truncate(&r.body.to_string(), 600)
        ));
    }
    if let Some(failure) = &answer.probe_failure {
        problems.push(failure.clone());
    }
    if let (Some(detail), true) = (&case.detail, r.status != 200) {
        let got = r.body["detail"].as_str().unwrap_or("");
        if !got.contains(detail.as_str()) {
            problems.push(format!("detail `{got}` does not say `{detail}`"));
        }
    }
    if let (Some(expected), 200) = (&case.result, r.status) {
        if &r.body["result"] != expected {
            problems.push(format!(
                "result {} is not {expected}",
                truncate(&r.body["result"].to_string(), 600)
            ));
        }
    }
    let text = r.body.to_string();
    let headers = format!("{:?}", r.headers);
    for needle in always_forbidden().iter().chain(&case.forbid) {
        if text.contains(needle.as_str()) || headers.contains(needle.as_str()) {
            problems.push(format!("the response shows `{needle}`"));
        }
    }
    problems
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// What the host looks like outside any run, to compare after each batch.
struct HostBaseline {
    mounts: BTreeSet<String>,
}

impl HostBaseline {
    fn take() -> Self {
        Self { mounts: mounts() }
    }

    /// Everything a finished run left behind on the host, once its teardown
    /// (which the answer does not wait for) is over.
    async fn leftovers(&self, server: &TestServer) -> Vec<String> {
        let mut found = Vec::new();
        let sandbox = server.sandbox.as_ref().expect("an in-process server");
        if tokio::time::timeout(Duration::from_secs(30), sandbox.wait_until_idle())
            .await
            .is_err()
        {
            found.push("a run's teardown did not finish within 30 s".into());
        }
        for dir in sandbox.live_run_cgroups() {
            found.push(format!("run cgroup {} still exists", dir.display()));
        }
        // Run groups only: a warm zygote's own group holds it and its idle
        // runners between requests, by design. This server's only: other
        // tests of the suite run their own servers in this process meanwhile.
        let instance = sandbox
            .cgroup_instance()
            .expect("the corpus runs with cgroups");
        let ours = format!("/{instance}/run-");
        for (pid, cgroups) in processes() {
            if cgroups.contains(&ours) {
                found.push(format!("process {pid} is still in a run cgroup"));
            }
        }
        for mount in mounts().difference(&self.mounts) {
            found.push(format!("new mount: {mount}"));
        }
        for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                use std::os::unix::fs::MetadataExt;
                // nsjail's own mount-point folders (`/tmp/nsjail.<uid>.root`,
                // `.tmp`), created once and reused empty by every jail.
                let name = entry.file_name().to_string_lossy().into_owned();
                let nsjail_mount_point = name.starts_with("nsjail.")
                    && std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
                if !nsjail_mount_point && entry.metadata().is_ok_and(|m| m.uid() == 65534) {
                    found.push(format!(
                        "{} belongs to the jail's user",
                        entry.path().display()
                    ));
                }
            }
        }
        found
    }
}

/// The host's mount table, without the ids that change between reads.
fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Every process with its `/proc/<pid>/cgroup`.
fn processes() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            Some((pid, cgroups))
        })
        .collect()
}

/// Runs `case.concurrent` copies at once while a healthy client keeps asking.
async fn run_concurrently(server: &TestServer, case: &Case) -> Vec<String> {
    let hostile = futures_util::future::join_all((0..case.concurrent).map(|_| send(server, case)));
    let done = std::sync::atomic::AtomicBool::new(false);
    let healthy = async {
        let mut answers = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) || answers.is_empty() {
            let r = server
                .execute(json!({"script": "def main(n):\n    return n * 2", "args": {"n": answers.len()}}))
                .await;
            answers.push((r.status, r.body["result"].clone(), answers.len()));
        }
        answers
    };
    let hostile = async {
        let responses = hostile.await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        responses
    };
    let (responses, healthy) = tokio::join!(hostile, healthy);
    let mut problems: Vec<String> = responses
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            check(case, r)
                .into_iter()
                .map(move |p| format!("copy {i}: {p}"))
        })
        .collect();
    for (status, result, n) in healthy {
        if status != 200 || result != json!(n * 2) {
            problems.push(format!(
                "the healthy client's request {n} got {status} {result}"
            ));
        }
    }
    problems
}

/// Sends the attack while another tenant's run is in flight, then more of
/// that tenant's requests: the attack must reach none of them.
async fn run_against_victim(server: &TestServer, case: &Case) -> Vec<String> {
    let victim = server.execute_with_key(
        json!({"script": VICTIM_SCRIPT, "cache": false, "timeout_ms": 15000}),
        VICTIM_KEY,
    );
    let attack = async {
        tokio::time::sleep(VICTIM_HEAD_START).await;
        send(server, case).await
    };
    let (victim, attack) = tokio::join!(victim, attack);
    let mut problems = check(case, &attack);
    if victim.status != 200
        || victim.body["result"] != json!({"signals": [], "priority_unchanged": true})
    {
        problems.push(format!(
            "the other tenant's run in flight got {}: {}",
            victim.status,
            truncate(&victim.body.to_string(), 600)
        ));
    }
    // Runners waiting in the pool during the attack serve these.
    for n in 0..FOLLOW_UPS {
        let body = json!({
            "script": "def main(n):\n    return n * 2",
            "args": {"n": n},
            "cache": false,
            "timeout_ms": FOLLOW_UP_TIMEOUT_MS,
        });
        let r = server.execute_with_key(body, VICTIM_KEY).await;
        if r.status != 200 || r.body["result"] != json!(n * 2) {
            problems.push(format!(
                "the other tenant's request {n} after the attack got {}: {}",
                r.status,
                truncate(&r.body.to_string(), 400)
            ));
        }
    }
    problems
}

/// The corpus server's own tenants besides the bootstrap one (the attacker).
fn corpus_policies() -> PolicyDir {
    let policies = PolicyDir::new();
    policies.write("victim", &tenant_yaml("victim", VICTIM_KEY, ""));
    policies.write(
        "one-cpu-second",
        &tenant_yaml(
            "one-cpu-second",
            ONE_CPU_SECOND_KEY,
            "  sandbox:\n    cpuSeconds: 1\n    wallTimeoutMs: 20000\n",
        ),
    );
    policies
}

#[test]
fn every_attack_in_the_corpus_is_contained() {
    assert_eq!(
        std::env::var(CANARY_VAR).as_deref(),
        Ok(CANARY),
        "the gateway's environment must hold the canary (.cargo/config.toml sets it)"
    );
    let policies = corpus_policies();
    let server = TestServer::start(policy_server_config(policies.path()), true);
    let cases = load_corpus();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let baseline = HostBaseline::take();
    let mut failures = Vec::new();
    let (against_victim, rest): (Vec<&Case>, Vec<&Case>) =
        cases.iter().partition(|c| c.against_victim);
    let (single, concurrent): (Vec<&Case>, Vec<&Case>) =
        rest.into_iter().partition(|c| c.concurrent == 1);
    runtime.block_on(async {
        for batch in single.chunks(PARALLEL) {
            let answers: Vec<(&Case, Vec<String>, Duration)> = stream::iter(batch)
                .map(|case| async {
                    let t = Instant::now();
                    let r = send(&server, case).await;
                    (*case, check(case, &r), t.elapsed())
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
            let leftovers = baseline.leftovers(&server).await;
            for (case, problems, took) in answers {
                eprintln!(
                    "{:<48} {:>6} ms {}",
                    case.id,
                    took.as_millis(),
                    if problems.is_empty() { "ok" } else { "FAILED" }
                );
                failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.id)));
                failures.extend(
                    leftovers
                        .iter()
                        .map(|l| format!("{} (or its batch): left behind: {l}", case.id)),
                );
            }
        }
        // One at a time: each of these needs the whole sandbox to itself.
        let alone = against_victim
            .into_iter()
            .map(|case| (case, true))
            .chain(concurrent.into_iter().map(|case| (case, false)));
        for (case, against_victim) in alone {
            let t = Instant::now();
            let problems = if against_victim {
                run_against_victim(&server, case).await
            } else {
                run_concurrently(&server, case).await
            };
            eprintln!(
                "{:<48} {:>6} ms {}",
                case.id,
                t.elapsed().as_millis(),
                if problems.is_empty() { "ok" } else { "FAILED" }
            );
            failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.id)));
            failures.extend(
                baseline
                    .leftovers(&server)
                    .await
                    .into_iter()
                    .map(|l| format!("{}: left behind: {l}", case.id)),
            );
        }
    });
    eprintln!(
        "attack corpus: {} cases in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_has_at_least_60_cases_in_every_class() {
    let cases = load_corpus();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    for class in CLASSES {
        let n = cases.iter().filter(|c| &c.class == class).count();
        assert!(n >= 1, "class {class} is empty");
    }
}

/// The SECURITY.md table, generated from the corpus headers.
fn render_table(cases: &[Case]) -> String {
    let mut table = String::from(
        "| class | case | attack | answer | stopped by |\n| --- | --- | --- | --- | --- |\n",
    );
    for case in cases {
        // A 200 shows the exact result the script must return.
        let answer: Vec<String> = case
            .expect
            .iter()
            .map(|e| match (&case.result, e.status) {
                (Some(result), 200) => format!("`200` `{result}`"),
                _ => format!("`{e}`"),
            })
            .collect();
        let mut answer = answer.join(" or ");
        if !case.forbid.is_empty() {
            let forbid: Vec<String> = case.forbid.iter().map(|f| format!("`{f}`")).collect();
            write!(answer, "; never shows {}", forbid.join(", ")).unwrap();
        }
        let name = case.id.split_once('/').unwrap().1;
        writeln!(
            table,
            "| {} | [{name}]({}) | {} | {} | {} |",
            case.class,
            case.file,
            case.attack.replace('|', "\\|"),
            answer,
            case.stopped_by.replace('|', "\\|")
        )
        .unwrap();
    }
    table
}

#[test]
fn security_md_shows_the_corpus_results_table() {
    let path = repo_path("SECURITY.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (before, rest) = text
        .split_once(TABLE_START)
        .expect("SECURITY.md has the table start marker");
    let (current, after) = rest
        .split_once(TABLE_END)
        .expect("SECURITY.md has the table end marker");
    let cases = load_corpus();
    let wanted = format!("\n{}", render_table(&cases));
    if current != wanted {
        if std::env::var("PYEXEC_UPDATE_SECURITY_TABLE").as_deref() == Ok("1") {
            std::fs::write(
                &path,
                format!("{before}{TABLE_START}{wanted}{TABLE_END}{after}"),
            )
            .unwrap();
        } else {
            panic!(
                "SECURITY.md's table does not match tests/attacks/; regenerate it with\n  PYEXEC_UPDATE_SECURITY_TABLE=1 cargo test --test api attack_corpus::security_md"
            );
        }
    }
}
