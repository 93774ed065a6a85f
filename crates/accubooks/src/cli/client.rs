//! The running server's HTTP API, as the operator commands use it.
//!
//! The operator token is read from `ACCUBOOKS_ADMIN_TOKEN` only, never from the command
//! line (where other users of the machine could read it).

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::Value;

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// One answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, as sent.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The operator token from the environment.
pub fn operator_token() -> Result<String, String> {
    std::env::var("ACCUBOOKS_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "set ACCUBOOKS_ADMIN_TOKEN to the operator token".to_owned())
}

impl Api {
    /// A client of the server at `url` (`http://host:port`).
    pub fn new(url: &str, concurrency: usize) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("--url must be http(s)://host:port, not {url:?}"));
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(1))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self { http, base })
    }

    /// Sends one request with a bearer token, an optional key and a JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        let status = res.status().as_u16();
        let body = res
            .bytes()
            .await
            .map_err(|e| format!("reading the answer from {}: {e}", self.base))?;
        Ok(Answer { status, body })
    }

    /// `POST /admin/companies`: a new company and its first admin's token.
    pub async fn create_company(
        &self,
        operator: &str,
        name: &str,
        email: Option<&str>,
    ) -> Result<Value, String> {
        let mut body = serde_json::json!({ "name": name });
        if let Some(e) = email {
            body["email"] = Value::from(e);
        }
        let a = self
            .send(
                Method::POST,
                "/admin/companies",
                operator,
                None,
                Some(&body),
            )
            .await?;
        expect(a, 201, "create the company")
    }

    /// `POST /admin/companies/{id}/tokens`: a token for a user who has access.
    pub async fn issue_token(
        &self,
        operator: &str,
        company: &str,
        email: &str,
    ) -> Result<Value, String> {
        let body = serde_json::json!({ "email": email });
        let path = format!("/admin/companies/{company}/tokens");
        let a = self
            .send(Method::POST, &path, operator, None, Some(&body))
            .await?;
        expect(a, 201, "issue the token")
    }
}

/// The answer's JSON when its status is `want`, else the problem's detail as an error.
pub fn expect(a: Answer, want: u16, what: &str) -> Result<Value, String> {
    let v = a.json();
    if a.status == want {
        Ok(v)
    } else {
        let detail = v["detail"].as_str().unwrap_or("no detail");
        let code = v["code"].as_str().unwrap_or("?");
        Err(format!("could not {what}: {} {code}: {detail}", a.status))
    }
}
