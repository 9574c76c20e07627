//! Named crash points for the crash harness: `VOLLEY_FAILPOINT=name` (or `name:N`, the N-th
//! time the point is reached) makes the process abort right there, as abruptly as SIGKILL.
//!
//! Points: `after_epoch_log`, `mid_sink_write`, `after_sink_commit_before_checkpoint`,
//! `mid_checkpoint`, `before_checkpoint_pointer`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every fail point name, for validation and docs.
pub const POINTS: &[&str] = &[
    "after_epoch_log",
    "mid_sink_write",
    "after_sink_commit_before_checkpoint",
    "mid_checkpoint",
    "before_checkpoint_pointer",
];

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("VOLLEY_FAILPOINT").ok()?;
            let (name, at) = match spec.split_once(':') {
                Some((n, k)) => (n.to_string(), k.trim().parse().unwrap_or(1)),
                None => (spec.clone(), 1),
            };
            if !POINTS.contains(&name.as_str()) {
                eprintln!(
                    "VOLLEY_FAILPOINT={spec}: unknown point; known: {}",
                    POINTS.join(", ")
                );
                std::process::exit(2);
            }
            Some(Armed {
                name,
                at: at.max(1),
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `name` is the armed point and this is the armed hit.
pub fn hit(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name != name {
        return;
    }
    if armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.at {
        eprintln!("volley: fail point '{name}' reached: aborting");
        std::process::abort();
    }
}
