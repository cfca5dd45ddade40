//! Where task data lives: [`DataDir`] for the LM-BFF / SuperGLUE files (flag or `DPZO_DATA_DIR`)
//! and [`AssetsDir`] for the stand-in data fetched by `scripts/assets.sh` (`DPZO_ASSETS_DIR`,
//! default `<workspace>/.assets`). Nothing here assumes a fixed location of the real data.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

/// Root of the real task data, laid out as its own README (`$DPZO_DATA_DIR/README.md`)
/// describes: `lm-bff/{original,k-shot,k-shot-1k-test}/...` and `superglue/<TASK>/*.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Environment variable read by [`DataDir::from_flag_or_env`].
    pub const ENV: &'static str = "DPZO_DATA_DIR";

    /// A data directory at `root`, which must exist.
    ///
    /// # Errors
    /// [`DataError::NotFound`] when `root` is not a directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(DataError::NotFound {
                path: root,
                hint: format!(
                    "the task data directory must contain lm-bff/ and/or superglue/; pass it \
                     with --data-dir or set {}",
                    Self::ENV
                ),
            });
        }
        Ok(Self { root })
    }

    /// The directory given by a command-line flag, else by `DPZO_DATA_DIR`.
    ///
    /// # Errors
    /// [`DataError::NotFound`] when neither is set, or the directory does not exist.
    pub fn from_flag_or_env(flag: Option<&Path>) -> Result<Self> {
        if let Some(path) = flag {
            return Self::new(path);
        }
        match std::env::var_os(Self::ENV) {
            Some(path) if !path.is_empty() => Self::new(PathBuf::from(path)),
            _ => Err(DataError::NotFound {
                path: PathBuf::from(format!("${}", Self::ENV)),
                hint: format!(
                    "no task data directory given: pass --data-dir or set {} to a folder laid \
                     out like lm-bff/k-shot-1k-test/<TASK>/<k>-<seed>/",
                    Self::ENV
                ),
            }),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `lm-bff/k-shot-1k-test/<task>/<k>-<seed>`: MeZO's pre-generated splits.
    pub fn mezo_split(&self, task: &str, k: usize, seed: u64) -> PathBuf {
        self.root
            .join("lm-bff/k-shot-1k-test")
            .join(task)
            .join(format!("{k}-{seed}"))
    }

    /// `lm-bff/original/<task>`: the full original files.
    pub fn original(&self, task: &str) -> PathBuf {
        self.root.join("lm-bff/original").join(task)
    }

    /// `superglue/<task>`.
    pub fn superglue(&self, task: &str) -> PathBuf {
        self.root.join("superglue").join(task)
    }
}

/// Root of the stand-in data and weights written by `scripts/assets.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetsDir {
    root: PathBuf,
}

impl AssetsDir {
    /// Environment variable read by [`AssetsDir::from_flag_or_env`].
    pub const ENV: &'static str = "DPZO_ASSETS_DIR";

    /// An assets directory at `root` (not checked: files are checked when read).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The flag, else `DPZO_ASSETS_DIR`, else `<workspace>/.assets` (the workspace this crate
    /// was built in).
    pub fn from_flag_or_env(flag: Option<&Path>) -> Self {
        if let Some(path) = flag {
            return Self::new(path);
        }
        match std::env::var_os(Self::ENV) {
            Some(path) if !path.is_empty() => Self::new(PathBuf::from(path)),
            _ => Self::new(workspace_root().join(".assets")),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `data/<name>`: one stand-in data set.
    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join("data").join(name)
    }

    /// `smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
    pub fn smollm2_gguf(&self) -> PathBuf {
        self.root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    }
}

/// The workspace root this crate was compiled in (`crates/trainer/../..`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
