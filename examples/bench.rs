//! Cold vs warm benchmark of the real server over HTTP, with the machine's own
//! fork floor measured in the same run. Run it with `bash scripts/bench.sh`
//! (release build); it prints markdown tables for the README.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const API_KEY: &str = "pyx_benchmark_key";

const TRIVIAL: &str = "def main():\n    return {\"ok\": True}";
/// The seed README's pandas/numpy example, verbatim.
const SEED_PANDAS: &str = "def main():\n    import pandas as pd\n    import numpy as np\n    \n    # Create sample data\n    data = pd.DataFrame({\n        'values': np.random.randint(1, 100, 10)\n    })\n    \n    return {\n        \"mean\": float(data['values'].mean()),\n        \"max\": int(data['values'].max()),\n        \"count\": len(data)\n    }\n";

/// fork + wait of a pandas-loaded interpreter inside the same jail: the
/// floor any fork-per-request design pays on this machine. Also the CPU one
/// such cycle costs, bare and with the seed example run in the child (read
/// from /seed.py): what fork-per-request costs before any HTTP, auth,
/// namespace, cgroup or limit, so the most requests per second this machine
/// could serve that way.
const FLOOR_SCRIPT: &str = r#"
import gc, json, os, sys, time
import numpy, pandas
seed = compile(open("/seed.py").read(), "<seed>", "exec")
def run_seed():
    namespace = {}
    exec(seed, namespace)
    json.dumps(namespace["main"]())
run_seed()
gc.collect()
gc.freeze()
def cycles(n, child):
    latencies = []
    cpu = time.process_time()
    children = os.times()
    for _ in range(n):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            child()
            os._exit(0)
        os.waitpid(pid, 0)
        latencies.append((time.perf_counter() - start) * 1000)
    after = os.times()
    cpu_ms = (time.process_time() - cpu + after.children_user + after.children_system
              - children.children_user - children.children_system) * 1000 / n
    latencies.sort()
    return latencies, cpu_ms
