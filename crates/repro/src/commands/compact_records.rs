//! `repro compact-records DIR`: moves the inline per-step trainer record (`trainer.steps`) of
//! every run record under DIR (a `.json` file holding an object with `spec_hash` and a `trainer`
//! object: those in `runs/` folders, and any kept elsewhere) into its gzip'd JSON-lines sidecar
//! (`target::record`), changing nothing else in the record. Each record's checksum is verified first; the rewritten record
//! and sidecar are read back and must give exactly the original record, else the original is
//! restored and the command fails. Records already compact are left as they are.

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::target::integrity::{self, Seal};
use crate::target::record::{self, CellRecord, SIDECAR_FIELD, STEPS_FIELD};

#[derive(Args, Debug)]
pub struct CompactRecordsArgs {
    /// The folder to search (recursively) for run records.
    pub dir: PathBuf,
}

/// What became of one record file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Its steps moved to a sidecar: its size before, and record + sidecar after.
    Compacted { before: u64, after: u64 },
    /// Its steps were already in an intact sidecar.
    AlreadyCompact,
    /// No steps to move (an empty `trainer.steps`, or none).
    NoSteps,
    /// Not a run record (another JSON file, or a `.json` file outside a runs folder that is not
    /// JSON at all).
    NotARecord,
}

pub fn run(args: CompactRecordsArgs) -> Result<()> {
    ensure!(args.dir.is_dir(), "{}: not a folder", args.dir.display());
    let mut files = Vec::new();
    record_files(&args.dir, &mut files)?;
    files.sort();
    let (mut compacted, mut already, mut without_steps) = (0usize, 0usize, 0usize);
    let (mut before, mut after) = (0u64, 0u64);
    let mut failed = Vec::new();
    for file in &files {
        match compact(file) {
            Ok(Outcome::Compacted {
                before: b,
                after: a,
            }) => {
                compacted += 1;
                before += b;
                after += a;
            }
            Ok(Outcome::AlreadyCompact) => already += 1,
            Ok(Outcome::NoSteps) => without_steps += 1,
            Ok(Outcome::NotARecord) => {}
            Err(err) => {
                eprintln!("{err:#}");
                failed.push(file.display().to_string());
            }
        }
    }
    println!(
        "compact-records {}: {compacted} records compacted ({before} bytes -> {after} bytes, \
         record + sidecar), {already} already compact, {without_steps} without steps to move",
        args.dir.display()
    );
    if !failed.is_empty() {
        bail!(
            "{} records left as they were: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The `.json` files under `dir`.
fn record_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.is_dir() {
            record_files(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()) == Some("json") {
            out.push(path);
        }
    }
    Ok(())
}

/// The record without its checksum and its steps (inline or referenced): what compaction must
/// leave exactly as it was.
fn without_steps(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.remove(integrity::FIELD);
    }
    if let Some(trainer) = value.get_mut("trainer").and_then(Value::as_object_mut) {
        trainer.remove(STEPS_FIELD);
        trainer.remove(SIDECAR_FIELD);
    }
    value
}

fn read_json(path: &Path) -> Result<(String, Value)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", path.display()))?;
    Ok((text, value))
}

