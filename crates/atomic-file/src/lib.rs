//! Every writer of results in the workspace goes through [`write`] or [`write_with`]: the
//! content goes to a temporary file beside the target, is flushed to disk, and is renamed over
//! the target only when it is complete. A failure (an error half-way, a kill) leaves the old
//! file as it was; a crash can at worst leave a `.NAME.tmp-PID` file behind, which is never read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary path used for `path`: hidden, beside it (the rename must stay on one file
/// system), and unique per process so that concurrent writers do not share it.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically (see the crate docs). The parent directory must exist.
///
/// # Errors
/// The I/O error, with the path it concerns in its message.
pub fn write(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    write_with(path, |out| out.write_all(bytes.as_ref()))
}

/// Runs `fill` on a buffered writer to a temporary file and renames it to `path` only if `fill`
/// and the flush succeed; otherwise the temporary file is removed and `path` is untouched.
///
/// # Errors
/// `fill`'s error or the I/O error, with the path it concerns in its message.
pub fn write_with<E>(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let path = path.as_ref();
    let temporary = temporary_path(path);
    let located = |e: std::io::Error, at: &Path| {
        std::io::Error::new(e.kind(), format!("{}: {e}", at.display()))
    };
    let result = (|| -> Result<(), E> {
        let file = File::create(&temporary).map_err(|e| located(e, &temporary))?;
        let mut out = BufWriter::new(file);
        fill(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| located(e.into_error(), &temporary))?;
        file.sync_all().map_err(|e| located(e, &temporary))?;
        std::fs::rename(&temporary, path).map_err(|e| located(e, path))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atomic-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_failed_write_leaves_the_old_content_and_no_temporary() {
        let dir = scratch("fail");
        let path = dir.join("sigma.csv");
        write(&path, "good\n").unwrap();
        let err = write_with(&path, |out| -> std::io::Result<()> {
            out.write_all(b"partial")?;
            Err(std::io::Error::other("cell 2 failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "cell 2 failed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "good\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_successful_write_replaces_the_file() {
        let dir = scratch("ok");
        let path = dir.join("out.json");
        write(&path, "old").unwrap();
        write(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = scratch("missing");
        let err = write(dir.join("absent/out.json"), "x").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
