//! `GET /openapi.json`: a valid OpenAPI 3 document that describes exactly
//! the routes the server serves, the contract's statuses and headers.

use std::collections::BTreeSet;

use crate::common::{API_KEY, server};
use oas3::spec::ObjectOrReference;
use serde_json::{Value, json};

async fn served_document() -> (String, Value) {
    let s = server();
    let response = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

#[tokio::test]
async fn openapi_json_is_a_valid_openapi_3_document_with_resolvable_refs() {
    let (text, _) = served_document().await;
    let spec = oas3::from_json(&text).expect("parses as OpenAPI 3.1");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!(version.major, 3);
    // Every $ref in every response and request body points at a component.
    for (path, method, operation) in spec.operations() {
        for (status, response) in operation.responses.iter().flatten() {
            let response = response
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
            for (media, content) in &response.content {
                if let Some(ObjectOrReference::Ref { ref_path, .. }) = &content.schema {
                    let name = ref_path.rsplit('/').next().unwrap();
                    assert!(
                        spec.components.as_ref().unwrap().schemas.contains_key(name),
                        "{method} {path} {status} {media}: dangling {ref_path}"
                    );
                }
            }
        }
        if let Some(body) = &operation.request_body {
            body.resolve(&spec).expect("request body resolves");
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_one_generated_from_the_code() {
    let (_, served) = served_document().await;
    let generated = serde_json::to_value(pyexec::gateway::openapi()).unwrap();
    assert_eq!(served, generated);
}

/// The document's operations and, by probing each over HTTP, the server's:
/// every documented (path, method) is answered (not 404, not 405), the other
/// methods on those paths get 405, and an undocumented path 404. The router
/// registers its routes from the same `#[utoipa::path]` annotations
/// (`gateway::api_routes`), so there is no second list to drift.
#[tokio::test]
async fn documented_paths_and_methods_are_exactly_the_served_routes() {
    let s = server();
    let document = serde_json::to_value(pyexec::gateway::openapi()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    assert!(documented.contains(&("/execute".to_string(), "POST".to_string())));
    for path in paths.keys() {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let request = s
                .client
                .request(method.parse().unwrap(), s.url(path))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(json!({"script": "def main():\n    return 1"}).to_string());
            let status = request.send().await.unwrap().status().as_u16();
            if documented.contains(&(path.clone(), method.to_string())) {
                assert!(
                    ![404, 405].contains(&status),
                    "{method} {path} is documented but answered {status}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented");
            }
        }
    }
    let missing = s.client.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn execute_documents_every_status_of_the_contract_with_problem_json_and_headers() {
    let (_, document) = served_document().await;
    let execute = &document["paths"]["/execute"]["post"];
    assert_eq!(execute["security"], json!([{"bearer": []}]));
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    let responses = execute["responses"].as_object().unwrap();
    let statuses: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
    // ARCHITECTURE.md §2's table, plus 408 for a body that never arrives.
    let expected: BTreeSet<&str> = [
        "200", "400", "401", "403", "408", "413", "415", "422", "429", "500", "503",
    ]
    .into();
    assert_eq!(statuses, expected);
    for (status, response) in responses {
        let headers = response["headers"].as_object().unwrap();
        for name in ["X-Request-Id", "traceparent"] {
            assert!(headers.contains_key(name), "{status} lacks {name}");
        }
        // Without a tenant (401) or with a disabled one (403) no limits apply.
        let limited = !["401", "403"].contains(&status.as_str());
        for name in ["RateLimit", "RateLimit-Policy"] {
            assert_eq!(headers.contains_key(name), limited, "{status}: {name}");
        }
        let content = response["content"].as_object().unwrap();
        if status == "200" {
            assert!(headers.contains_key("X-Cache"));
            assert!(content.contains_key("application/json"));
        } else {
            assert_eq!(
                content["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{status}"
            );
        }
        if ["429", "503"].contains(&status.as_str()) {
            assert!(headers.contains_key("Retry-After"), "{status}");
        }
    }
    // The parser refuses unknown fields, and the schema says so.
    let body = &document["components"]["schemas"]["ExecuteRequest"];
    assert_eq!(body["additionalProperties"], json!(false));
    assert_eq!(body["required"], json!(["script"]));
    let problem = &document["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> = problem["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        ["type", "title", "status", "detail", "error"].into()
    );
    for (path, item) in document["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            let names: Vec<&str> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(
                names.contains(&"X-Request-Id") && names.contains(&"traceparent"),
                "{path}: {names:?}"
            );
        }
    }
}

/// The schemas describe what the server really sends: a real success and a
/// real problem carry exactly (success) or only (problem) the documented
/// properties.
#[tokio::test]
async fn real_responses_match_their_schemas() {
    let (_, document) = served_document().await;
    let schemas = &document["components"]["schemas"];
    let properties = |name: &str| -> BTreeSet<String> {
        schemas[name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let s = server();
    let ok = s.run("def main():\n    print('hi')\n    return [1]").await;
    ok.assert_ok();
    let keys: BTreeSet<String> = ok.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, properties("ExecuteResult"));
    let documented = properties("Problem");
    for script in [
        "def main(:\n    pass",
        "def helper():\n    return 1",
        "def main():\n    raise ValueError('no')",
    ] {
        let problem = s.run(script).await;
        assert_eq!(problem.status, 422);
        for key in problem.body.as_object().unwrap().keys() {
            assert!(documented.contains(key), "undocumented problem field {key}");
        }
    }
    let kinds = pyexec::gateway::openapi::documented_problem_kinds();
    for kind in [
        "syntax-error",
        "missing-main",
        "runtime-error",
        "rate-limited",
    ] {
        assert!(kinds.contains(&kind), "{kind}");
    }
}

/// The README's status table and the document list the same problem types.
#[test]
fn the_readme_status_table_lists_the_documented_problem_types() {
    let readme = std::fs::read_to_string(crate::common::repo_path("README.md")).unwrap();
    let in_readme: BTreeSet<&str> = readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let status = cells.next()?;
            let kind = cells.next()?;
            (status.len() == 3 && status.parse::<u16>().is_ok_and(|s| s >= 400))
                .then(|| kind.trim_matches('`'))
        })
        .collect();
    let documented: BTreeSet<&str> = pyexec::gateway::openapi::documented_problem_kinds()
        .into_iter()
        .collect();
    assert_eq!(in_readme, documented);
}

/// What a client generator and an API linter look for: servers, a summary
/// per operation, `security: []` where no credential is needed, no nullable
/// field the server never sends, the request's bounds.
#[tokio::test]
async fn the_document_says_what_clients_and_linters_need() {
    let (_, document) = served_document().await;
    assert!(document["servers"][0]["url"].is_string());
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let summary = operation["summary"].as_str().unwrap_or("");
            assert!(
                !summary.is_empty() && !summary.contains('\n'),
                "{method} {path}"
            );
            let security = &operation["security"];
            if ["/execute", "/runtime", "/usage"].contains(&path.as_str()) {
                assert_eq!(security, &json!([{"bearer": []}]));
            } else {
                assert_eq!(security, &json!([]), "{method} {path} is public");
            }
            // Probes carry no trace context (their spans are DEBUG only).
            let headers = &operation["responses"]["200"]["headers"];
            let probe = ["/health", "/livez", "/readyz"].contains(&path.as_str());
            assert_eq!(headers.get("traceparent").is_none(), probe, "{path}");
        }
    }
    let schemas = &document["components"]["schemas"];
    for name in ["Problem", "ExecuteResult", "HealthBody"] {
        let text = schemas[name].to_string();
        assert!(
            !text.contains("\"null\""),
            "{name} has nullable fields: {text}"
        );
    }
    let request = &schemas["ExecuteRequest"]["properties"];
    assert_eq!(
        request["timeout_ms"]["maximum"],
        json!(pyexec::defaults::MAX_WALL_TIMEOUT_MS)
    );
    assert_eq!(request["script"]["minLength"], 1);
    assert!(request["args"]["propertyNames"]["pattern"].is_string());
}

/// The real tools on the real document and server: openapi-spec-validator
/// accepts the document, and a bounded Schemathesis pass (every check, a few
/// hundred generated requests, a fixed seed so a failure replays) finds no
/// response that breaks it. The tenant allows the longest `timeout_ms` the
/// schema does, so every schema-valid request is one the server must take.
#[test]
fn the_document_passes_its_validator_and_schemathesis_against_a_real_server() {
    let tools = std::path::PathBuf::from(
        std::env::var("PYEXEC_TOOLS").unwrap_or_else(|_| "/opt/pyexec/tools/bin".into()),
    );
    let key = "pyx_schemathesis_fuzz_key";
    let policies = crate::common::PolicyDir::new();
    policies.write(
        "fuzz",
        &crate::common::tenant_yaml(
            "fuzz",
            key,
            &format!(
                "  sandbox:\n    wallTimeoutMs: {}\n",
                pyexec::defaults::MAX_WALL_TIMEOUT_MS
            ),
        ),
    );
    let server = crate::common::SpawnedServer::start_with(crate::common::SpawnOptions {
        policies: Some(policies.path()),
        ..Default::default()
    });
    let schema_url = server.api.url("/openapi.json");
    let document = std::process::Command::new("curl")
        .args(["-sf", &schema_url])
        .output()
        .expect("curl");
    let file = policies.path().join("openapi.json");
    std::fs::write(&file, &document.stdout).unwrap();
    let hooks = crate::common::repo_path("tests/schemathesis/hooks.py");
    let run = |tool: &str, args: &[&str]| {
        let output = std::process::Command::new(tools.join(tool))
            .args(args)
            .env("SCHEMATHESIS_HOOKS", &hooks)
            .output()
            .unwrap_or_else(|e| {
                panic!("{tool}: {e} (bash scripts/setup.sh --for-tests installs it)")
            });
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{tool} failed:\n{said}");
        said
    };
    run("openapi-spec-validator", &[file.to_str().unwrap()]);
    let config = crate::common::repo_path("tests/schemathesis/schemathesis.toml");
    let authorization = format!("Authorization: Bearer {key}");
    let said = run(
        "schemathesis",
        &[
            "--config-file",
            config.to_str().unwrap(),
            "run",
            &schema_url,
            "--header",
            &authorization,
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--no-color",
        ],
    );
    assert!(said.contains("passed"), "{said}");
}
