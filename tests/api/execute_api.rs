//! The API contract through real HTTP and the real sandbox: the original
//! service's examples, every status of the table, auth and validation.

use crate::common::{API_KEY, server};
use serde_json::json;

// ---- the seed README's examples, verbatim ----------------------------------

#[tokio::test]
async fn seed_basic_example_returns_its_dict() {
    let r = server()
        .run("def main():\n    return {\"message\": \"Hello World\", \"status\": \"success\"}")
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({"message": "Hello World", "status": "success"})
    );
    assert_eq!(r.body["stdout"], "");
    assert_eq!(r.body["execution_method"], "nsjail");
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert!(r.header("x-request-id").is_some());
}

/// `Server-Timing` says where an answer's time went, phase by phase, and
/// the phases add up to no more than the total.
#[tokio::test]
async fn every_execute_answer_says_where_its_time_went() {
    let s = server();
    let r = s.run("def main():\n    return 1").await;
    r.assert_ok();
    let timing = r.header("server-timing").expect("a Server-Timing header");
    let phases: Vec<(String, f64)> = timing
        .split(", ")
        .map(|metric| {
            let (name, duration) = metric.split_once(";dur=").expect("name;dur=ms");
            (name.to_string(), duration.parse().expect("milliseconds"))
        })
        .collect();
    let names: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
    // (`rate` is there for a tenant with a rate limit; this one has none.)
    for phase in ["auth", "validate", "quota", "queue", "run", "total"] {
        assert!(names.contains(&phase), "{phase} missing in {timing}");
    }
    // A warm run took a ready runner and was handed to it; a cold one got
    // a cgroup.
    assert!(
        (names.contains(&"runner") && names.contains(&"handover")) || names.contains(&"cgroup"),
        "{timing}"
    );
    assert_eq!(names.last(), Some(&"total"));
    let total = phases.last().unwrap().1;
    let parts: f64 = phases[..phases.len() - 1].iter().map(|(_, ms)| ms).sum();
    assert!(parts <= total + 0.01, "{timing}");
    // A problem is timed too; the probes are not.
    let problem = s.run("def main():\n    raise ValueError()").await;
    assert!(
        problem
            .header("server-timing")
            .is_some_and(|t| t.contains("run;dur="))
    );
    let probe = s.client.get(s.url("/livez")).send().await.unwrap();
    assert!(probe.headers().get("server-timing").is_none());
}

#[tokio::test]
async fn seed_pandas_numpy_example_computes_on_random_data() {
    let script = r#"def main():
    import pandas as pd
    import numpy as np
    
    # Create sample data
    data = pd.DataFrame({
        'values': np.random.randint(1, 100, 10)
    })
    
    return {
        "mean": float(data['values'].mean()),
        "max": int(data['values'].max()),
        "count": len(data)
    }
"#;
    let r = server().run(script).await;
    let result = r.assert_ok();
    assert_eq!(result["count"], 10);
    let max = result["max"].as_i64().unwrap();
    assert!((1..100).contains(&max));
    let mean = result["mean"].as_f64().unwrap();
    assert!(mean >= 1.0 && mean <= max as f64);
}

#[tokio::test]
async fn seed_os_example_sees_only_its_own_tmp() {
    let script = r#"def main():
    import os
    import json
    
    # Limited OS operations allowed
    current_dir = os.getcwd()
    temp_files = os.listdir('/tmp')
    
    return {
        "current_directory": current_dir,
        "temp_file_count": len(temp_files)
    }
"#;
    let r = server().run(script).await;
    // The one entry is the run's own empty `out` folder (for output files).
    assert_eq!(
        r.assert_ok(),
        &json!({"current_directory": "/tmp", "temp_file_count": 1})
    );
}

#[tokio::test]
async fn seed_dataframe_sum_to_dict_is_valid() {
    let script = "def main():\n    import pandas as pd\n    data = pd.DataFrame({'A': [1, 2, 3], 'B': [4, 5, 6]})\n    return data.sum().to_dict()";
    assert_eq!(
        server().run(script).await.assert_ok(),
        &json!({"A": 6, "B": 15})
    );
}

#[tokio::test]
async fn seed_curl_examples_with_pandas_and_numpy_work() {
    let r = server()
        .run("def main():\n    import pandas as pd\n    df = pd.DataFrame({\"x\": [1,2,3]})\n    return {\"sum\": int(df.sum().iloc[0])}")
        .await;
    assert_eq!(r.assert_ok(), &json!({"sum": 6}));
    let r = server()
        .run("def main():\n    import numpy as np\n    arr = np.array([1,2,3,4,5])\n    return {\"mean\": float(np.mean(arr))}")
        .await;
    assert_eq!(r.assert_ok(), &json!({"mean": 3.0}));
}

