//! Test-only hold points inside the executor (feature `test-hooks`, never in release builds).
//!
//! Points, in the order an execution reaches them: `claim` (before `BEGIN` and the claim),
//! then, inside the claimed transaction: `claimed` (right after the claim), `begin`
//! (before the operation's existence check), `execute` (before the operation runs),
//! `before_complete` (after the operation's writes), `audit` (before the statement
//! that stores the record and the `new` audit row) and `commit` (before `COMMIT`).
//! In-process tests [`TestHooks::arm`] a point: the first executor to reach it parks until
//! released. Multi-process tests set `IDEM_TEST_HOLD=<point>:<millis>:<key prefix>`:
//! every executor whose key starts with the prefix sleeps that long at the point.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::key::Scope;

/// The engine's hold points.
#[derive(Debug, Default)]
pub struct TestHooks {
    env: Option<(String, Duration, String)>,
    armed: Mutex<HashMap<&'static str, HoldHandle>>,
    reached: Mutex<HashMap<&'static str, u64>>,
}

/// One armed hold.
#[derive(Debug, Clone)]
pub struct HoldHandle {
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl HoldHandle {
    /// Waits until an executor is parked at the point.
    pub async fn reached(&self) {
        let mut rx = self.reached.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Lets the parked executor go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

impl TestHooks {
    pub(crate) fn from_env() -> Self {
        let env = std::env::var("IDEM_TEST_HOLD").ok().and_then(|v| {
            let mut parts = v.splitn(3, ':');
            let point = parts.next()?.to_owned();
            let ms = parts.next()?.parse().ok()?;
            let prefix = parts.next().unwrap_or("").to_owned();
            Some((point, Duration::from_millis(ms), prefix))
        });
        Self {
            env,
            ..Self::default()
        }
    }

    /// Arms `point`: the next executor to reach it parks until released.
    pub fn arm(&self, point: &'static str) -> HoldHandle {
        let handle = HoldHandle {
            reached: watch::channel(false).0,
            released: watch::channel(false).0,
        };
        self.armed.lock().insert(point, handle.clone());
        handle
    }

    /// How many times executors have reached `point` so far.
    pub fn times_reached(&self, point: &'static str) -> u64 {
        self.reached.lock().get(point).copied().unwrap_or(0)
    }

    pub(crate) async fn reach(&self, point: &'static str, scope: &Scope) {
        *self.reached.lock().entry(point).or_default() += 1;
        if let Some((p, pause, prefix)) = &self.env {
            if p == point && scope.key.as_str().starts_with(prefix.as_str()) {
                tokio::time::sleep(*pause).await;
            }
        }
        let Some(hold) = self.armed.lock().remove(point) else {
            return;
        };
        let mut released = hold.released.subscribe();
        hold.reached.send_replace(true);
        let _ = released.wait_for(|r| *r).await;
    }
}