/// Compacts the record at `path` (see the module docs).
fn compact(path: &Path) -> Result<Outcome> {
    let in_runs_folder = matches!(
        path.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str()),
        Some("runs" | "superseded")
    );
    let (text, raw) = match read_json(path) {
        Ok(read) => read,
        // A torn file where records live is an error; elsewhere, some `.json` files are not JSON
        // (e.g. JSON lines).
        Err(err) if in_runs_folder => return Err(err),
        Err(_) => return Ok(Outcome::NotARecord),
    };
    let is_record =
        raw.get("spec_hash").is_some() && raw.get("trainer").is_some_and(Value::is_object);
    if !is_record {
        return Ok(Outcome::NotARecord);
    }
    // The checksum (where the record has one) is verified before anything is touched.
    let (original, seal) = integrity::read_verified::<Value>(path)?;
    let steps = match original["trainer"].get(STEPS_FIELD) {
        Some(Value::Array(steps)) if !steps.is_empty() => steps.clone(),
        Some(Value::Array(_)) | None if original["trainer"].get(SIDECAR_FIELD).is_none() => {
            return Ok(Outcome::NoSteps)
        }
        None => {
            let record: CellRecord = serde_json::from_value(original)
                .with_context(|| format!("malformed run record {}", path.display()))?;
            record.steps(path)?;
            return Ok(Outcome::AlreadyCompact);
        }
        Some(_) => bail!(
            "{}: trainer.{STEPS_FIELD} is not an array (or sits beside {SIDECAR_FIELD})",
            path.display()
        ),
    };
    let sidecar = record::steps_path(path);
    // In memory first: the sidecar's bytes must decode to exactly these steps.
    let (gz, reference) = record::encode_steps(&steps)?;
    let decoded = record::decode_steps(&gz, &sidecar, &serde_json::to_value(&reference)?)?;
    ensure!(
        decoded == steps,
        "{}: its steps do not survive the JSON-lines round trip",
        path.display()
    );
    let mut compacted = original.clone();
    record::move_steps_to_sidecar(&mut compacted, path)?;
    let written = match seal {
        Seal::Verified => integrity::write_sealed(path, &compacted),
        // A record written before checksums stays without one: none is invented for it.
        Seal::Unsealed => atomic_file::write(path, serde_json::to_string_pretty(&compacted)?)
            .with_context(|| format!("cannot write {}", path.display())),
    };
    let checked = written.and_then(|()| check_compacted(path, &original, &steps, seal));
    if let Err(err) = checked {
        atomic_file::write(path, &text)
            .with_context(|| format!("cannot restore {}", path.display()))?;
        let _ = std::fs::remove_file(&sidecar);
        return Err(err.context(format!("{}: restored as it was", path.display())));
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    Ok(Outcome::Compacted {
        before: text.len() as u64,
        after: size(path) + size(&sidecar),
    })
}

