//! Resolving a table's `LOCATION` to an object store and a path inside it.
//!
//! Accepted forms:
//! - a plain path, absolute or relative to the current directory (`out/demand_1m`);
//! - a `file://` URL (`file:///data/rides`);
//! - a `memory://` URL (`memory://scratch/rides`): an in-process store, shared by every table
//!   naming the same `memory://<name>`, so a sink's output can be read back in the same process.
//!
//! ```
//! use volley_connectors::location::Location;
//!
//! let loc = Location::resolve("demo", "memory://doc/rides").unwrap();
//! assert_eq!(loc.path.as_ref(), "rides");
//! assert_eq!(loc.url.as_str(), "memory://doc/rides");
//! ```

use std::collections::HashMap;
use std::path::{Component, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use datafusion::prelude::SessionContext;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::error::{ConnectorError, Result};

/// A resolved `LOCATION`: the store, the path inside it, and the same place as a URL.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store holding the location.
    pub store: Arc<dyn ObjectStore>,
    /// The location's path inside `store` (no leading or trailing `/`).
    pub path: Path,
    /// The location as an absolute URL (`file:///abs/path`, `memory://name/path`).
    pub url: Url,
}

impl Location {
    /// Resolves `location`, as written in the declaration of `table`.
    ///
    /// # Errors
    /// [`ConnectorError::Config`] naming the table when the location is not a path, a
    /// `file://` URL or a `memory://` URL.
    pub fn resolve(table: &str, location: &str) -> Result<Self> {
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(ConnectorError::config(table, "LOCATION is empty"));
        }
        if !trimmed.contains("://") {
            return Self::local(table, location, PathBuf::from(trimmed));
        }
        let url = Url::parse(trimmed).map_err(|e| {
            ConnectorError::config(
                table,
                format!("LOCATION '{location}' is not a valid URL: {e}"),
            )
        })?;
        match url.scheme() {
            "file" => {
                let path = url.to_file_path().map_err(|()| {
                    ConnectorError::config(
                        table,
                        format!("LOCATION '{location}' is not a local file URL (write file:///absolute/path)"),
                    )
                })?;
                Self::local(table, location, path)
            }
            "memory" => {
                let name = url.host_str().unwrap_or_default().to_string();
                let path =
                    Path::from_url_path(url.path()).map_err(|e| bad_path(table, location, e))?;
                let url = Url::parse(&format!("memory://{name}/{path}")).map_err(|e| {
                    ConnectorError::config(table, format!("LOCATION '{location}': {e}"))
                })?;
                Ok(Self {
                    store: memory_store(&name),
                    path,
                    url,
                })
            }
            other => Err(ConnectorError::config(
                table,
                format!(
                    "LOCATION '{location}' uses the unsupported scheme '{other}://'; \
                     use a plain path, file:// or memory://"
                ),
            )),
        }
    }

    /// Resolves `location` as a directory a sink writes into, creating it on a local file system.
    ///
    /// # Errors
    /// As [`Location::resolve`], or [`ConnectorError::External`] when the directory cannot be
    /// created.
    pub async fn resolve_sink_dir(table: &str, location: &str) -> Result<Self> {
        let resolved = Self::resolve(table, location)?;
        if let Ok(dir) = resolved.url.to_file_path()
            && resolved.url.scheme() == "file"
        {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                ConnectorError::external(
                    table,
                    format!("cannot create directory '{}': {e}", dir.display()),
                )
            })?;
        }
        Ok(resolved)
    }

    /// The URL of the store itself (`file:///`, `memory://name/`), the key DataFusion uses to
    /// find the store in a session's runtime.
    pub fn store_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_path("/");
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    /// The location as a directory URL (ending in `/`).
    pub fn dir_url(&self) -> Url {
        let mut url = self.url.clone();
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url
    }

    /// Makes this location's store reachable from queries run in `ctx`.
    pub fn register(&self, ctx: &SessionContext) {
        ctx.register_object_store(&self.store_url(), Arc::clone(&self.store));
    }

    /// The store and the path, for callers that need nothing else.
    pub fn into_parts(self) -> (Arc<dyn ObjectStore>, Path) {
        (self.store, self.path)
    }

    fn local(table: &str, location: &str, path: PathBuf) -> Result<Self> {
        let absolute = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| {
                    ConnectorError::external(
                        table,
                        format!("cannot read the current directory: {e}"),
                    )
                })?
                .join(path)
        };
        let absolute = normalize(&absolute);
        let url = Url::from_file_path(&absolute).map_err(|()| {
            ConnectorError::config(
                table,
                format!("LOCATION '{location}' is not a valid file system path"),
            )
        })?;
        let path = Path::from_url_path(url.path()).map_err(|e| bad_path(table, location, e))?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new()),
            path,
            url,
        })
    }
}

/// Resolves `location` of `table` to its store and the path inside it.
///
/// # Errors
/// As [`Location::resolve`].
pub fn resolve(table: &str, location: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    Location::resolve(table, location).map(Location::into_parts)
}

/// The process-wide in-memory store called `name` (`memory://name/...`), created on first use.
pub fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let store = stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()));
    Arc::clone(store) as Arc<dyn ObjectStore>
}

fn bad_path(table: &str, location: &str, err: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::config(
        table,
        format!("LOCATION '{location}' is not a valid path: {err}"),
    )
}

/// Removes `.` and `..` lexically: object store paths may not contain them, and the directory
/// may not exist yet, so `canonicalize` is not an option.
fn normalize(path: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_path_resolves_against_current_dir() {
        let loc = Location::resolve("t", "out/../out/./demand").unwrap();
        let expected = std::env::current_dir().unwrap().join("out/demand");
        assert_eq!(loc.url.to_file_path().unwrap(), expected);
        assert_eq!(format!("/{}", loc.path), expected.display().to_string());
        assert_eq!(loc.store_url().as_str(), "file:///");
    }

    #[test]
    fn file_and_memory_urls_resolve() {
        let loc = Location::resolve("t", "file:///tmp/volley/x").unwrap();
        assert_eq!(loc.path.as_ref(), "tmp/volley/x");
        assert_eq!(loc.dir_url().as_str(), "file:///tmp/volley/x/");
        let mem = Location::resolve("t", "memory://scratch/a/b").unwrap();
        assert_eq!(mem.path.as_ref(), "a/b");
        assert_eq!(mem.store_url().as_str(), "memory://scratch/");
    }

    #[test]
    fn memory_stores_are_shared_by_name() {
        let a = memory_store("location-test");
        let b = memory_store("location-test");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn unsupported_scheme_names_table_and_choices() {
        let err = Location::resolve("clicks", "s3://bucket/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clicks") && err.contains("s3") && err.contains("memory://"),
            "{err}"
        );
        assert!(Location::resolve("clicks", "  ").is_err());
    }

    #[tokio::test]
    async fn sink_dir_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let loc = Location::resolve_sink_dir("t", target.to_str().unwrap())
            .await
            .unwrap();
        assert!(target.is_dir());
        assert_eq!(loc.url.to_file_path().unwrap(), target);
    }
}
