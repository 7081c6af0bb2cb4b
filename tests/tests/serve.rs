//! `nachfass serve` as a real process: an SQLite file, a key from
//! `nachfass keys create`, events over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use nachfass_tests::server::{Server, create_admin_key, free_port, http};

async fn serve_answers_over_real_http(dialect: &'static str) {
    let (database, temp) = nachfass_tests::database(dialect).await;
    serve_answers_over_http(&database);
    let store = nachfass::store::Store::connect(&database).await.unwrap();
    assert_eq!(store.count_contacts().await.unwrap(), 1, "{dialect}");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    serve_answers_over_real_http
);

fn serve_answers_over_http(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = create_admin_key(database);
    assert!(key.starts_with("nf_"), "{key}");
    let server = Server::start(database, dir.path(), free_port(), &[]);

    let body = r#"{"kind":"signup","email":"Ada@Acme.example"}"#;
    let (status, answer) = http(server.port, "POST", "/v1/events", Some(&key), Some(body));
    assert_eq!(status, 201, "{answer}");
    let contact = answer["event"]["contact_id"].as_str().unwrap().to_owned();
    let (status, _) = http(server.port, "POST", "/v1/events", None, Some(body));
    assert_eq!(status, 401);
    let (status, stored) = http(
        server.port,
        "GET",
        &format!("/v1/contacts/{contact}"),
        Some(&key),
        None,
    );
    assert_eq!(
        (status, stored["email"].as_str()),
        (200, Some("ada@acme.example"))
    );
}
