//! `repro mask-anatomy` end to end on the CPU (SmolLM2, table2 smoke's DP-ZOPO run on the SST-2
//! stand-in): every selection masks ceil(r d) coordinates, none more than a group holds, and the
//! random selection spreads them over the groups in proportion to their sizes (binomial: the
//! embedding's share is within 0.5 points of its share of the weights, about 14 s.d.). With
//! `--seed 21 --exposure`, one row per test example of that run (48), whose counts nest: tokens
//! at least the unseen tokens, which are at least the exposed rows, and exposed coordinates at
//! least the exposed rows. A seed the preset does not run is refused by name.
#![cfg(feature = "torch")]

use std::path::Path;
use std::process::Command;

mod common;

#[test]
fn selections_mask_the_same_count_and_random_follows_group_sizes() {
    let out = std::env::temp_dir().join(format!("dpzo-mask-anatomy-{}.csv", std::process::id()));
    let exposure = out.with_extension("exposure.csv");
    let run = |seed: &str| {
        Command::new(env!("CARGO_BIN_EXE_repro"))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .env_remove("DPZO_DATA_DIR")
            .args(["mask-anatomy", "--device", "cpu", "--preset", "smoke"])
            .args([
                "--target", "table2", "--task", "SST-2", "--seed", seed, "--out",
            ])
            .arg(&out)
            .arg("--exposure")
            .arg(&exposure)
            .output()
            .expect("the repro binary runs")
    };
    let stderr = common::refused(&run("99"));
    assert!(
        stderr.contains("no dp-zopo run of task SST-2 with seed 99"),
        "{stderr}"
    );
    let output = run("21");
    common::assert_success(&output);
    let mut reader = csv::Reader::from_path(&exposure).expect("the exposure CSV");
    let examples: Vec<Vec<u64>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(examples.len(), 48);
    for (i, e) in examples.iter().enumerate() {
        assert_eq!(e[0], i as u64);
        assert!(e[1] >= e[2], "{e:?}");
        for selection in 0..4 {
            let (rows, coordinates) = (e[3 + 2 * selection], e[4 + 2 * selection]);
            assert!(rows <= e[2] && coordinates >= rows, "{e:?}");
        }
    }
    let _ = std::fs::remove_file(&exposure);
    let mut reader = csv::Reader::from_path(&out).expect("mask_anatomy.csv");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let num = |r: &csv::StringRecord, i: usize| -> f64 { r[i].parse().unwrap() };
    let selections = ["smallest-score", "largest-score", "magnitude", "random"];
    for s in selections {
        let of: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[0] == s).collect();
        assert!(!of.is_empty(), "{s}: no rows");
        let parameters: f64 = of.iter().map(|r| num(r, 2)).sum();
        let masked: f64 = of.iter().map(|r| num(r, 3)).sum();
        for r in &of {
            assert!(num(r, 3) <= num(r, 2) && num(r, 4) <= num(r, 3), "{r:?}");
        }
        assert_eq!(masked, (0.01 * parameters).ceil(), "{s}");
        if s == "random" {
            let embedding = of.iter().find(|r| &r[1] == "embedding").unwrap();
            let weight_share = 100.0 * num(embedding, 2) / parameters;
            assert!(
                (num(embedding, 5) - weight_share).abs() < 0.5,
                "random mask's embedding share {} vs the embedding's share of the weights {weight_share}",
                num(embedding, 5)
            );
        }
    }
    let _ = std::fs::remove_file(&out);
}
