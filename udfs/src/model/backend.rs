//! The process's ONNX backend. `ort` takes its backend (its C API table) once per process, and
//! one environment: the first model loaded picks it, and later models must ask for the same.

use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::{Backend, ModelError};

static CHOSEN: Mutex<Option<Backend>> = Mutex::new(None);
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The process's ONNX environment on `backend`, setting the backend on first use (for callers
/// that build their own sessions, such as benchmarks).
///
/// # Errors
/// [`ModelError::Backend`] when another backend was chosen already or `ort` cannot start.
pub fn environment(backend: Backend) -> Result<&'static Environment, ModelError> {
    let mut chosen = CHOSEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match *chosen {
        Some(already) if already != backend => {
            return Err(ModelError::Backend(format!(
                "this process already runs models on backend '{}'; every model of a pipeline must use the same backend (asked for '{}')",
                already.name(),
                backend.name()
            )));
        }
        Some(_) => {}
        None => {
            match backend {
                Backend::Tract => {
                    ort::set_api(ort_tract::api());
                }
            }
            *chosen = Some(backend);
        }
    }
    // Still holding the lock: only one thread ever builds the environment.
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let env = ort::init()
        .with_name("volley")
        .build()
        .map_err(|e| ModelError::Backend(format!("cannot start the ONNX environment: {e}")))?;
    let env = ENVIRONMENT.get_or_init(|| env);
    drop(chosen);
    Ok(env)
}
