//! The workflow worker: runs committed workflow instances, at least once, in any number
//! of server processes on one store.
//!
//! Invariants:
//! - Claiming is one statement in its own transaction: due rows (`pending` or `running`
//!   with `next_attempt_at <= now`) become `running`, `attempts + 1`, with a fresh
//!   `claim_token` and `next_attempt_at` = the end of the lease. PostgreSQL picks them
//!   with `for update skip locked` (nodes never claim the same row); SQLite has one
//!   process and its write gate. A node that dies mid-delivery leaves `running` rows
//!   that become due again when their lease ends.
//! - Every outcome is recorded only if the row still carries this claim's token
//!   (fencing): a node whose lease ran out cannot overwrite its successor's result.
//!   A `notify` writes its notification and its `delivered` status in one transaction.
//! - An attempt never outlives the lease (`--webhook-timeout` < `--webhook-lease`), so
//!   two nodes never deliver one instance at the same time.
//! - Failed attempts are retried with exponential backoff and jitter until
//!   `--webhook-max-attempts`, then the instance is `failed` with the last error; a
//!   target refused by the SSRF rules fails at once. Errors never carry the URL or the
//!   body (which may embed secrets).
//! - Shutdown stops claiming, waits for running attempts up to [`DRAIN_GRACE`] (or the
//!   webhook timeout, if shorter), then aborts the rest and hands their rows back
//!   (`pending`, due now), so another node can run them at once; this fits in the
//!   server's drain reserve for background work.
//! - Every sleep is cancellable; the loop is woken by local commits and polls with
//!   backoff (50 ms doubling to 1 s) otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem::{on_db, on_tx, Backend, Db, Id, Ts};
use parking_lot::Mutex;
use rand::Rng;
use sqlx::FromRow;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::OutboxHandle;

mod deliver;

const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);
const BATCH: usize = 8;
/// Longest a stopping worker waits for its running attempts.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Worker settings (from `accubooks serve`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Attempts before an instance is `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter, up to an hour.
    pub backoff: Duration,
    /// Longest one webhook attempt may take.
    pub timeout: Duration,
    /// How long a claim holds; must exceed `timeout`.
    pub lease: Duration,
    /// `ACCUBOOKS_WEBHOOK_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// Attempts running at once on this node.
    pub concurrency: usize,
}

/// A claimed instance.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    company_id: Id,
    id: Id,
    workflow_id: Id,
    trigger_entity_type: String,
    trigger_entity_id: Option<String>,
    input: Option<String>,
    attempts: i32,
    created_at: Ts,
}

#[derive(Debug, FromRow)]
struct Action {
    trigger_event: String,
    action_type: String,
    action_target: Option<String>,
    action_url: Option<String>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the instance is `delivered`.
    Delivered,
    /// Failed; retried later (or `failed` at the attempt limit).
    Retry(String),
    /// Failed for good.
    Failed(String),
}

/// The worker of one node.
#[derive(Clone)]
pub struct Worker {
    db: Db,
    cfg: Arc<WorkerConfig>,
    outbox: OutboxHandle,
    held: Arc<Mutex<HashMap<(Uuid, Uuid), Uuid>>>,
}

impl Worker {
    /// A worker over `db`.
    pub fn new(db: Db, cfg: WorkerConfig, outbox: OutboxHandle) -> Self {
        Self {
            db,
            cfg: Arc::new(cfg),
            outbox,
            held: Arc::default(),
        }
    }