/// Reads the rewritten record at `path` back: same seal, every field but the steps as in
/// `original`, and its sidecar giving exactly `steps`.
fn check_compacted(path: &Path, original: &Value, steps: &[Value], seal: Seal) -> Result<()> {
    let (back, back_seal) = integrity::read_verified::<Value>(path)?;
    ensure!(
        back_seal == seal,
        "{}: its checksum state changed",
        path.display()
    );
    ensure!(
        back["trainer"].get(SIDECAR_FIELD).is_some(),
        "{}: no {SIDECAR_FIELD} written",
        path.display()
    );
    ensure!(
        without_steps(back.clone()) == without_steps(original.clone()),
        "{}: a field other than the steps changed",
        path.display()
    );
    let record: CellRecord = serde_json::from_value(back)
        .with_context(|| format!("malformed run record {}", path.display()))?;
    ensure!(
        record.steps(path)? == steps,
        "{}: its sidecar does not give back the original steps",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Value {
        read_json(path).unwrap().1
    }

    /// Committed records written before sidecars (one sealed, one from before checksums) are
    /// compacted with every other field and the seal state kept, the steps given back value for
    /// value; a second pass changes no byte.
    #[test]
    fn compacting_committed_records_is_lossless_and_idempotent() {
        let dir = std::env::temp_dir().join(format!("dpzo-compact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runs = dir.join("table2/mini/runs");
        std::fs::create_dir_all(&runs).unwrap();
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-records/runs");
        let names = [
            "SST-2__dpzero-sigma0__nonprivate__seed13.json",
            "SST-2__dp-ft__eps8__seed13.json",
        ];
        for name in names {
            std::fs::copy(fixtures.join(name), runs.join(name)).unwrap();
        }
        // A JSON file in a runs folder that is not a run record, or one elsewhere that is not
        // JSON, is left alone; a record kept outside a runs folder is compacted.
        std::fs::write(runs.join("notes.json"), "[1, 2]").unwrap();
        std::fs::write(dir.join("lines.json"), "{}\n{}\n").unwrap();
        let elsewhere = dir.join("cell/SST-2__dp-ft__eps8__seed13.json");
        std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(names[1]), &elsewhere).unwrap();
        std::fs::write(runs.join("torn.json"), "{").unwrap();
        assert!(compact(&runs.join("torn.json")).is_err());
        std::fs::remove_file(runs.join("torn.json")).unwrap();
        for name in names {
            let path = runs.join(name);
            let original = read(&path);
            let before = std::fs::metadata(&path).unwrap().len();
            let Outcome::Compacted { before: b, after } = compact(&path).unwrap() else {
                panic!("{name} not compacted");
            };
            assert_eq!(b, before);
            let sidecar = record::steps_path(&path);
            assert_eq!(
                after,
                std::fs::metadata(&path).unwrap().len()
                    + std::fs::metadata(&sidecar).unwrap().len()
            );
            let compacted = read(&path);
            assert_eq!(
                without_steps(compacted.clone()),
                without_steps(original.clone())
            );
            assert_eq!(
                compacted.get(integrity::FIELD).is_some(),
                original.get(integrity::FIELD).is_some(),
                "{name}: seal state"
            );
            let record = CellRecord::read(&path).unwrap();
            assert_eq!(
                Value::Array(record.steps(&path).unwrap()),
                original["trainer"]["steps"]
            );
            let bytes = (
                std::fs::read(&path).unwrap(),
                std::fs::read(&sidecar).unwrap(),
            );
            assert_eq!(compact(&path).unwrap(), Outcome::AlreadyCompact);
            assert_eq!(
                (
                    std::fs::read(&path).unwrap(),
                    std::fs::read(&sidecar).unwrap()
                ),
                bytes
            );
        }
        assert_eq!(
            compact(&runs.join("notes.json")).unwrap(),
            Outcome::NotARecord
        );
        assert_eq!(
            compact(&dir.join("lines.json")).unwrap(),
            Outcome::NotARecord
        );
        run(CompactRecordsArgs { dir: dir.clone() }).unwrap();
        let moved = CellRecord::read(&elsewhere).unwrap();
        assert!(record::steps_path(&elsewhere).is_file());
        assert_eq!(moved.steps(&elsewhere).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every committed record that keeps its steps in a sidecar has that sidecar, intact (its
    /// count and SHA-256 match).
    #[test]
    fn every_committed_steps_sidecar_matches_its_record() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
        let mut files = Vec::new();
        record_files(&results, &mut files).unwrap();
        let mut checked = 0;
        for path in &files {
            let Ok((_, value)) = read_json(path) else {
                continue;
            };
            let Some(trainer) = value
                .get("trainer")
                .filter(|_| value.get("spec_hash").is_some())
            else {
                continue;
            };
            if trainer.get(SIDECAR_FIELD).is_some() {
                let record = CellRecord::read(path).unwrap();
                let steps = record.steps(path).unwrap_or_else(|e| panic!("{e:#}"));
                assert!(!steps.is_empty(), "{}", path.display());
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    /// A record failing its checksum is not touched, and the command fails naming it.
    #[test]
    fn a_record_failing_its_checksum_is_left_as_it_was() {
        let dir = std::env::temp_dir().join(format!("dpzo-compact-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/legacy-records/runs/SST-2__dpzero-sigma0__nonprivate__seed13.json",
        );
        let path = runs.join("edited.json");
        let text = std::fs::read_to_string(fixture)
            .unwrap()
            .replace("\"seed\": 13", "\"seed\": 14");
        std::fs::write(&path, &text).unwrap();
        let err = format!(
            "{:#}",
            run(CompactRecordsArgs { dir: dir.clone() }).unwrap_err()
        );
        assert!(err.contains("edited.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert!(!record::steps_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
