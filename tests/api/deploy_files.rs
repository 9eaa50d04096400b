//! The deployment files, checked where no container engine or cluster runs:
//! they parse, name only files that exist, and agree with the server (its
//! port, the paths it serves), the Dockerfile and CI (one set-up script) and
//! each other (the collector's port).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::repo_path;
use serde::Deserialize;
use yaml_serde::Value;

/// Every YAML file below `deploy/`, each with its documents.
fn deploy_yaml() -> Vec<(PathBuf, Vec<Value>)> {
    let mut files = Vec::new();
    collect_yaml(&repo_path("deploy"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "deploy/ holds no YAML");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = yaml_serde::Deserializer::from_str(&text)
                .map(|doc| {
                    Value::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
                })
                .filter(|doc| !doc.is_null())
                .collect();
            (path, docs)
        })
        .collect()
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_yaml(&path, files);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_path(""))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files that kustomizations apply as patches: partial objects.
fn patch_files() -> Vec<PathBuf> {
    deploy_yaml()
        .into_iter()
        .filter(|(path, _)| path.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .flat_map(|(path, docs)| {
            let dir = path.parent().unwrap().to_path_buf();
            docs.iter()
                .flat_map(|doc| doc["patches"].as_sequence().cloned().unwrap_or_default())
                .filter_map(|patch| patch["path"].as_str().map(|p| dir.join(p)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Kubernetes and Cloud Run manifests (whole objects with `kind` and
/// `spec`; patches are not).
fn manifests() -> Vec<(String, Value)> {
    let patches = patch_files();
    deploy_yaml()
        .into_iter()
        .filter(|(path, _)| !patches.contains(path))
        .flat_map(|(path, docs)| {
            let name = relative(&path);
            docs.into_iter().map(move |doc| (name.clone(), doc))
        })
        .filter(|(_, doc)| doc.get("kind").is_some() && doc.get("spec").is_some())
        .collect()
}

/// Every container (and init container) anywhere in a manifest.
fn containers(doc: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    walk_containers(doc, &mut found);
    found
}

fn walk_containers<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                if matches!(key.as_str(), Some("containers" | "initContainers")) {
                    if let Some(list) = child.as_sequence() {
                        found.extend(list.iter().filter(|c| c.get("name").is_some()));
                    }
                }
                walk_containers(child, found);
            }
        }
        Value::Sequence(list) => list.iter().for_each(|v| walk_containers(v, found)),
        _ => {}
    }
}

/// The pyexec containers of all manifests, with the file each is in.
fn pyexec_containers() -> Vec<(String, Value)> {
    let found: Vec<(String, Value)> = manifests()
        .iter()
        .flat_map(|(file, doc)| {
            containers(doc)
                .into_iter()
                .filter(|c| c["name"] == "pyexec")
                .map(|c| (file.clone(), c.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let files: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
    assert!(
        files.contains(&"deploy/cloudrun/service.yaml")
            && files.contains(&"deploy/k8s/base/deployment.yaml"),
        "the pyexec container is missing from a manifest: {files:?}"
    );
    found
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// A probe's port as a number, resolving a named port.
fn probe_port(container: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
}

fn probes(container: &Value) -> Vec<(&'static str, &Value)> {
    ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .filter_map(|kind| container.get(kind).map(|p| (kind, p)))
        .collect()
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    for (path, docs) in deploy_yaml() {
        assert!(!docs.is_empty(), "{} has no document", relative(&path));
    }
}

#[test]
fn every_file_a_kustomization_names_exists() {
    let kustomizations: Vec<PathBuf> = deploy_yaml()
        .into_iter()
        .map(|(path, _)| path)
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .collect();
    assert!(kustomizations.len() >= 2, "no base and overlay found");
    for file in kustomizations {
        let dir = file.parent().unwrap();
        let doc: Value = yaml_serde::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut named: Vec<String> = Vec::new();
        for key in ["resources", "components", "patchesStrategicMerge"] {
            for item in doc[key].as_sequence().into_iter().flatten() {
                named.push(item.as_str().unwrap().to_string());
            }
        }
        for patch in doc["patches"].as_sequence().into_iter().flatten() {
            if let Some(path) = patch["path"].as_str() {
                named.push(path.to_string());
            }
        }
        for key in ["configMapGenerator", "secretGenerator"] {
            for generator in doc[key].as_sequence().into_iter().flatten() {
                for item in generator["files"].as_sequence().into_iter().flatten() {
                    // `key=path` names the ConfigMap key and the file.
                    let item = item.as_str().unwrap();
                    named.push(item.rsplit('=').next().unwrap().to_string());
                }
            }
        }
        assert!(!named.is_empty(), "{} names nothing", relative(&file));
        for name in named {
            let target = dir.join(&name);
            let ok = target.is_file() || target.join("kustomization.yaml").is_file();
            assert!(ok, "{} names {name}, which does not exist", relative(&file));
        }
    }
}

/// The base's copies (a kustomization cannot read files above its folder)
/// are the repository's files, byte for byte.
#[test]
fn the_base_copies_of_policies_and_collector_config_are_identical() {
    let pairs = [
        ("policies/acme.yaml", "deploy/k8s/base/policies/acme.yaml"),
        (
            "policies/analytics.yaml",
            "deploy/k8s/base/policies/analytics.yaml",
        ),
        (
            "policies/free-tier.yaml",
            "deploy/k8s/base/policies/free-tier.yaml",
        ),
        (
            "policies/keys/analytics-idp.pub.pem",
            "deploy/k8s/base/policies/keys/analytics-idp.pub.pem",
        ),
        (
            "deploy/otel-collector.yaml",
            "deploy/k8s/base/otel-collector.yaml",
        ),
    ];
    for (original, copy) in pairs {
        assert_eq!(
            std::fs::read(repo_path(original)).unwrap(),
            std::fs::read(repo_path(copy)).unwrap(),
            "{copy} differs from {original}: copy it again"
        );
    }
    // And no tenant was added to one side only.
    let names = |dir: &str| -> Vec<String> {
        pyexec::tenants::policy::policy_files(&repo_path(dir))
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names("policies"), names("deploy/k8s/base/policies"));
}

#[test]
fn the_tenants_shipped_in_deploy_are_valid_policies() {
    let ctx = pyexec::tenants::policy::LoadContext {
        nsjail_dir: repo_path("nsjail"),
    };
    for dir in [
        "deploy/k8s/base/policies",
        "deploy/k8s/overlays/example/tenants",
    ] {
        let tenants = pyexec::tenants::policy::load_dir(&repo_path(dir), &ctx)
            .unwrap_or_else(|e| panic!("{dir}: {e:?}"));
        assert!(!tenants.is_empty(), "{dir} holds no tenant");
    }
}

/// Ports and probes use 8080 and only paths the real router serves: a
/// server is started and asked for each (anything but 404 is served; /health
/// and /readyz may still say 503 while the self-test runs).
#[test]
fn ports_and_probes_use_8080_and_paths_the_server_serves() {
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    for (file, container) in pyexec_containers() {
        let ports: Vec<u64> = container["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        assert_eq!(ports, [8080], "{file}: the pyexec container's ports");
        if let Some(port) = env_value(&container, "PORT") {
            assert_eq!(port, "8080", "{file}: PORT");
        }
        let found = probes(&container);
        assert!(
            found.len() >= 2,
            "{file}: the pyexec container needs startup and liveness probes"
        );
        for (kind, probe) in found {
            let get = &probe["httpGet"];
            assert_eq!(
                probe_port(&container, &get["port"]),
                Some(8080),
                "{file}: {kind} port"
            );
            let path = get["path"].as_str().expect("an HTTP probe has a path");
            paths.insert(path.to_string(), format!("{file} {kind}"));
        }
    }
    // Nothing scrapes the public port: /metrics is on the operator listener.
    for (file, doc) in manifests() {
        let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
        assert!(
            annotations["prometheus.io/port"].is_null(),
            "{file}: a scrape annotation on the public port"
        );
    }

    let server = crate::common::TestServer::start(crate::common::server_config(), false);
    for (path, used_by) in &paths {
        let status = crate::common::get_status_blocking(&server.url(path));
        assert!(
            status.is_some_and(|s| s != 404),
            "{used_by} uses {path}, which the server answers with {status:?}"
        );
    }
    // The check itself can fail: an unknown path is 404.
    assert_eq!(
        crate::common::get_status_blocking(&server.url("/no-such-probe")),
        Some(404)
    );
}

#[test]
fn the_kubernetes_service_reaches_the_http_port() {
    let (file, deployment) = pyexec_containers()
        .into_iter()
        .find(|(file, _)| file.starts_with("deploy/k8s/"))
        .unwrap();
    let service = manifests()
        .into_iter()
        .find(|(file, doc)| file.starts_with("deploy/k8s/") && doc["kind"] == "Service")
        .expect("a Kubernetes Service")
        .1;
    for port in service["spec"]["ports"].as_sequence().unwrap() {
        assert_eq!(
            probe_port(&deployment, &port["targetPort"]),
            Some(8080),
            "{file}: the Service's targetPort"
        );
    }
}

#[test]
fn cloud_run_uses_the_second_generation_and_probes_outside_the_reserved_z_paths() {
    let (_, service) = manifests()
        .into_iter()
        .find(|(file, _)| file == "deploy/cloudrun/service.yaml")
        .expect("the Cloud Run service");
    let template = &service["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["run.googleapis.com/execution-environment"],
        "gen2"
    );
    let pyexec = template["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "pyexec")
        .unwrap();
    let kinds: Vec<&str> = probes(pyexec).into_iter().map(|(k, _)| k).collect();
    assert!(kinds.contains(&"startupProbe") && kinds.contains(&"livenessProbe"));
    for container in template["spec"]["containers"].as_sequence().unwrap() {
        for (kind, probe) in probes(container) {
            let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
            assert!(
                !path.ends_with('z'),
                "{:?} {kind} uses {path}: Cloud Run reserves paths ending in z",
                container["name"]
            );
        }
    }
    // Requests per instance are the sandbox slots plus the queue.
    let slots: u64 = env_value(pyexec, "PYEXEC_MAX_CONCURRENT")
        .unwrap()
        .parse()
        .unwrap();
    let queued: u64 = env_value(pyexec, "PYEXEC_MAX_QUEUED")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        template["spec"]["containerConcurrency"].as_u64(),
        Some(slots + queued)
    );
}

/// Where PYEXEC_POLICIES points, the policies volume is mounted.
#[test]
fn policies_are_mounted_where_pyexec_policies_points() {
    for (file, container) in pyexec_containers() {
        let dir = env_value(&container, "PYEXEC_POLICIES")
            .unwrap_or_else(|| panic!("{file}: PYEXEC_POLICIES is not set"));
        let mounted = container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == dir);
        assert!(mounted, "{file}: nothing is mounted at {dir}");
    }
}

/// The collector scrapes pyexec's operator listener where pyexec serves it
/// (the default `--metrics-listen` unless a manifest moves it), and that
/// listener really answers `/metrics` with Prometheus text.
#[test]
fn the_collector_scrapes_the_operator_listener() {
    let config: Value = yaml_serde::from_str(
        &std::fs::read_to_string(repo_path("deploy/otel-collector.yaml")).unwrap(),
    )
    .unwrap();
    let scrape = &config["receivers"]["prometheus"]["config"]["scrape_configs"][0];
    assert_eq!(scrape["metrics_path"], "/metrics");
    let target = scrape["static_configs"][0]["targets"][0].as_str().unwrap();
    let pipeline = &config["service"]["pipelines"]["metrics"];
    assert_eq!(pipeline["receivers"][0], "prometheus");
    let default_listen = "127.0.0.1:9464";
    for (file, container) in pyexec_containers() {
        let listen = env_value(&container, "PYEXEC_METRICS_LISTEN").unwrap_or(default_listen);
        let port = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
        assert_eq!(
            port(listen),
            port(target),
            "{file}: the collector scrapes {target}"
        );
    }
    let server = crate::common::TestServer::start(crate::common::server_config(), false);
    let response = crate::common::get_status_blocking(&server.ops_url("/metrics"));
    assert_eq!(response, Some(200));
    assert_eq!(
        crate::common::get_status_blocking(&server.url("/metrics")),
        Some(404)
    );
}

#[test]
fn the_collector_receives_on_the_port_pyexec_exports_to() {
    let config: Value = yaml_serde::from_str(
        &std::fs::read_to_string(repo_path("deploy/otel-collector.yaml")).unwrap(),
    )
    .unwrap();
    let receiver = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .expect("an OTLP gRPC receiver");
    let port = receiver.rsplit(':').next().unwrap();
    for (file, container) in pyexec_containers() {
        let endpoint = env_value(&container, "OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|| panic!("{file}: OTEL_EXPORTER_OTLP_ENDPOINT is not set"));
        assert_eq!(
            endpoint,
            format!("http://localhost:{port}"),
            "{file}: pyexec exports where the collector ({receiver}) does not listen"
        );
    }
    // The sidecar's startup probe asks the collector's health extension.
    let health = config["extensions"]["health_check"]["endpoint"]
        .as_str()
        .unwrap();
    let health_port: u64 = health.rsplit(':').next().unwrap().parse().unwrap();
    let mut sidecars = 0;
    for (file, doc) in manifests() {
        for collector in containers(&doc)
            .into_iter()
            .filter(|c| c["name"] == "otel-collector")
        {
            sidecars += 1;
            let probe = &collector["startupProbe"]["httpGet"]["port"];
            assert_eq!(probe.as_u64(), Some(health_port), "{file}");
        }
    }
    assert_eq!(
        sidecars, 2,
        "a collector sidecar on Cloud Run and Kubernetes"
    );
}

// ---- Dockerfile -------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined, comments gone.
fn dockerfile() -> Vec<String> {
    let text = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// The instructions of the last (runtime) stage.
fn runtime_stage() -> Vec<String> {
    let all = dockerfile();
    let start = all.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
    all[start..].to_vec()
}

#[test]
fn the_image_installs_with_the_setup_script_that_ci_runs() {
    let stage = runtime_stage();
    let copied = stage
        .iter()
        .find(|i| i.starts_with("COPY ") && i.contains("scripts/setup.sh"))
        .expect("the runtime stage copies scripts/setup.sh");
    let target = copied.split_whitespace().last().unwrap();
    let run = stage
        .iter()
        .find(|i| i.starts_with("RUN ") && i.contains(target))
        .unwrap_or_else(|| panic!("no RUN step runs {target}"));
    assert!(run.contains("--runtime-only"), "{run}");
    // CI (.ci/run) runs scripts/test.sh, which sets up with the same script.
    let ci = std::fs::read_to_string(repo_path(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test.sh"),
        "CI no longer runs scripts/test.sh"
    );
    let test_sh = std::fs::read_to_string(repo_path("scripts/test.sh")).unwrap();
    assert!(
        test_sh
            .lines()
            .any(|l| l.trim_start().starts_with("bash scripts/setup.sh")),
        "scripts/test.sh no longer runs scripts/setup.sh"
    );
}

/// `.dockerignore` rules, last match wins; a rule on a folder covers what is
/// inside it (Docker's own semantics).
fn docker_ignored(path: &str) -> bool {
    let text = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    let mut ignored = false;
    for rule in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (negated, pattern) = match rule.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, rule),
        };
        let pattern = pattern.trim_end_matches('/');
        let mut prefix = String::new();
        let mut matched = false;
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            matched |= glob(pattern.as_bytes(), prefix.as_bytes());
        }
        if matched {
            ignored = !negated;
        }
    }
    ignored
}

/// `*` and `?` within one path component.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name)
                || (!name.is_empty() && name[0] != b'/' && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[test]
fn dockerignore_rules_behave_as_docker_reads_them() {
    assert!(docker_ignored("target"));
    assert!(docker_ignored("scripts/test.sh"));
    assert!(!docker_ignored("scripts/setup.sh"));
    assert!(!docker_ignored("nsjail/seccomp.kafel"));
}

#[test]
fn every_copy_source_exists_and_is_in_the_build_context() {
    let copies: Vec<String> = dockerfile()
        .into_iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from="))
        .collect();
    assert!(copies.len() >= 5, "{copies:?}");
    for copy in copies {
        let args: Vec<&str> = copy
            .split_whitespace()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        for source in &args[..args.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                repo_path(source).exists(),
                "{copy}: {source} does not exist"
            );
            assert!(
                !docker_ignored(source),
                "{copy}: .dockerignore excludes {source}"
            );
        }
    }
}

#[test]
fn the_image_holds_what_the_server_reads_where_its_environment_says() {
    let stage = runtime_stage();
    let env = |name: &str| -> String {
        stage
            .iter()
            .filter(|i| i.starts_with("ENV "))
            .flat_map(|i| i[4..].split_whitespace())
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("the image sets no {name}"))
    };
    let copied_to = |source: &str| -> String {
        stage
            .iter()
            .find_map(|i| {
                let args: Vec<&str> = i.split_whitespace().collect();
                (args[0] == "COPY" && args.get(1) == Some(&source)).then(|| args[2].to_string())
            })
            .unwrap_or_else(|| panic!("the runtime stage does not copy {source}"))
    };
    assert_eq!(env("PYEXEC_NSJAIL_DIR"), copied_to("nsjail"));
    assert_eq!(env("PYEXEC_POLICIES"), copied_to("policies"));
    assert_eq!(env("PORT"), "8080");
    assert!(stage.iter().any(|i| i == "EXPOSE 8080"));
    // The folder copied holds every file the sandbox reads at start.
    for file in ["base.cfg", "seccomp.kafel", "harness.py", "zygote.py"] {
        assert!(repo_path("nsjail").join(file).is_file(), "nsjail/{file}");
    }
    // The deployments mount policies where the image expects them.
    for (file, container) in pyexec_containers() {
        assert_eq!(
            env_value(&container, "PYEXEC_POLICIES"),
            Some(env("PYEXEC_POLICIES").as_str()),
            "{file}"
        );
    }
}

/// Cloud Build builds the repository's Dockerfile, fills in the service
/// file's placeholders and deploys that file with `services replace`.
#[test]
fn cloud_build_renders_and_replaces_the_service_file() {
    let build: Value = yaml_serde::from_str(
        &std::fs::read_to_string(repo_path("deploy/cloudrun/cloudbuild.yaml")).unwrap(),
    )
    .unwrap();
    let steps: Vec<String> = build["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|step| {
            let args: Vec<&str> = step["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            args.join(" ")
        })
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("build ") && s.ends_with(" ."))
    );
    let render = steps
        .iter()
        .find(|s| s.contains("deploy/cloudrun/service.yaml"))
        .expect("a step renders deploy/cloudrun/service.yaml");
    let service = std::fs::read_to_string(repo_path("deploy/cloudrun/service.yaml")).unwrap();
    for placeholder in ["IMAGE_URL", "PROJECT_ID"] {
        assert!(render.contains(&format!("s|{placeholder}|")), "{render}");
        assert!(service.contains(placeholder), "{placeholder}");
    }
    assert!(service.contains("image: IMAGE_URL"));
    let rendered = render.rsplit("> ").next().unwrap().trim();
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("run services replace") && s.contains(rendered)),
        "no step deploys {rendered}: {steps:?}"
    );
}
