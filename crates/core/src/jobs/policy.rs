//! A job's run policy, as pure decisions: what a due scheduled instant becomes given the
//! runs still active (concurrency), whether an instant missed while no master could start
//! it still runs (the window: Chronos's `epsilon`, Metronome's `startingDeadlineSeconds`),
//! and when a failed attempt is retried (retries with backoff).

/// What to do with a run due while others of the same job are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Concurrency {
    /// Start it beside them.
    Allow,
    /// Skip it (recorded, with the run that held it off).
    Forbid,
    /// Stop them, then start it.
    Replace,
}

/// The decision for one due run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Start,
    /// Start it after these active runs are stopped.
    StartReplacing(Vec<String>),
    Skip(SkipReason),
}

/// Why a scheduled instant did not run: recorded in the job's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum SkipReason {
    /// FORBID, and this run was still active.
    StillRunning { run_id: String },
    /// Missed by more than the job's window (no master could start it in time).
    Missed { late_ms: u64, window_ms: u64 },
    /// The job was disabled at that instant.
    Disabled,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::StillRunning { run_id } => {
                write!(f, "run {run_id} was still active (concurrencyPolicy FORBID)")
            }
            SkipReason::Missed { late_ms, window_ms } => write!(
                f,
                "missed by {} s, more than the {} s a late start is allowed (no master could start it in time)",
                late_ms / 1000,
                window_ms / 1000
            ),
            SkipReason::Disabled => write!(f, "the job was disabled"),
        }
    }
}

/// A run due at `scheduled_ms`, decided at `now_ms`: started if not later than `window_ms`
/// (a late start), else skipped as missed; then the concurrency policy over the job's
/// `active` runs (oldest first).
pub fn on_due(
    scheduled_ms: u64,
    now_ms: u64,
    window_ms: u64,
    policy: Concurrency,
    active: &[String],
) -> Due {
    let late_ms = now_ms.saturating_sub(scheduled_ms);
    if late_ms > window_ms {
        return Due::Skip(SkipReason::Missed { late_ms, window_ms });
    }
    match (policy, active.first()) {
        (_, None) | (Concurrency::Allow, _) => Due::Start,
        (Concurrency::Forbid, Some(run_id)) => Due::Skip(SkipReason::StillRunning {
            run_id: run_id.clone(),
        }),
        (Concurrency::Replace, Some(_)) => Due::StartReplacing(active.to_vec()),
    }
}

/// How a job retries a failed attempt: at most `retries` more attempts, the first after
/// `backoff_ms`, each further one `factor` times the one before, at most `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub retries: u32,
    pub backoff_ms: u64,
    pub factor: f64,
    pub max_ms: u64,
}

impl Retry {
    /// When attempt `failed_attempt` (1 for the first) ended in failure at `ended_ms`: the
    /// time the next attempt starts, or `None` when the retries are spent (the run fails).
    pub fn next_attempt_at(&self, failed_attempt: u32, ended_ms: u64) -> Option<u64> {
        if failed_attempt == 0 || failed_attempt > self.retries {
            return None;
        }
        let exponent = i32::try_from(failed_attempt - 1).unwrap_or(i32::MAX);
        let delay = self.backoff_ms as f64 * self.factor.powi(exponent);
        let delay = if delay.is_finite() {
            (delay as u64).min(self.max_ms)
        } else {
            self.max_ms
        };
        Some(ended_ms.saturating_add(delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn concurrency_policies_decide_a_due_run_beside_active_ones() {
        let active = runs(&["r1", "r2"]);
        assert_eq!(on_due(10, 10, 0, Concurrency::Allow, &active), Due::Start);
        assert_eq!(
            on_due(10, 10, 0, Concurrency::Forbid, &active),
            Due::Skip(SkipReason::StillRunning {
                run_id: "r1".into()
            })
        );
        assert_eq!(
            on_due(10, 10, 0, Concurrency::Replace, &active),
            Due::StartReplacing(active.clone())
        );
        for policy in [
            Concurrency::Allow,
            Concurrency::Forbid,
            Concurrency::Replace,
        ] {
            assert_eq!(on_due(10, 10, 0, policy, &[]), Due::Start, "{policy:?}");
        }
    }

    #[test]
    fn a_late_run_starts_within_its_window_and_is_skipped_after_it() {
        assert_eq!(
            on_due(1_000, 61_000, 60_000, Concurrency::Allow, &[]),
            Due::Start
        );
        let missed = on_due(1_000, 61_001, 60_000, Concurrency::Allow, &[]);
        assert_eq!(
            missed,
            Due::Skip(SkipReason::Missed {
                late_ms: 60_001,
                window_ms: 60_000
            })
        );
        let Due::Skip(reason) = missed else {
            unreachable!()
        };
        assert!(reason
            .to_string()
            .starts_with("missed by 60 s, more than the 60 s"));
        // Missed beats FORBID: the reason recorded is the lateness.
        assert!(matches!(
            on_due(0, 10, 5, Concurrency::Forbid, &runs(&["r"])),
            Due::Skip(SkipReason::Missed { .. })
        ));
    }

    #[test]
    fn retries_back_off_until_they_are_spent() {
        let retry = Retry {
            retries: 3,
            backoff_ms: 1_000,
            factor: 2.0,
            max_ms: 3_000,
        };
        assert_eq!(retry.next_attempt_at(1, 100), Some(1_100));
        assert_eq!(retry.next_attempt_at(2, 100), Some(2_100));
        assert_eq!(retry.next_attempt_at(3, 100), Some(3_100), "capped at max");
        assert_eq!(
            retry.next_attempt_at(4, 100),
            None,
            "3 retries after the first attempt"
        );
        let none = Retry {
            retries: 0,
            ..retry
        };
        assert_eq!(none.next_attempt_at(1, 100), None);
        let huge = Retry {
            retries: u32::MAX,
            factor: 10.0,
            ..retry
        };
        assert_eq!(huge.next_attempt_at(5_000, 0), Some(3_000), "no overflow");
    }
}
