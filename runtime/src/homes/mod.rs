//! The node's two home directories.
//!
//! The local home holds what belongs to this node alone (`caches/ log/ tmp/ state/`); the shared
//! home holds what every node of the cluster sees (`config/ data/ plugins/`). The shared home
//! defaults to `<home>/shared`, but code must always ask the node for either path: operators
//! mount the shared home elsewhere. When they move it, the node runs the registered
//! [`HomeUpdateHandler`]s at its next start (see [`settle`]).

use std::path::{Path, PathBuf};

mod moves;

pub use moves::{
    HomeUpdate, HomeUpdateError, HomeUpdateHandler, RecordError, STANDARD_MESSAGE, Settled,
    UpdateFuture, handler_fn, settle,
};

/// Why a home directory is unusable. Start-up stops; nothing else was started.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {role} home {path} is not usable: {source} (check that it exists or can be created, and that this user may write to it)"
)]
pub struct HomeError {
    /// `local` or `shared`.
    pub role: &'static str,
    /// The directory that failed.
    pub path: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

/// The local home: node-private files.
#[derive(Debug, Clone)]
pub struct LocalHome {
    root: PathBuf,
}

/// The shared home: files shared by the cluster's nodes.
#[derive(Debug, Clone)]
pub struct SharedHome {
    root: PathBuf,
}

impl LocalHome {
    /// Subdirectories created in every local home.
    pub const DIRS: [&'static str; 4] = ["caches", "log", "tmp", "state"];

    /// The name of the admin token file in the local home.
    pub const ADMIN_TOKEN: &'static str = "admin-token";

    /// The admin token kept in the local home at `root`, trimmed; `None` when there is no such
    /// file or it holds only blanks.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::homes::LocalHome;
    /// let dir = tempfile::tempdir().unwrap();
    /// assert!(LocalHome::admin_token_in(dir.path()).unwrap().is_none());
    /// std::fs::write(dir.path().join(LocalHome::ADMIN_TOKEN), "s3cret\n").unwrap();
    /// assert_eq!(LocalHome::admin_token_in(dir.path()).unwrap().as_deref(), Some("s3cret"));
    /// ```
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn admin_token_in(root: &Path) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(root.join(Self::ADMIN_TOKEN)) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates (if needed) and checks the local home at `root`.
    ///
    /// # Errors
    /// [`HomeError`] when a directory cannot be created or written.
    pub fn open(root: &Path) -> Result<Self, HomeError> {
        prepare("local", root, &Self::DIRS, "tmp")?;
        Ok(LocalHome {
            root: root.to_owned(),
        })
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Node-local cache files.
    pub fn caches(&self) -> PathBuf {
        self.root.join("caches")
    }
    /// Log files.
    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }
    /// Scratch files, safe to delete when the node is stopped.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// Durable node state (the membership incarnation lives here).
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The admin endpoint's bearer token, read at start when no setting gives one; see
    /// [`LocalHome::admin_token_in`].
    pub fn admin_token(&self) -> PathBuf {
        self.root.join(Self::ADMIN_TOKEN)
    }
}

impl SharedHome {
    /// Subdirectories created in every shared home.
    pub const DIRS: [&'static str; 3] = ["config", "data", "plugins"];

    /// Creates (if needed) and checks the shared home at `root`.
    ///
    /// # Errors
    /// [`HomeError`] when a directory cannot be created or written.
    pub fn open(root: &Path) -> Result<Self, HomeError> {
        prepare("shared", root, &Self::DIRS, "data")?;
        Ok(SharedHome {
            root: root.to_owned(),
        })
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Cluster-wide configuration.
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    /// Cluster-wide data.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Installed plugins.
    pub fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }
}

fn prepare(
    role: &'static str,
    root: &Path,
    dirs: &[&str],
    probe_dir: &str,
) -> Result<(), HomeError> {
    let fail = |path: PathBuf| move |source| HomeError { role, path, source };
    for dir in dirs {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(fail(path.clone()))?;
    }
    // Creating a directory can succeed on a read-only mount that already has it: write to be sure.
    // The name is unique per call, not just per process: nodes started at once in one process
    // share the shared home, and one must not remove the probe of another.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = root
        .join(probe_dir)
        .join(format!(".colony-write-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(fail(root.to_owned()))?;
    std::fs::remove_file(&probe).map_err(fail(root.to_owned()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_opened_at_once_in_one_process_do_not_trip_over_each_others_probe() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let opened: Vec<_> = (0..8)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    (0..50).try_for_each(|_| SharedHome::open(&shared).map(drop))
                })
            })
            .collect();
        for thread in opened {
            thread.join().unwrap().unwrap();
        }
    }

    #[test]
    fn creates_every_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalHome::open(&dir.path().join("home")).unwrap();
        let shared = SharedHome::open(&dir.path().join("elsewhere")).unwrap();
        for d in LocalHome::DIRS {
            assert!(local.root().join(d).is_dir());
        }
        for d in SharedHome::DIRS {
            assert!(shared.root().join(d).is_dir());
        }
    }

    #[test]
    fn a_home_under_a_file_fails_with_its_role_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = LocalHome::open(&file.join("home")).unwrap_err();
        assert_eq!(err.role, "local");
        assert!(err.to_string().contains("local home"), "{err}");
    }
}
