//! Stopping on Ctrl-C or SIGTERM: the first signal asks the pipeline to finish its micro-batch,
//! checkpoint and exit; a second one exits at once.

use tokio::sync::watch;

/// Resolves on Ctrl-C, or SIGTERM on Unix.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A receiver that turns true on the first Ctrl-C or SIGTERM (the caller then stops between
/// micro-batches); the second signal ends the process at once with status 130, as a shell
/// expects of an interrupted command.
pub fn stop_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!(
            "volley: stopping after this micro-batch (a checkpoint is written); signal again to exit at once"
        );
        let _ = tx.send(true);
        shutdown_signal().await;
        eprintln!(
            "volley: stopped at once on a second signal; the last checkpoint is where a restart resumes"
        );
        std::process::exit(130);
    });
    rx
}