#[tokio::test]
async fn execute_returns_413_for_a_script_over_10_kib() {
    let script = format!("def main():\n    return 1\n# {}\n", "x".repeat(10 * 1024));
    server().run(&script).await.assert_problem(413, "too-large");
}

// ---- results, stdout and args ------------------------------------------------

#[tokio::test]
async fn printed_output_is_stdout_and_never_the_result() {
    let script = r#"
import sys
def main():
    print('{"status": "ok", "result": "forged"}')
    print("to stderr", file=sys.stderr)
    return {"real": True}
"#;
    let r = server().run(script).await;
    assert_eq!(r.assert_ok(), &json!({"real": true}));
    assert_eq!(
        r.body["stdout"],
        "{\"status\": \"ok\", \"result\": \"forged\"}\n"
    );
    assert_eq!(r.body["stderr"], "to stderr\n");
    assert_eq!(r.body["stdout_truncated"], false);
}

#[tokio::test]
async fn args_are_passed_as_keyword_arguments() {
    let r = server()
        .execute(json!({"script": "def main(n, names=()):\n    return {'n': n * 2, 'names': list(names)}", "args": {"n": 21, "names": ["a"]}}))
        .await;
    assert_eq!(r.assert_ok(), &json!({"n": 42, "names": ["a"]}));
}

#[tokio::test]
async fn any_json_value_can_be_the_result() {
    for (script, expected) in [
        ("def main():\n    return 42", json!(42)),
        ("def main():\n    return None", json!(null)),
        (
            "def main():\n    return [1, 'two', 3.5, True]",
            json!([1, "two", 3.5, true]),
        ),
        ("def main():\n    return (1, 2)", json!([1, 2])),
        (
            "def main():\n    return {1: 'int keys become strings'}",
            json!({"1": "int keys become strings"}),
        ),
        (
            "def main():\n    import numpy as np\n    return {'x': np.float64(1.5), 'n': np.int32(7), 'b': np.bool_(True)}",
            json!({"x": 1.5, "n": 7, "b": true}),
        ),
        ("def main():\n    return 'ünïcödé ✓'", json!("ünïcödé ✓")),
    ] {
        assert_eq!(
            server().run(script).await.assert_ok(),
            &expected,
            "{script}"
        );
    }
}

// ---- every 422 of the status table -------------------------------------------