    /// Runs until `shutdown`, then drains (see the module invariants).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut idle = POLL_MIN;
        let mut stats_at: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if stats_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.refresh_gauges().await;
                stats_at = Some(Instant::now());
            }
            let want = self.cfg.concurrency.saturating_sub(tasks.len()).min(BATCH);
            let mut full = false;
            if want > 0 {
                match self.claim(want).await {
                    Ok((token, batch)) => {
                        full = batch.len() == want;
                        if !batch.is_empty() {
                            idle = POLL_MIN;
                        }
                        for inst in batch {
                            self.held
                                .lock()
                                .insert((inst.company_id.0, inst.id.0), token);
                            let w = self.clone();
                            tasks.spawn(async move {
                                w.attempt(token, inst).await;
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "workflow worker could not claim instances");
                        idle = (idle * 2).min(POLL_MAX);
                    }
                }
            }
            if full && tasks.len() < self.cfg.concurrency {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.outbox.woken() => idle = POLL_MIN,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = tokio::time::sleep(idle) => idle = (idle * 2).min(POLL_MAX),
            }
        }
        self.drain(tasks).await;
    }

    async fn drain(&self, mut tasks: JoinSet<()>) {
        let wait = (self.cfg.timeout + Duration::from_millis(500)).min(DRAIN_GRACE);
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(wait, all).await.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let held: Vec<_> = self.held.lock().drain().collect();
        for ((company, id), token) in held {
            if let Err(e) = self.release(company, id, token).await {
                tracing::warn!(error = %e, instance = %id, "could not release a workflow instance");
            }
        }
    }

    /// Whether any instance is due (a read: idle polls never take a write lock).
    async fn any_due(&self, now: Ts) -> Result<bool, sqlx::Error> {
        let due: Option<i32> = on_db!(&self.db, |c| sqlx::query_scalar(
            "select 1 from workflow_instances where status in ('pending', 'running') \
             and next_attempt_at <= $1 limit 1"
        )
        .bind(now)
        .fetch_optional(c)
        .await)?;
        Ok(due.is_some())
    }

    /// Claims up to `limit` due instances; returns the claim's token and the rows.
    pub async fn claim(&self, limit: usize) -> Result<(Uuid, Vec<Claimed>), sqlx::Error> {
        let token = Uuid::now_v7();
        let now = Ts::now();
        if !self.any_due(now).await? {
            return Ok((token, Vec::new()));
        }
        let lock = match self.db.backend() {
            Backend::Postgres => " for update skip locked",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "update workflow_instances set status = 'running', attempts = attempts + 1, \
             next_attempt_at = $1, lease_until = $1, claim_token = $2, updated_at = $3 \
             where (company_id, id) in (select company_id, id from workflow_instances \
             where status in ('pending', 'running') and next_attempt_at <= $3 \
             order by next_attempt_at limit $4{lock}) \
             returning company_id, id, workflow_id, trigger_entity_type, trigger_entity_id, \
             input, attempts, created_at"
        );
        let mut tx = self.db.begin().await?;
        let rows = on_tx!(&mut tx, |c| sqlx::query_as::<_, Claimed>(&sql)
            .bind(now.plus(self.cfg.lease))
            .bind(Id(token))
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(1))
            .fetch_all(c)
            .await)?;
        tx.commit().await?;
        Ok((token, rows))
    }

    /// Runs one claimed instance and records the outcome.
    pub async fn attempt(&self, token: Uuid, inst: Claimed) -> Outcome {
        let started = Instant::now();
        let (label, outcome) = match self.action(&inst).await {
            Ok(Some(a)) if a.action_type == "notify" => {
                let target = a.action_target.unwrap_or_default();
                ("notify", self.notify(token, &inst, &target).await)
            }
            Ok(Some(a)) => ("webhook", self.webhook(&inst, &a).await),
            Ok(None) => ("unknown", Outcome::Failed("workflow not found".into())),
            Err(e) => ("unknown", Outcome::Retry(format!("store error: {e}"))),
        };
        let recorded = match &outcome {
            Outcome::Delivered if label == "notify" => Ok(true),
            _ => self.finish(token, &inst, &outcome).await,
        };
        let m = &self.outbox.metrics;
        m.duration_ms
            .get_or_create(&[("action", label)])
            .observe(started.elapsed().as_secs_f64() * 1000.0);
        let name = match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) if self.exhausted(&inst) => "failed",
            Outcome::Retry(_) => "retry",
            Outcome::Failed(_) => "failed",
        };
        m.deliveries
            .get_or_create(&[("action", label), ("outcome", name)])
            .inc();
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(instance = %inst.id.0, "claim lost before the outcome was recorded")
            }
            Err(e) => {
                tracing::warn!(error = %e, instance = %inst.id.0, "could not record a workflow outcome")
            }
        }
        if let Outcome::Retry(e) | Outcome::Failed(e) = &outcome {
            tracing::info!(instance = %inst.id.0, attempts = inst.attempts, error = %e, outcome = name, "workflow attempt failed");
        }
        self.held.lock().remove(&(inst.company_id.0, inst.id.0));
        outcome
    }

    fn exhausted(&self, inst: &Claimed) -> bool {
        u32::try_from(inst.attempts).unwrap_or(u32::MAX) >= self.cfg.max_attempts
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let full = self
            .cfg
            .backoff
            .saturating_mul(1 << exp)
            .min(Duration::from_secs(3600));
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    async fn action(&self, inst: &Claimed) -> Result<Option<Action>, sqlx::Error> {
        on_db!(&self.db, |c| sqlx::query_as::<_, Action>(
            "select trigger_event, action_type, action_target, action_url from workflows \
             where company_id = $1 and id = $2"
        )
        .bind(inst.company_id)
        .bind(inst.workflow_id)
        .fetch_optional(c)
        .await)
    }

    /// Records the outcome if the claim is still ours; `Ok(false)` when it was lost.
    async fn finish(
        &self,
        token: Uuid,
        inst: &Claimed,
        outcome: &Outcome,
    ) -> Result<bool, sqlx::Error> {
        let now = Ts::now();
        let (status, error, next, done) = match outcome {
            Outcome::Delivered => ("delivered", None, now, Some(now)),
            Outcome::Retry(e) if !self.exhausted(inst) => (
                "pending",
                Some(e.as_str()),
                now.plus(self.backoff(inst.attempts)),
                None,
            ),
            Outcome::Retry(e) | Outcome::Failed(e) => ("failed", Some(e.as_str()), now, Some(now)),
        };
        let _gate = self.db.write_gate().await?;
        let n = on_db!(&self.db, |c| {
            sqlx::query(
            "update workflow_instances set status = $1, last_error = $2, next_attempt_at = $3, \
             lease_until = null, claim_token = null, updated_at = $4, completed_at = $5 \
             where company_id = $6 and id = $7 and claim_token = $8"
        )
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(now)
        .bind(done)
        .bind(inst.company_id)
        .bind(inst.id)
        .bind(Id(token))
        .execute(c)
        .await
        .map(|r| r.rows_affected())
        })?;
        Ok(n == 1)
    }

    /// Hands a claimed row back (shutdown): `pending`, due now.
    async fn release(&self, company: Uuid, id: Uuid, token: Uuid) -> Result<(), sqlx::Error> {
        let now = Ts::now();
        let _gate = self.db.write_gate().await?;
        on_db!(&self.db, |c| sqlx::query(
            "update workflow_instances set status = 'pending', next_attempt_at = $1, \
             lease_until = null, claim_token = null, updated_at = $1 \
             where company_id = $2 and id = $3 and claim_token = $4"
        )
        .bind(now)
        .bind(Id(company))
        .bind(Id(id))
        .bind(Id(token))
        .execute(c)
        .await
        .map(|_| ()))
    }

    /// Publishes the outbox depth gauges.
    pub async fn refresh_gauges(&self) {
        let row: Result<(i64, Option<Ts>), sqlx::Error> = on_db!(&self.db, |c| sqlx::query_as(
            "select count(*), min(created_at) from workflow_instances \
             where status in ('pending', 'running')"
        )
        .fetch_one(c)
        .await);
        match row {
            Ok((n, oldest)) => {
                let m = &self.outbox.metrics;
                m.pending.set(n);
                let age = oldest
                    .map(|t| (Ts::now().micros() - t.micros()).max(0) as f64 / 1e6)
                    .unwrap_or(0.0);
                m.oldest_pending_age.set(age);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the outbox depth"),
        }
    }
}
