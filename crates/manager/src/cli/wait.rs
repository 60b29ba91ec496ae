//! `--wait`: follow a cluster through `WatchCluster` until it is Ready (or gone), showing one
//! line per phase: an indicatif spinner with the elapsed time on a terminal, plain
//! `[  12.3s] Phase: message` lines otherwise (logs, CI, pipes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use fledge_core::proto::v1;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::Code;

use super::Exit;
use super::client::{CliError, Client};

/// How long a cluster may stay Degraded before `--wait` gives up on it: long enough for a
/// machine to be replaced, short enough not to hang for the whole timeout.
/// Checked whenever the cluster changes.
const DEGRADED_GRACE: Duration = Duration::from_secs(300);
/// Pause before re-opening a watch that broke (manager restarting).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What the wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Phase Ready.
    Ready,
    /// The cluster is gone (NOT_FOUND or a DELETED event).
    Gone,
}

/// Shows progress on a terminal or as plain lines.
struct Progress {
    start: Instant,
    spinner: Option<ProgressBar>,
    /// The phase shown now and when it started (terminal mode prints it once it is done).
    current: std::cell::RefCell<Option<(String, Instant)>>,
}

impl Progress {
    fn new() -> Self {
        let spinner = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            let style =
                ProgressStyle::with_template("{spinner:.cyan} [{elapsed_precise}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            start: Instant::now(),
            spinner,
            current: std::cell::RefCell::new(None),
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// A line that stays (a finished phase, a note).
    fn line(&self, text: &str) {
        let line = format!("[{:>6.1}s] {text}", self.elapsed());
        match &self.spinner {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// On a terminal: the phase shown so far becomes a permanent line with its duration.
    fn close_phase(&self) {
        if let (Some(bar), Some((phase, since))) = (&self.spinner, self.current.take()) {
            bar.println(format!(
                "[{:>6.1}s] {phase} ({:.1}s)",
                self.elapsed(),
                since.elapsed().as_secs_f64()
            ));
        }
    }

    /// The current phase and message: a new line per phase without a terminal; on a
    /// terminal, the spinner shows it and the previous phase stays as a line.
    fn current(&self, phase: &str, message: &str, new_phase: bool) {
        let text = if message.is_empty() {
            phase.to_owned()
        } else {
            format!("{phase}: {message}")
        };
        match &self.spinner {
            Some(bar) => {
                if new_phase {
                    self.close_phase();
                    *self.current.borrow_mut() = Some((phase.to_owned(), Instant::now()));
                }
                bar.set_message(text);
            }
            None if new_phase => self.line(&text),
            None => {}
        }
    }

    fn finish(&self) {
        self.close_phase();
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

/// Waits for `name` to reach `goal` within `timeout`.
///
/// # Errors
/// Exit 1 with the reason on Invalid/Failed, a Degraded phase that lasts, or the timeout;
/// the connection errors of [`Client::status_error`].
pub async fn wait(
    client: &Client,
    name: &str,
    goal: Goal,
    timeout: Duration,
) -> Result<Exit, CliError> {
    let progress = Progress::new();
    let result = tokio::time::timeout(timeout, follow(client, name, goal, &progress)).await;
    progress.finish();
    let took = humantime::format_duration(Duration::from_secs(progress.start.elapsed().as_secs()));
    match result {
        Ok(Ok(_)) => {
            match goal {
                Goal::Ready => println!("Cluster {name} is Ready ({took})"),
                Goal::Gone => println!("Cluster {name} is deleted ({took})"),
            }
            Ok(Exit::Success)
        }
        Ok(Err(err)) => Err(err),
        Err(_) => {
            let want = match goal {
                Goal::Ready => "Ready",
                Goal::Gone => "deleted",
            };
            Err(CliError::failure(format!(
                "timed out after {} waiting for cluster {name} to be {want}",
                humantime::format_duration(timeout)
            )))
        }
    }
}

/// Follows the watch (re-opening it when the connection breaks) until the goal; returns the
/// last phase seen.
async fn follow(
    client: &Client,
    name: &str,
    goal: Goal,
    progress: &Progress,
) -> Result<String, CliError> {
    let mut last_phase = String::new();
    let mut degraded_since: Option<Instant> = None;
    let what = format!("watching cluster {name:?}");
    loop {
        let mut api = client.api.clone();
        let request = v1::WatchClusterRequest {
            name: name.to_owned(),
            since_revision: String::new(),
        };
        let mut stream = match api.watch_cluster(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound && goal == Goal::Gone => {
                return Ok(last_phase);
            }
            Err(status) if retryable(&status) => {
                progress.line(&format!("connection lost ({}); retrying", status.message()));
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(status) => return Err(client.status_error(&what, &status)),
        };
        loop {
            let event = match stream.message().await {
                Ok(Some(event)) => event,
                // The server ended the stream (shutting down): open a new one.
                Ok(None) => break,
                Err(status) if status.code() == Code::NotFound && goal == Goal::Gone => {
                    return Ok(last_phase);
                }
                Err(status) if retryable(&status) => {
                    progress.line(&format!("connection lost ({}); retrying", status.message()));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
                Err(status) => return Err(client.status_error(&what, &status)),
            };
            if event.r#type == v1::cluster_event::Type::Deleted as i32 {
                return match goal {
                    Goal::Gone => Ok(last_phase),
                    Goal::Ready => Err(CliError::failure(format!(
                        "cluster {name} was deleted while waiting for it to be Ready"
                    ))),
                };
            }
            let status = event.cluster.and_then(|c| c.status).unwrap_or_default();
            let phase = if status.phase.is_empty() {
                "Pending".to_owned()
            } else {
                status.phase.clone()
            };
            let new_phase = phase != last_phase;
            progress.current(&phase, &status.message, new_phase);
            last_phase = phase.clone();
            if goal == Goal::Gone {
                continue;
            }
            match phase.as_str() {
                "Ready" => return Ok(last_phase),
                "Invalid" | "Failed" => {
                    return Err(CliError::failure(format!(
                        "cluster {name} is {phase}: {}",
                        status.message
                    )));
                }
                "Degraded" => {
                    let since = *degraded_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DEGRADED_GRACE {
                        return Err(CliError::failure(format!(
                            "cluster {name} stayed Degraded for {}: {}",
                            humantime::format_duration(DEGRADED_GRACE),
                            status.message
                        )));
                    }
                }
                _ => degraded_since = None,
            }
        }
    }
}

/// Whether a watch error is a broken connection worth re-opening.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted
    )
}
