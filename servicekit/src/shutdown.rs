//! The shutdown signal: SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and `make down`
//! send), whichever comes first.
//!
//! Why one function: each service had its own copy, and they differed in what happened
//! when a handler could not be installed. Here a handler that cannot be installed is
//! logged and that signal is simply never awaited; the other one still works.
//!
//! Async services pass [`signal()`] to their `run`; a synchronous `main` (the pipeline's
//! timely job) uses [`on_signal`], which waits on a small thread of its own.

/// Resolves on SIGINT or, on Unix, SIGTERM.
pub async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {error}");
            std::future::pending::<()>().await;
        }
        "SIGINT"
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
        "SIGTERM"
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&str>();
    let name = tokio::select! {
        name = interrupt => name,
        name = terminate => name,
    };
    tracing::info!(signal = name, "shutdown signal received");
}

/// Calls `then` on a background thread once [`signal()`] resolves: for a `main` that has
/// no async runtime of its own. The handlers are installed before this returns, so a
/// signal sent right after cannot be missed.
pub fn on_signal(then: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    #[cfg(unix)]
    let wait = {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered here, before returning; a failure is the caller's to report.
        let _entered = runtime.enter();
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "shutdown signal received");
        }
    };
    #[cfg(not(unix))]
    let wait = signal();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(wait);
            then();
        })?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    /// One test sends one real SIGTERM to this process; it has the handlers installed
    /// (tokio keeps them for the life of the process), so nothing else is disturbed.
    #[test]
    fn sigterm_ends_the_wait() {
        let (tx, rx) = mpsc::channel();
        super::on_signal(move || {
            let _ = tx.send(());
        })
        .unwrap();
        // `sh`'s builtin kill: no dependency on a `kill` binary being installed.
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", std::process::id())])
            .status()
            .unwrap();
        assert!(status.success());
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the SIGTERM was seen");
    }
}
