//! The two actions of a claimed instance: `notify` (a notification row and `delivered`
//! in one fenced transaction) and `webhook` (resolve, check, POST the signed payload to
//! the checked address, never following redirects).

use std::time::Duration;

use idem::{on_tx, Id, Ts};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Action, Claimed, Outcome, Worker};
use crate::domain::webhook_secret;
use crate::workflows::{signature, ssrf};

/// The JSON a webhook receives.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    id: Id,
    company_id: Id,
    workflow_id: Id,
    event: &'a str,
    trigger_entity_type: &'a str,
    trigger_entity_id: Option<&'a str>,
    input: Value,
    created_at: Ts,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Worker {
    /// `notify`: the notification row and `delivered`, in one transaction, fenced.
    pub(super) async fn notify(&self, token: Uuid, inst: &Claimed, target: &str) -> Outcome {
        let result: Result<bool, sqlx::Error> = async {
            let now = Ts::now();
            let mut tx = self.db.begin().await?;
            on_tx!(&mut tx, |c| sqlx::query(
                "insert into notifications (company_id, id, instance_id, target, created_at) \
                 values ($1, $2, $3, $4, $5) on conflict (company_id, instance_id) do nothing"
            )
            .bind(inst.company_id)
            .bind(Id(Uuid::now_v7()))
            .bind(inst.id)
            .bind(target)
            .bind(now)
            .execute(c)
            .await
            .map(|_| ()))?;
            let n = on_tx!(&mut tx, |c| sqlx::query(
                "update workflow_instances set status = 'delivered', last_error = null, \
                 next_attempt_at = $1, lease_until = null, claim_token = null, updated_at = $1, \
                 completed_at = $1 where company_id = $2 and id = $3 and claim_token = $4"
            )
            .bind(now)
            .bind(inst.company_id)
            .bind(inst.id)
            .bind(Id(token))
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
            if n == 1 {
                tx.commit().await?;
                Ok(true)
            } else {
                tx.rollback().await?;
                Ok(false)
            }
        }
        .await;
        match result {
            Ok(true) => Outcome::Delivered,
            Ok(false) => Outcome::Retry("claim lost".into()),
            Err(e) => Outcome::Retry(format!("store error: {e}")),
        }
    }

    fn payload(&self, inst: &Claimed, event: &str) -> Vec<u8> {
        let input = inst
            .input
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let p = Payload {
            id: inst.id,
            company_id: inst.company_id,
            workflow_id: inst.workflow_id,
            event,
            trigger_entity_type: &inst.trigger_entity_type,
            trigger_entity_id: inst.trigger_entity_id.as_deref(),
            input,
            created_at: inst.created_at,
        };
        serde_json::to_vec(&p).unwrap_or_default()
    }

    /// `webhook`: resolve and check the target, then POST to the checked address.
    pub(super) async fn webhook(&self, inst: &Claimed, a: &Action) -> Outcome {
        let raw = a.action_url.as_deref().unwrap_or_default();
        let url = match ssrf::parse(raw) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(format!("webhook_url_not_allowed: {e}")),
        };
        let addr = match ssrf::resolve(&url, self.cfg.allow_private, self.cfg.timeout).await {
            Ok(a) => a,
            Err(e @ ssrf::Refusal::Unresolved(_)) => return Outcome::Retry(e.to_string()),
            Err(e) => return Outcome::Failed(format!("webhook_url_not_allowed: {e}")),
        };
        let secret = match webhook_secret::current(&self.db, inst.company_id.0).await {
            Ok(s) => s,
            Err(e) => return Outcome::Retry(format!("signing secret unavailable: {e}")),
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.cfg.timeout.min(Duration::from_secs(5)))
            .timeout(self.cfg.timeout)
            .user_agent("AccuBooks-Webhooks/1");
        if let Some(url::Host::Domain(d)) = url.host() {
            builder = builder.resolve(d, addr);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(error_chain(&e.without_url())),
        };
        let body = self.payload(inst, &a.trigger_event);
        let t = chrono::Utc::now().timestamp();
        let sent = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", inst.id.0.to_string())
            .header(signature::HEADER, signature::header(&secret, t, &body))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Delivered,
            Ok(r) if r.status().is_redirection() => Outcome::Retry(format!(
                "HTTP {} (redirects are not followed)",
                r.status().as_u16()
            )),
            Ok(r) => Outcome::Retry(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Outcome::Retry(error_chain(&e.without_url())),
        }
    }
}
