//! The SDK's context and helpers, natively.

#![allow(clippy::unwrap_used)]

use nachfass_sdk::http::{HttpError, Request, Response};
use nachfass_sdk::testing::TestHost;
use nachfass_sdk::*;

#[test]
fn configuration_parses_with_errors_that_name_the_key() {
    let host = TestHost::new()
        .config("days", " 14 ")
        .config("ratio", "lots");
    let ctx = host.ctx();
    assert_eq!(ctx.config_or("days", 30i64).unwrap(), 14);
    assert_eq!(ctx.config_or("missing", 30i64).unwrap(), 30);
    let err = ctx.config_or("ratio", 1.0f64).unwrap_err();
    assert_eq!(err.code, "bad-config");
    assert!(
        err.message.contains("`ratio`") && err.message.contains("lots"),
        "{}",
        err.message
    );
    let err = ctx.config_required::<String>("url").unwrap_err();
    assert!(err.message.contains("`url` is required"), "{}", err.message);
}

#[test]
fn logs_and_http_are_captured_by_the_test_host() {
    let host = TestHost::new().http(|request| {
        assert_eq!(request.method, "POST");
        Ok(Response::new(204))
    });
    let ctx = host.ctx();
    ctx.log(Level::Info, "hello");
    assert_eq!(
        ctx.http(&Request::post("https://a.example/x").body("hi"))
            .unwrap()
            .status,
        204
    );
    assert_eq!(host.logs(), vec![(Level::Info, "hello".to_owned())]);
    assert_eq!(host.requests()[0].body, b"hi");
    let no_http = TestHost::new();
    assert!(matches!(
        no_http.ctx().http(&Request::get("https://a.example")),
        Err(HttpError::Denied(_))
    ));
}

#[test]
fn builders_and_accessors() {
    let contact = Contact::new("c")
        .with_attr("employees", "250")
        .with_attr("employees", 300)
        .with_segment("vip");
    assert_eq!(
        contact.attributes.len(),
        1,
        "setting a key twice replaces it"
    );
    assert_eq!(
        contact.attr("employees").and_then(Value::as_f64),
        Some(300.0)
    );
    assert!(contact.in_segment("vip"));
    assert_eq!(Value::from("12").as_f64(), Some(12.0));
    let mut change = ScoreChange::none();
    change.add(0, "nothing");
    change.add(5, "visit");
    change.add(-2, "bounce");
    assert_eq!((change.delta, change.reasons.len()), (3, 2));
}
