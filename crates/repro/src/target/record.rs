//! The JSON record of one finished run: its spec, provenance, metrics and privacy ledger.
//!
//! The trainer's per-step record (`trainer.steps`: one object per optimisation step with its
//! stage, learning rate, ZO ε and, unless `--private-records`, loss and clipping diagnostics) is
//! most of a record's size, so it lives in a sidecar beside the record:
//!
//! - `<stem>.steps.jsonl.gz` next to `<stem>.json` (the name always follows the record's, so a
//!   record moved or copied takes its sidecar under its new name): gzip (no file name, mtime 0,
//!   OS byte 255, so the same steps always give the same bytes) of JSON lines, one compact JSON
//!   object per step, in step order, each exactly the object `trainer.steps` held;
//! - in the record, `trainer.steps` is replaced by
//!   `trainer.steps_sidecar = {"count": N, "sha256": "<SHA-256 of the uncompressed JSON lines>"}`,
//!   which the record's content checksum covers, so a sidecar that was edited, truncated or
//!   swapped for another run's is refused when read ([`CellRecord::steps`]).
//!
//! The sidecar is written (atomically) before the record, so a record never points at a missing
//! one. An empty `trainer.steps` (zero-shot runs) stays inline, as do the steps of records
//! written before sidecars existed; both read as before. `repro compact-records` moves the steps
//! of such older records into sidecars.

