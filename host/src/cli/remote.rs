//! Talking to a running server over its REST API: `--server URL` with the
//! key from `NACHFASS_API_KEY`, for the commands a CI pipeline deploys with
//! (`plugin upload | activate | rollback | list`, `binding …`, `apply`).
//! Failures read like the server's own error message, with a hint where
//! the cause is usually on this side (the key, the URL).

use std::time::Duration;

use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::{CliError, fail};

/// The environment variable the API key is read from.
pub const API_KEY_ENV: &str = "NACHFASS_API_KEY";

/// Where the server is and how to print its answers.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The server's base URL, e.g. `https://nachfass.example.com`.
    #[arg(long, env = "NACHFASS_SERVER")]
    pub server: String,
    /// An API key with the `admin` scope (`read` is enough for listing).
    /// Prefer the environment variable: a flag shows up in process lists
    /// and CI logs.
    #[arg(long, env = API_KEY_ENV, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON for machines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A client for one server.
pub struct Remote {
    client: reqwest::Client,
    base: Url,
    key: String,
    pub json: bool,
}

/// What the server answered: the status and the JSON body (`Null` when
/// there was none, as for 204).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Remote {
    pub fn new(args: &RemoteArgs) -> Result<Remote, CliError> {
        let base = Url::parse(&args.server).map_err(|e| {
            fail(format!(
                "--server `{}` is not a URL ({e}); give the server's base URL, e.g. https://nachfass.example.com",
                args.server
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(fail(format!(
                "--server `{}` must be an http:// or https:// URL",
                args.server
            )));
        }
        let key = match args.api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => {
                return Err(fail(format!(
                    "{API_KEY_ENV} is not set: export an API key of {base} (create one with `nachfass keys create --name ci --scope admin`)"
                )));
            }
        };
        // reqwest is built without a default TLS provider; use ring, the one
        // the rest of the binary (lettre, oci-client) already links.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Generous: an upload is compiled before the server answers.
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("nachfass-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Remote {
            client,
            base,
            key,
            json: args.json,
        })
    }

    /// The URL of an API path given as segments (each percent-encoded),
    /// below the base URL's own path.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Answer, CliError> {
        self.call(Method::GET, segments).await
    }

    /// GET with query parameters.
    pub async fn get_query(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Answer, CliError> {
        self.send(self.client.get(self.url(segments)).query(query))
            .await
    }

    /// GET that answers `None` when the server says the thing does not
    /// exist (404 `not_found`; a 404 `no_route` is a wrong URL, an error).
    pub async fn get_optional(&self, segments: &[&str]) -> Result<Option<Value>, CliError> {
        let request = self.client.get(self.url(segments));
        let response = self.execute(request).await?;
        if response.status() != StatusCode::NOT_FOUND {
            return self.read(response).await.map(|answer| Some(answer.body));
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if body["error"]["code"] == "not_found" {
            Ok(None)
        } else {
            Err(self.refused(StatusCode::NOT_FOUND, &body, &bytes))
        }
    }

    /// A request without a body (DELETE, a rollback).
    pub async fn call(&self, method: Method, segments: &[&str]) -> Result<Answer, CliError> {
        self.send(self.client.request(method, self.url(segments)))
            .await
    }

    pub async fn send_json(
        &self,
        method: Method,
        segments: &[&str],
        body: &Value,
    ) -> Result<Answer, CliError> {
        self.send(self.client.request(method, self.url(segments)).json(body))
            .await
    }

    /// A request with a body as it is (a journey definition keeps the
    /// bytes of its file).
    pub async fn send_bytes(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, CliError> {
        let request = self
            .client
            .request(method, self.url(segments))
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, CliError> {
        let response = self.execute(request).await?;
        self.read(response).await
    }

    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        request
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))
    }

    async fn read(&self, response: reqwest::Response) -> Result<Answer, CliError> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| fail(format!("{}: the answer broke off: {e}", self.base)))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).ok().unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(Answer { status, body });
        }
        Err(self.refused(status, &body, &bytes))
    }

    /// A request that never got an answer: the server is down, the URL
    /// wrong, or TLS failed.
    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        let hint = if error.is_timeout() {
            "the server did not answer in time"
        } else {
            "is the server running, and is --server (or NACHFASS_SERVER) right?"
        };
        fail(format!("cannot reach {}: {detail}; {hint}", self.base))
    }

    /// The server said no: its error message, with a hint for the causes
    /// that lie on the caller's side.
    fn refused(&self, status: StatusCode, body: &Value, raw: &[u8]) -> CliError {
        let error = &body["error"];
        let Some(message) = error["message"].as_str() else {
            let text = String::from_utf8_lossy(raw);
            let text: String = text.chars().take(200).collect();
            return fail(format!(
                "{} answered {status} without nachfass's error shape ({}); is --server the nachfass server's base URL?",
                self.base,
                text.trim()
            ));
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                format!(" Check {API_KEY_ENV}: the server does not know this key.")
            }
            StatusCode::FORBIDDEN => " Deploying needs a key with the `admin` scope.".to_owned(),
            _ => String::new(),
        };
        let code = error["code"].as_str().unwrap_or("error");
        fail(format!(
            "the server refused ({} {code}): {}.{hint}",
            status.as_u16(),
            message.trim_end_matches('.')
        ))
    }
}

/// Writes `value` as pretty JSON.
pub fn print_json(out: &mut dyn std::io::Write, value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(fail)?;
    writeln!(out, "{text}").map_err(fail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(server: &str, key: Option<&str>) -> RemoteArgs {
        RemoteArgs {
            server: server.to_owned(),
            api_key: key.map(str::to_owned),
            json: false,
        }
    }

    #[test]
    fn paths_go_below_the_base_url_and_are_encoded() {
        let remote = Remote::new(&args("https://ops.example/nachfass/", Some("k"))).unwrap();
        assert_eq!(
            remote.url(&["v1", "journeys", "a b/c"]).as_str(),
            "https://ops.example/nachfass/v1/journeys/a%20b%2Fc"
        );
        let remote = Remote::new(&args("http://127.0.0.1:8080", Some("k"))).unwrap();
        assert_eq!(
            remote.url(&["v1", "plugins"]).as_str(),
            "http://127.0.0.1:8080/v1/plugins"
        );
    }

    #[test]
    fn a_missing_key_or_a_bad_url_is_refused_before_any_request() {
        let error = Remote::new(&args("http://127.0.0.1:1", None))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("NACHFASS_API_KEY is not set"), "{error}");
        let error = Remote::new(&args("http://127.0.0.1:1", Some("  ")))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("NACHFASS_API_KEY is not set"), "{error}");
        let error = Remote::new(&args("ftp://files.example", Some("k")))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("http:// or https://"), "{error}");
    }
}