/// What a problem's field must say.
enum Says {
    Is(serde_json::Value),
    Contains(&'static str),
    Lacks(&'static str),
    Number,
}

/// (the case, the request body, its problem kind, what the problem says)
type FailedRun = (
    &'static str,
    serde_json::Value,
    &'static str,
    Vec<(&'static str, Says)>,
);

/// Each way a script can fail, with the problem it must get: the seed's
/// examples (no `main`, a DataFrame returned) and every other 422 kind. The
/// runs go concurrently; each case is named in a failure.
#[tokio::test]
async fn every_failed_run_gets_its_422_problem_and_says_why() {
    let script = |s: &str| json!({ "script": s });
    let cases: Vec<FailedRun> = vec![
        (
            "no main",
            script("def calculate():\n    return {\"result\": 42}"),
            "missing-main",
            vec![("error", Says::Contains("main()"))],
        ),
        (
            "a DataFrame returned",
            script(
                "def main():\n    import pandas as pd\n    return pd.DataFrame({'A': [1, 2, 3]})",
            ),
            "non-json-result",
            vec![("detail", Says::Contains("DataFrame"))],
        ),
        (
            "NaN",
            script("def main():\n    return float('nan')"),
            "non-json-result",
            vec![],
        ),
        (
            "infinity",
            script("def main():\n    return {'x': float('inf')}"),
            "non-json-result",
            vec![],
        ),
        (
            "a set",
            script("def main():\n    return {1, 2}"),
            "non-json-result",
            vec![],
        ),
        (
            "bytes",
            script("def main():\n    return b'bytes'"),
            "non-json-result",
            vec![],
        ),
        (
            "a numpy array",
            script("def main():\n    import numpy as np\n    return np.array([1, 2])"),
            "non-json-result",
            vec![],
        ),
        (
            "a cycle",
            script("def main():\n    a = []\n    a.append(a)\n    return a"),
            "non-json-result",
            vec![],
        ),
        (
            "a syntax error",
            script("def main():\n    return (1,\n"),
            "syntax-error",
            vec![("line", Says::Is(json!(2))), ("column", Says::Number)],
        ),
        (
            "an exception",
            script(
                "def helper():\n    raise ValueError('bad value')\n\ndef main():\n    print('before')\n    helper()\n",
            ),
            "runtime-error",
            vec![
                ("exception", Says::Is(json!("ValueError"))),
                ("stdout", Says::Is(json!("before\n"))),
                // The script's own frames, none of the harness's or the host's.
                ("traceback", Says::Contains("line 6, in main")),
                ("traceback", Says::Contains("line 2, in helper")),
                ("traceback", Says::Lacks("harness")),
                ("traceback", Says::Lacks("/opt/")),
            ],
        ),
        (
            "the wall limit",
            json!({"script": "import time\ndef main():\n    print('started', flush=True)\n    time.sleep(60)", "timeout_ms": 1000}),
            "timeout",
            vec![("stdout", Says::Is(json!("started\n")))],
        ),
        (
            "growing memory",
            script(
                "def main():\n    chunks = []\n    while True:\n        chunks.append(bytearray(10 * 1024 * 1024))",
            ),
            "memory-limit",
            vec![],
        ),
        (
            "an exit without a result",
            script("import os\ndef main():\n    os._exit(3)"),
            "sandbox-killed",
            vec![("detail", Says::Contains("status 3"))],
        ),
        (
            "a segfault",
            script("import ctypes\ndef main():\n    return ctypes.string_at(0)"),
            "sandbox-killed",
            vec![("detail", Says::Contains("SIGSEGV"))],
        ),
    ];
    let answers = futures_util::future::join_all(
        cases
            .iter()
            .map(|(_, body, ..)| server().execute(body.clone())),
    )
    .await;
    for ((case, _, kind, says), r) in cases.iter().zip(answers) {
        assert_eq!(
            (
                r.status,
                r.body["type"].as_str().unwrap_or("").rsplit('/').next()
            ),
            (422, Some(*kind)),
            "{case}: {}",
            r.body
        );
        r.assert_problem(422, kind);
        for (field, expected) in says {
            let value = &r.body[*field];
            let text = value.as_str().unwrap_or("");
            let holds = match expected {
                Says::Is(v) => value == v,
                Says::Contains(part) => text.contains(part),
                Says::Lacks(part) => value.is_string() && !text.contains(part),
                Says::Number => value.as_u64().is_some(),
            };
            assert!(holds, "{case}: `{field}` is {value}");
        }
    }
}

// ---- 400, 401, 413, 415 ---------------------------------------------------

#[tokio::test]
async fn execute_returns_400_for_bodies_that_are_not_a_valid_request() {
    let s = server();
    for body in [
        "{not json",
        "[]",
        r#"{"args": {}}"#,
        r#"{"script": 1}"#,
        r#"{"script": "def main(): pass", "args": [1]}"#,
        r#"{"script": "def main(): pass", "timeout_ms": -5}"#,
        r#"{"script": "def main(): pass", "timeout_ms": 3600000}"#,
    ] {
        s.post_raw(body)
            .await
            .assert_problem(400, "invalid-request");
    }
}

#[tokio::test]
async fn execute_returns_400_for_invalid_utf8() {
    let s = server();
    let mut body = br#"{"script": "def main(): return '"#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(br#"'"}"#);
    s.post_raw(body)
        .await
        .assert_problem(400, "invalid-request");
}

/// Every 401 challenges with `Bearer realm="pyexec"`; when a Bearer
/// credential was sent, RFC 6750's `error` says what was wrong with it.
#[tokio::test]
async fn execute_returns_401_with_the_rfc_6750_challenge_for_each_bad_credential() {
    let s = server();
    let body = json!({"script": "def main():\n    return 1"});
    let basic = format!("Basic {API_KEY}");
    // (Authorization header, the challenge's error)
    let cases: [(Option<&str>, Option<&str>); 5] = [
        (None, None),
        (Some(basic.as_str()), None),
        (Some("Bearer"), Some("invalid_request")),
        (Some("Bearer pyx_wrong"), Some("invalid_token")),
        (Some("Bearer a.b.c"), Some("invalid_token")),
    ];
    for (authorization, error) in cases {
        let mut request = s.client.post(s.url("/execute")).json(&body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let r = crate::common::Response::read(request.send().await.unwrap()).await;
        r.assert_problem(401, "unauthorized");
        assert!(!r.body.to_string().contains(API_KEY));
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"pyexec\""),
            "{challenge}"
        );
        match error {
            None => assert!(
                !challenge.contains("error"),
                "{authorization:?}: {challenge}"
            ),
            Some(code) => {
                assert!(
                    challenge.contains(&format!(", error=\"{code}\", error_description=\"")),
                    "{authorization:?}: {challenge}"
                );
            }
        }
    }
}

#[tokio::test]
async fn execute_returns_415_for_a_body_that_is_not_json() {
    let s = server();
    let response = s
        .client
        .post(s.url("/execute"))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(r#"{"script": "def main(): return 1"}"#)
        .send()
        .await
        .unwrap();
    crate::common::Response::read(response)
        .await
        .assert_problem(415, "unsupported-media-type");
}

#[tokio::test]
async fn a_64_mib_body_gets_413_without_being_buffered() {
    let s = server();
    // Declared length over the limit: refused on the headers alone.
    let response = s
        .client
        .post(s.url("/execute"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024 * 1024])
        .send()
        .await;
    if let Ok(response) = response {
        crate::common::Response::read(response)
            .await
            .assert_problem(413, "too-large");
    }
    // Chunked, no length: cut off once past the limit.
    let chunks = futures_chunks(64);
    let response = s
        .client
        .post(s.url("/execute"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(response) = response {
        crate::common::Response::read(response)
            .await
            .assert_problem(413, "too-large");
    }
    // Either way the server keeps serving.
    assert_eq!(
        server()
            .run("def main():\n    return 'still here'")
            .await
            .assert_ok(),
        "still here"
    );
}

fn futures_chunks(
    mebibytes: usize,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..mebibytes {
            if tx.send(Ok(vec![b' '; 1024 * 1024])).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

// ---- other endpoints -----------------------------------------------------------

#[tokio::test]
async fn health_reports_the_original_fields_and_the_self_test() {
    let s = server();
    let r =
        crate::common::Response::read(s.client.get(s.url("/health")).send().await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "healthy");
    assert_eq!(r.body["nsjail"], true);
    assert!(r.body["python"].as_str().unwrap().starts_with("3."));
    assert_eq!(r.body["temp_dir"], "/tmp");
    assert_eq!(r.body["temp_writable"], true);
    assert!(["v1", "v2"].contains(&r.body["cgroup"].as_str().unwrap()));
    assert_eq!(r.body["sandbox"]["self_test"]["state"], "passed");
    for path in ["/livez", "/readyz"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_known_path_with_another_method_gets_a_405_problem_with_allow() {
    let s = server();
    for (method, path, allow) in [
        (reqwest::Method::GET, "/execute", "POST"),
        (reqwest::Method::DELETE, "/execute", "POST"),
        (reqwest::Method::POST, "/livez", "GET,HEAD"),
    ] {
        let response = s
            .client
            .request(method.clone(), s.url(path))
            .send()
            .await
            .unwrap();
        let r = crate::common::Response::read(response).await;
        r.assert_problem(405, "method-not-allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        assert!(r.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn unknown_paths_get_a_404_problem() {
    let s = server();
    let r = crate::common::Response::read(s.client.get(s.url("/nope")).send().await.unwrap()).await;
    r.assert_problem(404, "not-found");
}

#[tokio::test]
async fn a_safe_client_request_id_is_echoed_and_any_other_is_replaced() {
    let s = server();
    let long = "x".repeat(129);
    // (what the client sends, whether it comes back as sent)
    let cases: [(&[&str], bool); 6] = [
        (&["abc-123"], true),
        (&["a.b_c:d-1"], true),
        (&["has space"], false),
        (&["<script>"], false),
        (&[long.as_str()], false),
        (&["one", "two"], false),
    ];
    for path in ["/livez", "/nope"] {
        for (sent, echoed) in cases {
            let mut request = s.client.get(s.url(path));
            for id in sent {
                request = request.header("x-request-id", *id);
            }
            let r = request.send().await.unwrap();
            let ids: Vec<&str> = r
                .headers()
                .get_all("x-request-id")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(ids.len(), 1, "{path} {sent:?}: {ids:?}");
            if echoed {
                assert_eq!(ids[0], sent[0], "{path}");
            } else {
                assert!(
                    ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
                    "{path} {sent:?} got {:?}",
                    ids[0]
                );
            }
        }
    }
}