use anyhow::{bail, ensure, Context, Result};
use flate2::{read::GzDecoder, write::GzEncoder, Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What `repro <target>` writes to `results/<target>/<preset>/runs/<stem>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub target: String,
    pub preset: String,
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub seed: u64,
    /// Model as run (e.g. `smollm2-135m`), which may differ from the paper's model.
    pub model: String,
    /// SHA-256 of the fully resolved configuration; a finished record with the same hash is reused.
    pub spec_hash: String,
    /// The fully resolved configuration handed to the trainer.
    pub config: serde_json::Value,
    pub provenance: crate::provenance::Provenance,
    /// Final-iterate test accuracy in percent (the paper reports the last iterate).
    pub test_accuracy: f64,
    /// Dev accuracy of the final iterate, in percent, when a dev split exists.
    pub dev_accuracy: Option<f64>,
    /// Whether the run used the task's real data or a stand-in (and which).
    pub data: String,
    /// Wall time of the run in seconds.
    pub wall_secs: f64,
    /// Of `wall_secs`, the seconds before training: data read and encoded, model loaded (the
    /// trainer's own phases are `trainer.seconds`). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_secs: Option<f64>,
    /// The trainer's own record: metrics over time and the privacy ledger; its per-step record
    /// is in the sidecar that `steps_sidecar` describes (see the module docs), or inline in
    /// `steps` for an empty one and for records written before sidecars.
    pub trainer: serde_json::Value,
    /// How `--tune` chose this run's settings, with the privacy of the whole procedure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<super::tune::TuningNote>,
}

impl CellRecord {
    /// Whether this run's seed is the one whose dev set chose its settings (`--tune`'s tuning
    /// seed, also for settings inherited from another target): its dev accuracy, or its base's,
    /// is then the best of several candidates on that dev set (the winner's curse).
    pub fn seed_chose_settings(&self) -> bool {
        self.tuning
            .as_ref()
            .is_some_and(|n| n.tuning_seed == self.seed)
    }

    /// The trainer's wall-time phases by name (`trainer::train::PhaseSeconds`, read by name so
    /// that this builds without libtorch), absent in records written before they existed.
    pub fn phase_seconds(&self) -> Option<&serde_json::Map<String, Value>> {
        self.trainer.get("seconds")?.as_object()
    }

    /// Where the wall time went, for the console: "setup 3, checkpoints 4, …, steps 58 s" in
    /// whole seconds, from `setup_secs` and [`Self::phase_seconds`]; `None` for records without
    /// them.
    pub fn time_breakdown(&self) -> Option<String> {
        let phases = self.phase_seconds()?;
        let trainer_setup = phases.get("setup").and_then(Value::as_f64).unwrap_or(0.0);
        let mut parts = vec![format!("setup {:.0}", self.setup_secs? + trainer_setup)];
        parts.extend(
            phases
                .iter()
                .filter(|(name, _)| name.as_str() != "setup")
                .filter_map(|(name, v)| Some(format!("{name} {:.0}", v.as_f64()?))),
        );
        Some(format!("{} s", parts.join(", ")))
    }

    /// Reads a record, refusing one whose content checksum fails (`integrity`).
    pub fn read(path: &Path) -> Result<CellRecord> {
        Ok(super::integrity::read_verified(path)?.0)
    }

    /// Writes atomically with a content checksum (`integrity`), a non-empty inline
    /// `trainer.steps` going to the sidecar beside `path` first. A record that already refers to
    /// a sidecar (one read from disk) must find an intact one beside `path`: to put a record
    /// somewhere else, use [`CellRecord::copy`].
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut value = serde_json::to_value(self)?;
        move_steps_to_sidecar(&mut value, path)?;
        super::integrity::write_sealed(path, &value)
    }

    /// The file-name stem the grid gives this run's record (`runs/<stem>.json`).
    pub fn stem(&self) -> String {
        super::spec::stem_of(&self.task, &self.method, self.epsilon, self.seed)
    }

    /// The per-step trainer record of this record, read from `record_path` (where this record
    /// was read from): from its sidecar, verified against the step count and SHA-256 the record
    /// holds, or inline for records that keep it there.
    pub fn steps(&self, record_path: &Path) -> Result<Vec<Value>> {
        let trainer = self.trainer.as_object();
        match (
            trainer.and_then(|t| t.get(STEPS_FIELD)),
            trainer.and_then(|t| t.get(SIDECAR_FIELD)),
        ) {
            (Some(_), Some(_)) => bail!(
                "{}: trainer holds both {STEPS_FIELD} and {SIDECAR_FIELD}",
                record_path.display()
            ),
            (Some(Value::Array(steps)), None) => Ok(steps.clone()),
            (Some(_), None) => bail!(
                "{}: trainer.{STEPS_FIELD} is not an array",
                record_path.display()
            ),
            (None, Some(reference)) => read_sidecar(record_path, reference),
            (None, None) => bail!(
                "{}: the record keeps no per-step trainer record",
                record_path.display()
            ),
        }
    }

    /// Copies the record at `from` to `to` with its steps: `to` gets its own sidecar (verified
    /// against the one at `from` on the way).
    pub fn copy(from: &Path, to: &Path) -> Result<CellRecord> {
        let mut record = CellRecord::read(from)?;
        if let Some(trainer) = record.trainer.as_object() {
            if trainer.contains_key(SIDECAR_FIELD) {
                let steps = record.steps(from)?;
                let trainer = record.trainer.as_object_mut().expect("checked above");
                trainer.remove(SIDECAR_FIELD);
                trainer.insert(STEPS_FIELD.into(), Value::Array(steps));
            }
        }
        record.write(to)?;
        CellRecord::read(to)
    }
}

/// The inline per-step field of `trainer`, and the field that replaces it.
pub(crate) const STEPS_FIELD: &str = "steps";
pub(crate) const SIDECAR_FIELD: &str = "steps_sidecar";

/// The sidecar holding the steps of the record at `record`: `<stem>.steps.jsonl.gz` beside it.
pub fn steps_path(record: &Path) -> PathBuf {
    let stem = record
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    record.with_file_name(format!("{stem}.steps.jsonl.gz"))
}

/// What the record holds about its sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarRef {
    /// Number of steps (lines).
    count: usize,
    /// SHA-256 (hex) of the uncompressed JSON lines.
    sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sidecar's bytes for `steps` and the reference to it.
pub(crate) fn encode_steps(steps: &[Value]) -> Result<(Vec<u8>, SidecarRef)> {
    let mut lines = Vec::new();
    for step in steps {
        serde_json::to_writer(&mut lines, step)?;
        lines.push(b'\n');
    }
    // No file name, mtime 0 and a fixed OS byte: the same steps always compress to the same bytes.
    let mut gz: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    gz.write_all(&lines)?;
    let reference = SidecarRef {
        count: steps.len(),
        sha256: sha256_hex(&lines),
    };
    Ok((gz.finish()?, reference))
}

/// The steps in sidecar bytes `gz` (read from `file`), checked against `reference`.
pub(crate) fn decode_steps(gz: &[u8], file: &Path, reference: &Value) -> Result<Vec<Value>> {
    let reference: SidecarRef = serde_json::from_value(reference.clone()).with_context(|| {
        format!(
            "the record of {} has a malformed {SIDECAR_FIELD}",
            file.display()
        )
    })?;
    let mut lines = Vec::new();
    GzDecoder::new(gz)
        .read_to_end(&mut lines)
        .with_context(|| format!("{}: not a readable gzip stream", file.display()))?;
    let found = sha256_hex(&lines);
    ensure!(
        found == reference.sha256,
        "{}: steps sidecar checksum fails (sha256 {found}, recorded {}): the sidecar was edited, \
         damaged or belongs to another record",
        file.display(),
        reference.sha256
    );
    let text =
        std::str::from_utf8(&lines).with_context(|| format!("{}: not UTF-8", file.display()))?;
    let steps = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: malformed step", file.display(), i + 1))
        })
        .collect::<Result<Vec<Value>>>()?;
    ensure!(
        steps.len() == reference.count,
        "{}: holds {} steps, its record says {}",
        file.display(),
        steps.len(),
        reference.count
    );
    Ok(steps)
}

/// Reads and checks the sidecar of the record at `record_path`.
fn read_sidecar(record_path: &Path, reference: &Value) -> Result<Vec<Value>> {
    let file = steps_path(record_path);
    let gz = std::fs::read(&file)
        .with_context(|| format!("cannot read the steps sidecar {}", file.display()))?;
    decode_steps(&gz, &file, reference)
}

/// In `record` (a run record as JSON, about to be written to `path`): moves a non-empty inline
/// `trainer.steps` into the sidecar beside `path`, written first, and puts the reference in its
/// place; a record already referring to a sidecar must find an intact one there. Anything else
/// (no trainer, empty steps) is left as it is.
pub fn move_steps_to_sidecar(record: &mut Value, path: &Path) -> Result<()> {
    let Some(trainer) = record.get_mut("trainer").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    match trainer.get(STEPS_FIELD) {
        Some(Value::Array(steps)) if !steps.is_empty() => {
            let (gz, reference) = encode_steps(steps)?;
            let file = steps_path(path);
            atomic_file::write(&file, gz)
                .with_context(|| format!("cannot write {}", file.display()))?;
            trainer.remove(STEPS_FIELD);
            trainer.insert(SIDECAR_FIELD.into(), serde_json::to_value(reference)?);
        }
        Some(_) => {}
        None => {
            if let Some(reference) = trainer.get(SIDECAR_FIELD) {
                read_sidecar(path, reference).with_context(|| {
                    format!(
                        "{} would refer to a steps sidecar it does not have (copy records with \
                         CellRecord::copy)",
                        path.display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// All records under `runs_dir`, sorted by file name: those that pass their checksum (or carry
/// none), and one message per record that fails it (never aggregated).
pub fn read_all_checked(runs_dir: &Path) -> Result<(Vec<CellRecord>, Vec<String>)> {
    let mut paths: Vec<_> = std::fs::read_dir(runs_dir)
        .with_context(|| format!("no run records in {}", runs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    paths.sort();
    let (mut good, mut failed) = (Vec::new(), Vec::new());
    for p in &paths {
        match CellRecord::read(p) {
            Ok(record) => good.push(record),
            Err(err) => failed.push(format!("{err:#}")),
        }
    }
    Ok((good, failed))
}

/// A record for the unit tests of the modules that read records: SST-2, DPZero at ε = 4 on
/// `seed`, with `trainer` as given and placeholders elsewhere (test accuracy 0).
#[cfg(test)]
pub(crate) fn test_record(seed: u64, trainer: Value) -> CellRecord {
    CellRecord {
        target: "t".into(),
        preset: "p".into(),
        task: "SST-2".into(),
        method: "dpzero".into(),
        epsilon: Some(4.0),
        seed,
        model: "m".into(),
        spec_hash: String::new(),
        config: Value::Null,
        provenance: crate::provenance::Provenance::collect("cpu"),
        test_accuracy: 0.0,
        dev_accuracy: None,
        data: "real".into(),
        wall_secs: 0.0,
        setup_secs: None,
        trainer,
        tuning: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps() -> Vec<Value> {
        (1..=5)
            .map(|i| {
                json!({
                    "step": i, "stage": i / 3, "learning_rate": 1e-5, "zo_eps": 0.001,
                    "loss": 1.0 / (i as f64 + 2.0),
                    "clip": {"clipped_fraction": 0.375, "mean_clipped_scalar": 9.921975801698864,
                             "noise_scale": 0.0}
                })
            })
            .collect()
    }

    #[test]
    fn time_breakdown_adds_the_cells_setup_to_the_trainers_and_lists_its_phases() {
        let mut rec = record(Vec::new());
        assert_eq!(rec.time_breakdown(), None, "no phases recorded");
        rec.trainer["seconds"] = json!({
            "setup": 0.4, "steps": 58.2, "checkpoints": 4.4, "accounting": 0.3, "evaluation": 1.0
        });
        assert_eq!(
            rec.time_breakdown(),
            None,
            "no setup_secs: an incomplete breakdown"
        );
        rec.setup_secs = Some(2.7);
        assert_eq!(
            rec.time_breakdown().as_deref(),
            Some("setup 3, accounting 0, checkpoints 4, evaluation 1, steps 58 s")
        );
    }

    fn record(steps: Vec<Value>) -> CellRecord {
        serde_json::from_value(json!({
            "target": "table2", "preset": "mini", "task": "SST-2", "method": "dpzero",
            "epsilon": 4.0, "seed": 13, "model": "m", "spec_hash": "h",
            "config": { "steps": 5 },
            "provenance": { "git_commit": null, "git_dirty": null, "device": "cpu",
                            "libtorch": null, "date": null, "host": null, "repro_version": null },
            "test_accuracy": 80.0, "dev_accuracy": 70.0, "data": "real", "wall_secs": 1.5,
            "trainer": { "steps": steps, "ledger": { "epsilon_spent": 3.9 } }
        }))
        .unwrap()
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The steps go to `<stem>.steps.jsonl.gz`: gzip with no name and mtime 0 (RFC 1952 header:
    /// FLG byte 3, MTIME bytes 4..8) of one compact JSON object per line, whose SHA-256 and count
    /// the record holds; they read back value for value, and writing again gives the same bytes.
    #[test]
    fn steps_round_trip_through_a_deterministic_sidecar() {
        let dir = crate::target::test_scratch("record-roundtrip");
        let path = dir.join("SST-2__dpzero__eps4__seed13.json");
        record(steps()).write(&path).unwrap();
        let sidecar = dir.join("SST-2__dpzero__eps4__seed13.steps.jsonl.gz");
        assert_eq!(steps_path(&path), sidecar);
        let on_disk = read_json(&path);
        assert!(on_disk["trainer"].get("steps").is_none(), "{on_disk}");
        let lines: String = steps().iter().map(|s| format!("{s}\n")).collect();
        assert_eq!(
            on_disk["trainer"]["steps_sidecar"],
            json!({"count": 5, "sha256": sha256_hex(lines.as_bytes())})
        );
        assert_eq!(on_disk["trainer"]["ledger"]["epsilon_spent"], json!(3.9));
        let gz = std::fs::read(&sidecar).unwrap();
        assert_eq!(
            &gz[..4],
            &[0x1f, 0x8b, 8, 0],
            "gzip, deflate, no FNAME/FCOMMENT"
        );
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime 0");
        let mut text = String::new();
        GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, lines);

        let back = CellRecord::read(&path).unwrap();
        assert_eq!(back.steps(&path).unwrap(), steps());
        assert_eq!(back.test_accuracy, 80.0);
        let record_bytes = std::fs::read(&path).unwrap();
        back.write(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), record_bytes);
        assert_eq!(std::fs::read(&sidecar).unwrap(), gz);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sidecar that was edited, damaged, swapped or removed is refused with its name; a record
    /// read from disk is not written elsewhere without its steps, and `copy` gives the copy its
    /// own sidecar.
    #[test]
    fn a_tampered_or_missing_sidecar_is_refused_naming_it() {
        let dir = crate::target::test_scratch("record-tamper");
        let path = dir.join("a.json");
        record(steps()).write(&path).unwrap();
        let sidecar = steps_path(&path);
        let name = sidecar.display().to_string();
        let record = CellRecord::read(&path).unwrap();
        let good = std::fs::read(&sidecar).unwrap();
        let gzip = |text: &str| {
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(text.as_bytes()).unwrap();
            gz.finish().unwrap()
        };
        let mut edited = steps();
        edited[2]["loss"] = json!(0.1);
        let edited: String = edited.iter().map(|s| format!("{s}\n")).collect();
        let fewer: String = steps()[..4].iter().map(|s| format!("{s}\n")).collect();
        for (bytes, expected) in [
            (gzip(&edited), "steps sidecar checksum fails"),
            (gzip(&fewer), "steps sidecar checksum fails"),
            (
                good[..good.len() / 2].to_vec(),
                "not a readable gzip stream",
            ),
            (b"not gzip".to_vec(), "not a readable gzip stream"),
        ] {
            std::fs::write(&sidecar, bytes).unwrap();
            let err = format!("{:#}", record.steps(&path).unwrap_err());
            assert!(err.contains(&name) && err.contains(expected), "{err}");
        }
        std::fs::remove_file(&sidecar).unwrap();
        let err = format!("{:#}", record.steps(&path).unwrap_err());
        assert!(err.contains(&name), "{err}");
        // The count is checked too (a record whose count was changed with its checksum).
        std::fs::write(&sidecar, &good).unwrap();
        let mut miscounted = record.clone();
        miscounted.trainer["steps_sidecar"]["count"] = json!(6);
        let err = format!("{:#}", miscounted.steps(&path).unwrap_err());
        assert!(err.contains("holds 5 steps, its record says 6"), "{err}");

        let elsewhere = dir.join("b.json");
        let err = format!("{:#}", record.write(&elsewhere).unwrap_err());
        assert!(err.contains("b.steps.jsonl.gz"), "{err}");
        assert!(!elsewhere.exists());
        let copied = CellRecord::copy(&path, &elsewhere).unwrap();
        assert_eq!(copied.steps(&elsewhere).unwrap(), steps());
        assert_eq!(std::fs::read(steps_path(&elsewhere)).unwrap(), good);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Records written before sidecars (steps inline, with or without a checksum) read as
    /// before, and an empty `steps` stays inline with no sidecar.
    #[test]
    fn records_with_inline_steps_still_read() {
        let dir = crate::target::test_scratch("record-inline");
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-records/runs");
        for name in [
            "SST-2__dpzero-sigma0__nonprivate__seed13.json",
            "SST-2__dp-ft__eps8__seed13.json",
        ] {
            let path = fixtures.join(name);
            let inline = read_json(&path)["trainer"]["steps"].clone();
            assert!(inline.as_array().is_some_and(|s| !s.is_empty()), "{name}");
            let record = CellRecord::read(&path).unwrap();
            assert_eq!(Value::Array(record.steps(&path).unwrap()), inline);
            // Written anew, its steps move to a sidecar and come back the same.
            let copy = dir.join(name);
            record.write(&copy).unwrap();
            assert!(steps_path(&copy).is_file());
            let back = CellRecord::read(&copy).unwrap();
            assert_eq!(Value::Array(back.steps(&copy).unwrap()), inline);
        }
        let path = dir.join("zero-shot.json");
        record(Vec::new()).write(&path).unwrap();
        assert!(!steps_path(&path).exists());
        assert_eq!(read_json(&path)["trainer"]["steps"], json!([]));
        assert!(CellRecord::read(&path)
            .unwrap()
            .steps(&path)
            .unwrap()
            .is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
