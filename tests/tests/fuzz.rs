//! Schemathesis (PyPI; `tests/run` installs it) fuzzes `nachfass serve`
//! from its own OpenAPI document, with NUL characters in strings and the
//! extreme integers of each documented range, on SQLite and PostgreSQL:
//! no request may end in a server error, and every answer must be one the
//! document describes (status, content type, body schema). A fixed seed and a bounded
//! number of examples per operation keep the run reproducible and short.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use nachfass_tests::server::{Server, create_admin_key, free_port, http};

/// Runs: examples per operation and phase, and which operations. Every
/// operation a little; the ones that store what clients send far more
/// (that is where a NUL character or an extreme time did harm).
const RUNS: [(&str, Option<&str>); 2] = [
    ("25", None),
    ("200", Some("^/v1/(events|contacts|contacts/\\{id\\})$")),
];

#[tokio::test]
async fn no_server_errors_under_fuzzing_sqlite() {
    fuzz("sqlite").await
}

#[tokio::test]
async fn no_server_errors_under_fuzzing_postgres() {
    fuzz("postgres").await
}

/// `schemathesis` on the PATH, or in the scripts directory of the
/// `python3` that `tests/run` installed it with.
fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("NACHFASS_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = scripts
        .into_iter()
        .map(|dir| dir.join("schemathesis"))
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/bin/schemathesis")));
    for candidate in candidates {
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from("schemathesis")
}

async fn fuzz(dialect: &str) {
    let (database, temp) = nachfass_tests::database(dialect).await;
    let dir = tempfile::tempdir().unwrap();
    let key = create_admin_key(&database);
    let server = Server::start(&database, dir.path(), free_port(), &[]);
    // Something to find: a contact with events.
    let body = r#"{"kind":"signup","email":"ada@acme.example","properties":{"plan":"pro"}}"#;
    let (status, _) = http(server.port, "POST", "/v1/events", Some(&key), Some(body));
    assert_eq!(status, 201);

    let tool = schemathesis();
    for (examples, only) in RUNS {
        let mut command = Command::new(&tool);
        command
            .current_dir(dir.path())
            .args([
                "run",
                &format!("http://127.0.0.1:{}/v1/openapi.json", server.port),
            ])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            // No server error, and every answer is one the document
            // describes: its status, content type and body schema.
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", examples, "--seed", "11"])
            .args(["--generation-allow-x00", "true"])
            .args(["--generation-database", "none"])
            .args(["--workers", "1", "--request-timeout", "120", "--no-color"]);
        if let Some(only) = only {
            command.args(["--include-path-regex", only]);
        }
        let run = command.output().unwrap_or_else(|e| {
            panic!(
                "{} cannot run ({e}): run `tests/run`, which installs schemathesis from PyPI",
                tool.display()
            )
        });
        let report = String::from_utf8_lossy(&run.stdout);
        let log = std::fs::read_to_string(dir.path().join(format!("serve-{}.log", server.port)))
            .unwrap_or_default();
        let failed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("request failed"))
            .take(5)
            .collect();
        assert!(
            run.status.success() && failed.is_empty(),
            "{dialect}: schemathesis found failures:\n{report}\n{}\nserver errors: {failed:#?}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(report.contains("generated"), "{dialect}: {report}");
    }
    drop(server);
    let store = nachfass::store::Store::connect(&database).await.unwrap();
    temp.cleanup(store).await;
}
