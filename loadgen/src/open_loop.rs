//! Open-loop load (`--rate`): operations start at a fixed offered rate whatever the server does,
//! and each one's latency runs from the moment it was due to start. A closed loop (a fixed number
//! of workers, each waiting for its answer before sending again) sends less while the server
//! stalls, so its percentiles leave out the very waits they should show (coordinated omission).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hdrhistogram::Histogram;

/// What one operation came to.
pub enum Outcome {
    /// It succeeded (a transfer: the confirmation's 303).
    Done,
    /// It was answered with anything else.
    Failed(String),
    /// It could not start before the phase ended (every customer busy, or out of codes): its
    /// latency is the time it waited, a lower bound of what it would have been.
    Unsent,
}

/// The figures of one open-loop phase.
pub struct Phase {
    /// From each operation's due time to its end, µs; unsent operations included.
    pub latency: Histogram<u64>,
    pub offered: u64,
    pub done: u64,
    pub failed: u64,
    pub unsent: u64,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
    /// From the first due time to the last answer.
    pub seconds: f64,
    /// The most operations under way at once.
    pub max_in_flight: usize,
}

impl Phase {
    fn tally(&mut self, waited: Duration, outcome: Result<Outcome>) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
        match outcome {
            Ok(Outcome::Done) => self.done += 1,
            Ok(Outcome::Unsent) => self.unsent += 1,
            Ok(Outcome::Failed(why)) => self.fail(why),
            Err(error) => self.fail(format!("{error:#}")),
        }
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.failures.len() < 3 {
            self.failures.push(why);
        }
    }
}

/// Starts `op` `rate` times a second for `duration` and waits for every operation to end. `op`
/// is given the end of the phase, after which an operation that has not started gives up
/// (`Outcome::Unsent`).
pub async fn run<F, Fut>(rate: f64, duration: Duration, op: F) -> Result<Phase>
where
    F: Fn(Instant) -> Fut,
    Fut: Future<Output = Result<Outcome>> + Send + 'static,
{
    ensure!(
        rate.is_finite() && rate > 0.0,
        "--rate must be a positive number"
    );
    let mut phase = Phase {
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram")?,
        offered: 0,
        done: 0,
        failed: 0,
        unsent: 0,
        failures: Vec::new(),
        seconds: 0.0,
        max_in_flight: 0,
    };
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let due = start + Duration::from_secs_f64(phase.offered as f64 / rate);
        if due >= end {
            break;
        }
        // When the generator itself falls behind, the due times stay where they were: the
        // operations start late and their latency says so.
        tokio::time::sleep_until(due.into()).await;
        let operation = op(end);
        tasks.spawn(async move {
            let outcome = operation.await;
            (due.elapsed(), outcome)
        });
        phase.offered += 1;
        phase.max_in_flight = phase.max_in_flight.max(tasks.len());
        while let Some(joined) = tasks.try_join_next() {
            let (waited, outcome) = joined.context("an operation panicked")?;
            phase.tally(waited, outcome);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (waited, outcome) = joined.context("an operation panicked")?;
        phase.tally(waited, outcome);
    }
    phase.seconds = start.elapsed().as_secs_f64();
    Ok(phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stall shows in the latency of every operation due during it: each one's latency runs
    /// from its due time to the stall's end.
    #[tokio::test]
    async fn a_stall_counts_against_every_operation_due_during_it() -> Result<()> {
        let stall_until = Instant::now() + Duration::from_millis(300);
        let phase = run(100.0, Duration::from_millis(500), move |_end| async move {
            tokio::time::sleep_until(stall_until.into()).await;
            Ok(Outcome::Done)
        })
        .await?;
        assert_eq!(phase.done, 50);
        assert_eq!(phase.offered, 50);
        // 30 of the 50 were due during the stall; the median one (due at ≈ 245 ms) waited ≈ 55 ms,
        // the first almost all of it.
        assert!(
            phase.latency.value_at_quantile(0.5) >= 30_000,
            "p50 at least 30 ms"
        );
        assert!(phase.latency.max() >= 250_000, "the first waited ≈ 290 ms");
        Ok(())
    }

    #[tokio::test]
    async fn unsent_and_failed_operations_are_counted() -> Result<()> {
        let phase = run(200.0, Duration::from_millis(100), |end| async move {
            if Instant::now() < end {
                Ok(Outcome::Failed("refused".into()))
            } else {
                Ok(Outcome::Unsent)
            }
        })
        .await?;
        assert_eq!(phase.offered, 20);
        assert_eq!(phase.failed, 20);
        assert_eq!(phase.unsent, 0);
        assert_eq!(phase.failures.len(), 3);
        assert!(
            run(0.0, Duration::from_secs(1), |_| async { Ok(Outcome::Done) })
                .await
                .is_err()
        );
        Ok(())
    }
}
