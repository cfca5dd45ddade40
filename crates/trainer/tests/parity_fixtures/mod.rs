//! Test support shared by the tests on the tiny parity checkpoints (`tests/fixtures/*_tiny*`):
//! their folders, and one batch of their reference rows.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use trainer::batch::Batch;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The parity fixtures' right- and left-padded rows in one batch, scored at each row's last
/// real token, with two label words taken from the real tokens.
pub fn padded_batch(name: &str) -> Batch {
    let refs: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture(name).join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let ids = Tensor::cat(&[&refs["right_input_ids"], &refs["left_input_ids"]], 0);
    let mask = Tensor::cat(
        &[&refs["right_attention_mask"], &refs["left_attention_mask"]],
        0,
    );
    let (b, l) = (ids.size()[0], ids.size()[1]);
    let right = refs["right_input_ids"].size()[0];
    let lengths = mask.sum_dim_intlist(1, false, Kind::Int64);
    let positions: Vec<i64> = (0..b)
        .map(|i| {
            if i < right {
                lengths.int64_value(&[i]) - 1
            } else {
                l - 1
            }
        })
        .collect();
    let real: Vec<i64> = Vec::try_from(ids.masked_select(&mask.ne(0))).unwrap();
    let first = real[0];
    let second = *real
        .iter()
        .find(|&&t| t != first)
        .expect("two distinct tokens");
    Batch {
        input_ids: ids,
        attention_mask: mask,
        positions: Tensor::from_slice(&positions),
        labels: Tensor::from_slice(&(0..b).map(|i| i % 2).collect::<Vec<i64>>()),
        label_word_ids: Tensor::from_slice(&[first, second]),
    }
}
