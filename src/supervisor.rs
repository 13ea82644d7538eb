//! [`Supervisor`]: every background task of a `serve` process, started in named stages and
//! stopped stage by stage.
//!
//! A task is a closure that makes a future from a [`CancellationToken`]; the future must return
//! soon after the token is cancelled (between two units of work, never in the middle of one that
//! a crash could not also interrupt). A task that ends while its stage is still running (it
//! returned early, errored or panicked) is logged and started again after a back-off of one
//! second, doubling up to [`MAX_RESTART_DELAY`], so one failure never silently stops a worker.
//!
//! [`Supervisor::shutdown`] cancels the stages in the order they were added and waits for each to
//! finish before cancelling the next, up to a bound per stage; tasks still running past it are
//! aborted and named in the log. Wiring adds the producers of work first (keeper, webhooks), then
//! the pipeline that sends it, then the indexers that read the results, so nothing is left
//! half-sent by a stage that stopped too early.

use std::{future::Future, sync::Mutex, time::Duration};

use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

/// Longest wait before a task that ended on its own is started again.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// A back-off this long or longer is reset: the task ran well for a while before it ended.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// One stage: its tasks share a token and stop together.
struct Stage {
    name: &'static str,
    token: CancellationToken,
    tasks: JoinSet<()>,
}

/// The process's background tasks; see the module docs.
#[derive(Default)]
pub struct Supervisor {
    stages: Mutex<Vec<Stage>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_list().entries(stages.iter().map(|s| (s.name, s.tasks.len()))).finish()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `task` in `stage` (made on first use; stages stop in the order they were first
    /// named), under `name` in the logs. `task` is called again to restart it if it ends while
    /// the stage runs.
    pub fn spawn<F, Fut>(&self, stage: &'static str, name: impl Into<String>, task: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        let index = match stages.iter().position(|s| s.name == stage) {
            Some(i) => i,
            None => {
                stages.push(Stage { name: stage, token: CancellationToken::new(), tasks: JoinSet::new() });
                stages.len() - 1
            }
        };
        let token = stages[index].token.clone();
        stages[index].tasks.spawn(supervise(stage, name, token, task));
    }

    /// The token of `stage`, for work that must stop with it but is not a task of its own.
    pub fn token(&self, stage: &'static str) -> Option<CancellationToken> {
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages.iter().find(|s| s.name == stage).map(|s| s.token.clone())
    }

    /// How many tasks run in each stage, in stopping order.
    pub fn running(&self) -> Vec<(&'static str, usize)> {
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages.iter().map(|s| (s.name, s.tasks.len())).collect()
    }

    /// Stops every stage in order, giving each up to `per_stage` to finish before its remaining
    /// tasks are aborted. Answers the names of the stages that had to be aborted.
    pub async fn shutdown(&self, per_stage: Duration) -> Vec<&'static str> {
        let stages = std::mem::take(&mut *self.stages.lock().unwrap_or_else(|e| e.into_inner()));
        let mut aborted = Vec::new();
        for mut stage in stages {
            stage.token.cancel();
            let drained = tokio::time::timeout(per_stage, async {
                while let Some(done) = stage.tasks.join_next().await {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!(stage = stage.name, "a task panicked while stopping");
                    }
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(stage = stage.name, left = stage.tasks.len(), "stage did not stop in time; aborting it");
                stage.tasks.shutdown().await;
                aborted.push(stage.name);
            } else {
                tracing::info!(stage = stage.name, "stage stopped");
            }
        }
        aborted
    }
}

/// Runs `task` until `token` is cancelled, restarting it with back-off whenever it ends first.
async fn supervise<F, Fut>(stage: &'static str, name: String, token: CancellationToken, task: F)
where
    F: Fn(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut delay = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        // A task of its own, so a panic ends this run only, not the supervision; aborted with
        // it when the stage is aborted.
        let run = tokio::spawn(task(token.clone()));
        let _abort = AbortOnDrop(run.abort_handle());
        let outcome = run.await;
        if token.is_cancelled() {
            return;
        }
        match outcome {
            Ok(Ok(())) => tracing::error!(stage, task = %name, "task ended on its own; restarting it"),
            Ok(Err(e)) => tracing::error!(stage, task = %name, error = format!("{e:#}"), "task failed; restarting it"),
            Err(e) if e.is_panic() => tracing::error!(stage, task = %name, "task panicked; restarting it"),
            Err(_) => tracing::error!(stage, task = %name, "task was cancelled; restarting it"),
        }
        if started.elapsed() >= HEALTHY_RUN {
            delay = Duration::from_secs(1);
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stages_stop_in_order_and_a_failed_task_is_restarted() {
        let supervisor = Supervisor::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for stage in ["producers", "pipeline", "indexers"] {
            let order = order.clone();
            supervisor.spawn(stage, stage, move |token| {
                let order = order.clone();
                async move {
                    token.cancelled().await;
                    order.lock().unwrap().push(stage);
                    Ok(())
                }
            });
        }
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        supervisor.spawn("producers", "flaky", move |token| {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    anyhow::bail!("boom");
                }
                token.cancelled().await;
                Ok(())
            }
        });
        // Two failures: restarted after 1 s, then after 2 s.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the failed task was restarted twice");
        assert_eq!(supervisor.running(), vec![("producers", 2), ("pipeline", 1), ("indexers", 1)]);

        let aborted = supervisor.shutdown(Duration::from_secs(5)).await;
        assert!(aborted.is_empty());
        assert_eq!(*order.lock().unwrap(), vec!["producers", "pipeline", "indexers"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stage_that_ignores_its_token_is_aborted_and_the_next_still_stops() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stubborn", "sleeper", |_token| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let stopped = Arc::new(AtomicUsize::new(0));
        let s = stopped.clone();
        supervisor.spawn("after", "polite", move |token| {
            let s = s.clone();
            async move {
                token.cancelled().await;
                s.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        let aborted = supervisor.shutdown(Duration::from_secs(2)).await;
        assert_eq!(aborted, vec!["stubborn"]);
        assert_eq!(stopped.load(Ordering::SeqCst), 1);
    }
}
