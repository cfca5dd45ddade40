//! `repro provenance` writes a folder's provenance.json: with `--reconstructed-from` exactly the
//! fields given and null for the rest; a malformed date or device is an error naming it.

mod common;

use std::process::Command;

#[test]
fn a_reconstruction_keeps_unknown_fields_null() {
    let out = std::env::temp_dir().join(format!("dpzo-provenance-cli-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["provenance", "--out"])
        .arg(&out)
        .args([
            "--device",
            "cuda",
            "--driver",
            "580.159.04",
            "--date",
            "2026-11-30T16:11Z",
            "--reconstructed-from",
            "notes.md",
        ])
        .output()
        .expect("the repro binary runs");
    common::assert_success(&output);
    let text = std::fs::read_to_string(out.join("provenance.json")).unwrap();
    std::fs::remove_dir_all(&out).ok();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["driver"], "580.159.04");
    assert_eq!(value["date"], "2026-11-30T16:11Z");
    assert_eq!(value["reconstructed_from"], "notes.md");
    for unknown in [
        "git_commit",
        "git_dirty",
        "gpu",
        "libtorch",
        "host",
        "repro_version",
        "command",
    ] {
        assert!(value[unknown].is_null(), "{unknown}: {text}");
    }
}

#[test]
fn a_malformed_date_or_device_is_named() {
    common::assert_fails_naming(
        "provenance --out /tmp/dpzo-never --device cuda --date 30.11.2026 --reconstructed-from x",
        "--date 30.11.2026",
    );
    common::assert_fails_naming(
        "provenance --out /tmp/dpzo-never --device tpu --command x",
        "--device tpu",
    );
}