n = int(sys.argv[1])
bare, bare_cpu = cycles(n, lambda: None)
_, seed_cpu = cycles(n, run_seed)
print(json.dumps({"p50": bare[len(bare) // 2], "p99": bare[int(len(bare) * 0.99)],
                  "cpu_ms": bare_cpu, "seed_cpu_ms": seed_cpu}))
"#;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(binary: &Path, mode: &str) -> Server {
    let port = free_port();
    // One tenant, the bootstrap key's, which then has every slot: the
    // repository's example policies would add three more and give it half
    // (the fair share), which measures the share, not the machine.
    let policies = std::env::temp_dir().join(format!("pyexec-bench-policies-{port}"));
    std::fs::create_dir_all(&policies).expect("a temporary folder");
    let child = Command::new(binary)
        .args(["--log-format", "json", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--nsjail-dir")
        .arg(repo().join("nsjail"))
        .arg("--policies")
        .arg(&policies)
        .env("PYEXEC_API_KEY", API_KEY)
        .env("PYEXEC_SANDBOX_MODE", mode)
        .env("PYEXEC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the pyexec binary starts");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(client: &reqwest::Client, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server never became ready");
}

async fn execute(client: &reqwest::Client, server: &Server, script: &str) -> Duration {
    let start = Instant::now();
    let response = client
        .post(format!("{}/execute", server.base))
        .bearer_auth(API_KEY)
        .json(&json!({ "script": script }))
        .send()
        .await
        .expect("request answered");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "benchmark request failed: {body}");
    start.elapsed()
}

/// One request, end to end, with the server's own account of its phases
/// (`Server-Timing`, milliseconds).
async fn execute_timed(
    client: &reqwest::Client,
    server: &Server,
    script: &str,
) -> (f64, Vec<(String, f64)>) {
    let start = Instant::now();
    let response = client
        .post(format!("{}/execute", server.base))
        .bearer_auth(API_KEY)
        .json(&json!({ "script": script, "cache": false }))
        .send()
        .await
        .expect("request answered");
    let timing = response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let status = response.status();
    let _ = response.bytes().await;
    let took = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 200, "benchmark request failed");
    let phases = timing
        .split(", ")
        .filter_map(|m| m.split_once(";dur="))
        .filter_map(|(name, ms)| Some((name.to_string(), ms.parse().ok()?)))
        .collect();
    (took, phases)
}

/// Back to back on one kept-alive connection, `n` requests: per phase and
/// end to end, p50/p90/p99/max in ms, and what the request spent outside its
/// script (end to end minus `run`) at the median.
async fn back_to_back(
    client: &reqwest::Client,
    server: &Server,
    name: &str,
    script: &str,
    n: usize,
) {
    let mut by_phase: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut end_to_end = Vec::with_capacity(n);
    let mut outside = Vec::with_capacity(n);
    for _ in 0..n {
        let (took, phases) = execute_timed(client, server, script).await;
        let run = phases
            .iter()
            .find(|(p, _)| p == "run")
            .map_or(0.0, |(_, ms)| *ms);
        end_to_end.push(took);
        outside.push(took - run);
        for (phase, ms) in phases {
            by_phase.entry(phase).or_default().push(ms);
        }
    }
    let stats = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
        (at(0.5), at(0.9), at(0.99), *values.last().unwrap())
    };
    println!("\nBack to back, {name}, {n} requests on one connection (ms):\n");
    println!("| phase | p50 | p90 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut rows: Vec<(String, Vec<f64>)> = by_phase.into_iter().collect();
    rows.push(("end to end".into(), end_to_end));
    rows.push(("outside the script".into(), outside));
    for (phase, mut values) in rows {
        let (p50, p90, p99, max) = stats(&mut values);
        println!("| {phase} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} |");
        if phase == "end to end" {
            println!("| (p99 / p50) | {:.1}× | | (≤ 2.5×) | |", p99 / p50);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
}

async fn sequential(client: &reqwest::Client, server: &Server, script: &str, n: usize) -> Latency {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(execute(client, server, script).await);
    }
    samples.sort();
    Latency {
        p50: percentile(&samples, 0.50),
        p95: percentile(&samples, 0.95),
        p99: percentile(&samples, 0.99),
    }
}

async fn throughput(
    client: &reqwest::Client,
    server: &Server,
    script: &str,
    concurrency: usize,
    total: usize,
) -> Rate {
    let next = Arc::new(AtomicU64::new(0));
    let busy_before = busy_cpu_seconds();
    let start = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let next = next.clone();
        async move {
            while next.fetch_add(1, Ordering::Relaxed) < total as u64 {
                execute(client, server, script).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
    Rate {
        concurrency,
        per_second: total as f64 / start.elapsed().as_secs_f64(),
        cpu_ms: (busy_cpu_seconds() - busy_before) * 1000.0 / total as f64,
    }
}

struct Rate {
    concurrency: usize,
    per_second: f64,
    /// CPU time the whole machine spent per request (this client included).
    cpu_ms: f64,
}

/// CPU seconds all cores have spent busy since boot (`/proc/stat`).
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy / ticks
}

/// Proportional set size of a process and all its descendants, in MiB:
/// shared pages (the zygote's pandas) are counted once across the tree.
fn tree_pss_mib(root: u32) -> f64 {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let pid = pids[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    pids.sort();
    pids.dedup();
    let kib: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|rollup| {
            let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    kib as f64 / 1024.0
}

/// What [`FLOOR_SCRIPT`] measured.
struct Floor {
    p50: f64,
    p99: f64,
    /// CPU of one fork + exit, parent and child together.
    cpu_ms: f64,
    /// The same with the seed example run in the child.
    seed_cpu_ms: f64,
}

fn measure_floor(samples: usize) -> Floor {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("floor.py");
    std::fs::write(&script, FLOOR_SCRIPT).unwrap();
    let seed = dir.path().join("seed.py");
    std::fs::write(&seed, SEED_PANDAS).unwrap();
    let nsjail_dir = repo().join("nsjail");
    let mut command = Command::new("/opt/pyexec/bin/nsjail");
    command
        .arg("--config")
        .arg(nsjail_dir.join("base.cfg"))
        .args([
            "--really_quiet",
            "--proc_path",
            "/proc",
            "--time_limit",
            "120",
        ])
        .args(["--mount", "none:/tmp:tmpfs:size=1048576"])
        .args(["--bindmount_ro", "/opt/pyexec/python"])
        .arg("--bindmount_ro")
        .arg(format!("{}:/floor.py", script.display()))
        .arg("--bindmount_ro")
        .arg(format!("{}:/seed.py", seed.display()))
        .args([
            "--env",
            "OPENBLAS_NUM_THREADS=1",
            "--env",
            "OMP_NUM_THREADS=1",
        ]);
    for name in pyexec::sandbox::limits::PASSTHROUGH_ENV {
        if let Ok(value) = std::env::var(name) {
            command.arg("--env").arg(format!("{name}={value}"));
        }
    }
    let output = command
        .args(["--", "/opt/pyexec/python/bin/python3", "-I", "/floor.py"])
        .arg(samples.to_string())
        .output()
        .expect("nsjail runs the floor probe");
    let value: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "floor probe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let figure = |name: &str| value[name].as_f64().unwrap();
    Floor {
        p50: figure("p50"),
        p99: figure("p99"),
        cpu_ms: figure("cpu_ms"),
        seed_cpu_ms: figure("seed_cpu_ms"),
    }
}

/// The kernel's transparent huge page settings for anonymous memory: the
/// mode, then every folio size not set to "never". They move the cost of fork
/// and exit, so every figure here depends on them (64 KiB folios made fork +
/// exit of the zygote ~25 % cheaper on this project's machine).
fn anonymous_huge_pages() -> String {
    let base = Path::new("/sys/kernel/mm/transparent_hugepage");
    let selected = |path: &Path| {
        let text = std::fs::read_to_string(path).ok()?;
        let start = text.find('[')? + 1;
        let end = text[start..].find(']')? + start;
        Some(text[start..end].to_string())
    };
    let Some(mode) = selected(&base.join("enabled")) else {
        return "unknown".to_string();
    };
    let mut sizes: Vec<(u64, String)> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let kib = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let setting = selected(&entry.path().join("enabled"))?;
            (setting != "never").then_some((kib, setting))
        })
        .collect();
    sizes.sort();
    let sizes: Vec<String> = sizes
        .iter()
        .map(|(kib, setting)| format!("{kib} KiB {setting}"))
        .collect();
    if sizes.is_empty() {
        return format!("{mode} (no folio size enabled)");
    }
    format!("{mode} (folio sizes: {})", sizes.join(", "))
}

/// One script's figures: its latency and its throughput per concurrency.
struct ScriptResult {
    name: &'static str,
    latency: Latency,
    rates: Vec<Rate>,
}

struct ModeResult {
    idle_mib: f64,
    peak_mib: f64,
    rows: Vec<ScriptResult>,
}

async fn bench_mode(binary: &Path, mode: &str, quick: bool) -> ModeResult {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let server = start_server(binary, mode);
    wait_ready(&client, &server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id();
    let idle_mib = tree_pss_mib(pid);
    let (sequential_n, throughput_n) = match (mode, quick) {
        ("cold", true) => (8, 8),
        ("cold", false) => (30, 32),
        (_, true) => (50, 100),
        _ => (400, 600),
    };
    let mut rows = Vec::new();
    for (name, script) in [("trivial", TRIVIAL), ("seed pandas", SEED_PANDAS)] {
        for _ in 0..3 {
            execute(&client, &server, script).await;
        }
        let latency = sequential(&client, &server, script, sequential_n).await;
        let mut rates = Vec::new();
        for concurrency in [1, 4, 16] {
            rates.push(throughput(&client, &server, script, concurrency, throughput_n).await);
        }
        rows.push(ScriptResult {
            name,
            latency,
            rates,
        });
    }
    // Peak memory in a load of its own: reading smaps_rollup walks every page
    // table of every process, which costs several ms per sweep here and
    // would slow the throughput it samples.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new((idle_mib * 1024.0) as u64));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let kib = (tree_pss_mib(pid) * 1024.0) as u64;
                peak.fetch_max(kib, Ordering::Relaxed);
                // A sampling thread of its own, outside the runtime.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    throughput(&client, &server, SEED_PANDAS, 16, throughput_n).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    ModeResult {
        idle_mib,
        peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        rows,
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let binary = std::env::var("PYEXEC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/release/pyexec"));
    assert!(binary.exists(), "build it first: cargo build --release");

    let floor = measure_floor(if quick { 50 } else { 300 });
    // --warm-only: for working on the warm path, without the cold minutes.
    let cold = if std::env::args().any(|a| a == "--warm-only") {
        None
    } else {
        Some(bench_mode(&binary, "cold", quick).await)
    };
    let warm = bench_mode(&binary, "warm", quick).await;
    {
        // The warm path's tail, phase by phase (issue 21's figures).
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let server = start_server(&binary, "warm");
        wait_ready(&client, &server).await;
        let n = if quick { 60 } else { 300 };
        for (name, script) in [("trivial", TRIVIAL), ("seed pandas", SEED_PANDAS)] {
            for _ in 0..5 {
                execute(&client, &server, script).await;
            }
            back_to_back(&client, &server, name, script, n).await;
        }
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Machine: {cores} cores ({cpu}), Linux {}, anonymous huge pages: {}, {} build, end-to-end over HTTP on loopback.\n",
        kernel.trim(),
        anonymous_huge_pages(),
        if quick { "quick" } else { "full" }
    );
    println!(
        "Fork floor (fork + wait of a pandas-loaded interpreter in the jail): p50 {:.2} ms, p99 {:.2} ms",
        floor.p50, floor.p99
    );
    // Every fork-per-request design pays at least this much CPU per request.
    let ceiling = cores as f64 * 1000.0 / floor.seed_cpu_ms;
    println!(
        "CPU per fork + exit: {:.2} ms; with the seed example run in the child: {:.2} ms, \
         so at most {ceiling:.0} req/s on {cores} cores for any fork-per-request design, \
         before HTTP, auth, namespaces and cgroups\n",
        floor.cpu_ms, floor.seed_cpu_ms
    );
    println!(
        "| mode | script | p50 ms | p95 ms | p99 ms | req/s c=1 | req/s c=4 | req/s c=16 | CPU ms/req c=16 |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let modes: Vec<(&str, &ModeResult)> = [("cold", cold.as_ref()), ("warm", Some(&warm))]
        .into_iter()
        .filter_map(|(mode, result)| Some((mode, result?)))
        .collect();
    for (mode, result) in &modes {
        for row in &result.rows {
            let l = &row.latency;
            let rate = |c: usize| row.rates.iter().find(|r| r.concurrency == c).unwrap();
            println!(
                "| {mode} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                row.name,
                l.p50,
                l.p95,
                l.p99,
                rate(1).per_second,
                rate(4).per_second,
                rate(16).per_second,
                rate(16).cpu_ms
            );
        }
    }
    println!("\n| mode | idle server PSS MiB | peak PSS MiB under load |");
    println!("| --- | ---: | ---: |");
    for (mode, result) in &modes {
        println!(
            "| {mode} | {:.0} | {:.0} |",
            result.idle_mib, result.peak_mib
        );
    }
    let seed = |r: &ModeResult| {
        r.rows
            .iter()
            .find(|row| row.name == "seed pandas")
            .map(|row| (row.latency.p50, row.rates[2].per_second))
            .unwrap()
    };
    let (warm_p50, warm_c16) = seed(&warm);
    println!("\nSeed pandas example, ratios (targets in parentheses):");
    if let Some(cold) = &cold {
        let (cold_p50, cold_c16) = seed(cold);
        println!("- cold p50 / warm p50: {:.1}× (≥ 50×)", cold_p50 / warm_p50);
        println!(
            "- warm / cold throughput at c=16: {:.1}× (≥ 30×); the fork-per-request ceiling above is {:.1}× cold, and warm reaches {:.0} % of it",
            warm_c16 / cold_c16,
            ceiling / cold_c16,
            100.0 * warm_c16 / ceiling
        );
    }
    println!(
        "- warm p50 / fork floor p50: {:.2}× (≤ 1.5×)",
        warm_p50 / floor.p50
    );
    println!(
        "- warm c=16 / the fork-per-request ceiling: {:.0} % (≥ 70 %)",
        100.0 * warm_c16 / ceiling
    );
    println!("- idle warm server: {:.0} MiB (< 250 MiB)", warm.idle_mib);
}
