//! Content checksums of run records: a record carries `content_sha256`, the SHA-256 of its own
//! canonical JSON without that field (serde_json orders object keys, and floats round-trip
//! exactly), so any edit of a stored record is detected when it is read. Records written before
//! checksums existed carry none; they are read as unverified.

use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The field holding the checksum.
pub const FIELD: &str = "content_sha256";

fn digest(value: &serde_json::Value) -> String {
    Sha256::digest(value.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `record` atomically as pretty JSON with its content checksum.
pub fn write_sealed(path: &Path, record: &impl Serialize) -> Result<()> {
    let mut value = serde_json::to_value(record)?;
    let object = value
        .as_object_mut()
        .context("a record must serialise to a JSON object")?;
    object.remove(FIELD);
    let sum = digest(&value);
    if let Some(object) = value.as_object_mut() {
        object.insert(FIELD.into(), sum.into());
    }
    atomic_file::write(path, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Whether a record read from disk carried a checksum that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// Its checksum matches its content.
    Verified,
    /// Written before records carried checksums.
    Unsealed,
}

/// Reads a record, refusing one whose content does not match its checksum.
pub fn read_verified<T: DeserializeOwned>(path: &Path) -> Result<(T, Seal)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("malformed run record {}", path.display()))?;
    let stored = value
        .as_object_mut()
        .and_then(|o| o.remove(FIELD))
        .map(|v| v.as_str().map(str::to_string));
    let seal = match stored {
        None => Seal::Unsealed,
        Some(Some(expected)) => {
            let found = digest(&value);
            if found != expected {
                bail!(
                    "{}: content checksum fails (sha256 {found}, recorded {expected}): the record was edited or damaged",
                    path.display()
                );
            }
            Seal::Verified
        }
        Some(None) => bail!("{}: {FIELD} is not a string", path.display()),
    };
    let record = serde_json::from_value(value)
        .with_context(|| format!("malformed run record {}", path.display()))?;
    Ok((record, seal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edited_record_fails_its_checksum_and_an_intact_one_passes() {
        let dir = std::env::temp_dir().join(format!("dpzo-integrity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        let record =
            serde_json::json!({"test_accuracy": 56.2, "losses": [0.1, 1.0 / 3.0], "seed": 13});
        write_sealed(&path, &record).unwrap();
        let (back, seal): (serde_json::Value, Seal) = read_verified(&path).unwrap();
        assert_eq!((back, seal), (record, Seal::Verified));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("56.2", "66.2")).unwrap();
        let err = read_verified::<serde_json::Value>(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("content checksum fails"), "{err}");
        // A record without a checksum (written before them) is read, as unsealed.
        std::fs::write(&path, r#"{"seed": 13}"#).unwrap();
        let (_, seal) = read_verified::<serde_json::Value>(&path).unwrap();
        assert_eq!(seal, Seal::Unsealed);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
