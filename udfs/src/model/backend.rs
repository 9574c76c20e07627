//! The process's ONNX backend. `ort` takes its backend (its C API table) once per process, and
//! one environment: the first model loaded picks it, and later models must ask for the same.
//!
//! tract is installed with `ort::set_api`; ONNX Runtime is opened from its shared library at
//! run time: `ORT_DYLIB_PATH`, or the library inside the `onnxruntime` package of the `python3`
//! on `PATH`.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::{Backend, ModelError};

static CHOSEN: Mutex<Option<Backend>> = Mutex::new(None);
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The process's ONNX environment on `backend`, setting the backend on first use (for callers
/// that build their own sessions, such as benchmarks).
///
/// # Errors
/// [`ModelError::Backend`] when another backend was chosen already, ONNX Runtime's library
/// cannot be found or opened, or `ort` cannot start.
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
            let builder = match backend {
                Backend::Tract => {
                    ort::set_api(ort_tract::api());
                    ort::init()
                }
                Backend::OnnxRuntime => {
                    let path = onnxruntime_library()?;
                    ort::init_from(&path).map_err(|e| {
                        ModelError::Backend(format!(
                            "cannot open ONNX Runtime at '{}': {e}",
                            path.display()
                        ))
                    })?
                }
            };
            // Still holding the lock: only one thread ever builds the environment.
            let env = builder.with_name("volley").build().map_err(|e| {
                ModelError::Backend(format!("cannot start the ONNX environment: {e}"))
            })?;
            let _ = ENVIRONMENT.set(env);
            *chosen = Some(backend);
        }
    }
    ENVIRONMENT
        .get()
        .ok_or_else(|| ModelError::Backend("the ONNX environment did not start".into()))
}

/// Where ONNX Runtime's shared library is: `ORT_DYLIB_PATH`, else inside the `onnxruntime`
/// Python package of `python3`.
///
/// # Errors
/// [`ModelError::Backend`] naming both ways to provide it when neither finds a library.
pub fn onnxruntime_library() -> Result<PathBuf, ModelError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(ModelError::Backend(format!(
                "ORT_DYLIB_PATH is '{}', which is not a file",
                path.display()
            )));
        }
        return Ok(path);
    }
    python_onnxruntime().ok_or_else(|| {
        ModelError::Backend(format!(
            "backend 'onnxruntime' needs ONNX Runtime's shared library: set ORT_DYLIB_PATH to it ({}onnxruntime{}), or `pip install onnxruntime` for the python3 on PATH",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ))
    })
}

/// The shared library inside the `onnxruntime` package of `python3`, if it is installed.
fn python_onnxruntime() -> Option<PathBuf> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let package = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    let prefix = format!("{}onnxruntime", std::env::consts::DLL_PREFIX);
    let mut found: Vec<PathBuf> = std::fs::read_dir(package.join("capi"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.contains(std::env::consts::DLL_SUFFIX))
        })
        .collect();
    // `libonnxruntime.so.1.x.y` over the `libonnxruntime_providers_*` libraries.
    found.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.contains("providers"))
    });
    found.sort();
    found.pop()
}

/// Asks `builder` for ONNX Runtime's CUDA execution provider, failing (not falling back to the
/// CPU) when it cannot be registered.
#[cfg(feature = "cuda")]
pub(super) fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    backend: Backend,
) -> Result<ort::session::builder::SessionBuilder, String> {
    if backend != Backend::OnnxRuntime {
        return Err(format!(
            "device 'cuda' runs on backend 'onnxruntime', not '{}'",
            backend.name()
        ));
    }
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| {
            format!(
                "device 'cuda': ONNX Runtime's CUDA execution provider is not available ({e}); install a CUDA build of ONNX Runtime (onnxruntime-gpu) with a GPU and its drivers, or use device 'cpu'"
            )
        })
}

/// Without the `cuda` feature, `device = 'cuda'` is refused.
#[cfg(not(feature = "cuda"))]
pub(super) fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _backend: Backend,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err("device 'cuda': this build of volley has no CUDA support; rebuild with the 'cuda' feature (on by default)".into())
}
