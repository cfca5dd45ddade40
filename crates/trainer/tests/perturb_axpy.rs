//! axpy_z on CPU tensors: global index order, masks, dtypes, restore, merged terms, out of place,
//! errors.

use half::{bf16, f16};
use tch::{Device, Kind, Tensor};
use trainer::perturb::{
    axpy_z, axpy_z_using, passes_on_this_thread, z_values, ParamSet, PerturbError, PerturbPath,
};

/// Deterministic test weights: sin of the index, scaled, so every element differs.
fn weights(numel: i64, kind: Kind) -> Tensor {
    (Tensor::arange(numel, (Kind::Double, Device::Cpu)) * 0.37)
        .sin()
        .to_kind(kind)
}

/// Three tensors given in unsorted order, sizes not multiples of 4 so blocks straddle tensors.
fn named(kind_a: Kind, kind_b: Kind, kind_c: Kind) -> Vec<(String, Tensor)> {
    vec![
        (
            "layer.1.weight".to_string(),
            weights(7 * 5, kind_b).view([7, 5]),
        ),
        ("layer.0.bias".to_string(), weights(13, kind_a)),
        ("z_head".to_string(), weights(3 * 11, kind_c).view([3, 11])),
    ]
}

fn deep_copy(named: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    named.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    // Compare exact bit patterns: f64 bit image of the value (exact for every dtype used here).
    as_f64(t).iter().map(|v| v.to_bits()).collect()
}

/// Zeros plus 1 * z gives exactly z at the global indices of the name-sorted concatenation.
#[test]
fn unit_scale_on_zeros_writes_z_in_sorted_name_order() {
    let tensors = vec![
        (
            "b".to_string(),
            Tensor::zeros([6], (Kind::Float, Device::Cpu)),
        ),
        (
            "a".to_string(),
            Tensor::zeros([2, 5], (Kind::Float, Device::Cpu)),
        ),
        (
            "c".to_string(),
            Tensor::zeros([3], (Kind::Double, Device::Cpu)),
        ),
    ];
    let handles: Vec<Tensor> = tensors.iter().map(|(_, t)| t.shallow_clone()).collect();
    let set = ParamSet::new(tensors).unwrap();
    assert_eq!(set.total_numel(), 19);
    axpy_z(&set, &[(99, 1.0)]).unwrap();
    let z = z_values(99, 0, 19);
    let got_a = Vec::<f32>::try_from(&handles[1].flatten(0, -1)).unwrap();
    let got_b = Vec::<f32>::try_from(&handles[0]).unwrap();
    let got_c = Vec::<f64>::try_from(&handles[2]).unwrap();
    assert_eq!(
        got_a,
        z[0..10].to_vec(),
        "tensor a holds global indices 0..10"
    );
    assert_eq!(
        got_b,
        z[10..16].to_vec(),
        "tensor b holds global indices 10..16"
    );
    let expected_c: Vec<f64> = z[16..19].iter().map(|&v| f64::from(v)).collect();
    assert_eq!(
        got_c, expected_c,
        "tensor c (f64) holds global indices 16..19"
    );
}

/// The update formula per dtype: theta + (sum_k s_k z_k accumulated in f32), rounded once.
#[test]
fn update_is_f32_delta_rounded_once_per_dtype() {
    let terms = [(5u64, 0.25f64), (6u64, -1.5e-3f64)];
    for kind in [Kind::Float, Kind::Half, Kind::BFloat16, Kind::Double] {
        let tensor = weights(23, kind);
        let before = as_f64(&tensor);
        let set = ParamSet::new(vec![("w".to_string(), tensor.shallow_clone())]).unwrap();
        axpy_z(&set, &terms).unwrap();
        let after = as_f64(&tensor);
        let z5 = z_values(5, 0, 23);
        let z6 = z_values(6, 0, 23);
        for i in 0..23 {
            let delta = 0.0f32 + 0.25f32 * z5[i] + (-1.5e-3f64 as f32) * z6[i];
            let theta = before[i];
            let expected = match kind {
                Kind::Float => f64::from(theta as f32 + delta),
                Kind::Half => f64::from(f16::from_f32(theta as f32 + delta).to_f32()),
                Kind::BFloat16 => f64::from(bf16::from_f32(theta as f32 + delta).to_f32()),
                _ => theta + f64::from(delta),
            };
            assert_eq!(
                after[i].to_bits(),
                expected.to_bits(),
                "{kind:?} element {i}"
            );
        }
    }
}

/// A masked set perturbs exactly the dense values on its coordinates and nothing else.
#[test]
fn masked_equals_dense_on_mask_and_leaves_the_rest() {
    let original = named(Kind::Float, Kind::Half, Kind::BFloat16);
    let dense_tensors = deep_copy(&original);
    let masked_tensors = deep_copy(&original);
    let terms = [(1234u64, 0.01f64), (4321u64, -0.02f64)];

    let dense = ParamSet::new(
        dense_tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
    )
    .unwrap();
    axpy_z(&dense, &terms).unwrap();

    let bias_mask = vec![0i64, 3, 12, 7];
    let weight_mask = vec![34i64, 1, 2, 3, 4, 20];
    let masked = ParamSet::new(
        masked_tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
    )
    .unwrap()
    .with_masks(vec![
        ("layer.0.bias".to_string(), Tensor::from_slice(&bias_mask)),
        (
            "layer.1.weight".to_string(),
            Tensor::from_slice(&weight_mask),
        ),
    ])
    .unwrap();
    assert_eq!(masked.touched_numel(), 10);
    axpy_z(&masked, &terms).unwrap();

    for ((name, original), ((_, dense), (_, masked))) in original
        .iter()
        .zip(dense_tensors.iter().zip(&masked_tensors))
    {
        let (o, d, m) = (bits(original), bits(dense), bits(masked));
        let mask: &[i64] = match name.as_str() {
            "layer.0.bias" => &bias_mask,
            "layer.1.weight" => &weight_mask,
            _ => &[],
        };
        for i in 0..o.len() {
            if mask.contains(&(i as i64)) {
                assert_eq!(
                    m[i], d[i],
                    "{name}[{i}]: masked value differs from dense value"
                );
                assert_ne!(
                    m[i], o[i],
                    "{name}[{i}]: masked coordinate was not perturbed"
                );
            } else {
                assert_eq!(m[i], o[i], "{name}[{i}]: unmasked coordinate changed");
            }
        }
    }
}

/// (seed, +a) then (seed, -a) restores theta up to one rounding of each step.
#[test]
fn plus_then_minus_restores_within_rounding() {
    let a = 1e-3f64;
    for (kind, unit_roundoff) in [
        (Kind::Float, 2f64.powi(-24)),
        (Kind::Half, 2f64.powi(-11)),
        (Kind::BFloat16, 2f64.powi(-8)),
        (Kind::Double, 2f64.powi(-53)),
    ] {
        let tensor = weights(1001, kind);
        let before = as_f64(&tensor);
        let set = ParamSet::new(vec![("w".to_string(), tensor.shallow_clone())]).unwrap();
        axpy_z(&set, &[(77, a)]).unwrap();
        let perturbed = as_f64(&tensor);
        assert!(
            perturbed != before,
            "{kind:?}: the perturbation changed nothing"
        );
        axpy_z(&set, &[(77, -a)]).unwrap();
        let after = as_f64(&tensor);
        let z = z_values(77, 0, 1001);
        for i in 0..before.len() {
            // Two roundings, each at most half an ulp of a value <= |theta| + a|z|; f32 delta
            // rounding adds 2^-24 a|z| per step.
            let magnitude = before[i].abs() + a * f64::from(z[i].abs());
            let bound = 2.0 * unit_roundoff * 2.0 * magnitude
                + 2.0 * 2f64.powi(-24) * a * f64::from(z[i].abs());
            assert!(
                (after[i] - before[i]).abs() <= bound,
                "{kind:?} element {i}: before {} after {} bound {bound:e}",
                before[i],
                after[i]
            );
        }
    }
}

/// Merged terms approximate the f64 sum of the separate updates (one rounding at the end).
#[test]
fn merged_terms_match_f64_reference() {
    let tensor = weights(4099, Kind::Float);
    let before = as_f64(&tensor);
    let set = ParamSet::new(vec![("w".to_string(), tensor.shallow_clone())]).unwrap();
    let terms = [(1u64, 1e-3f64), (2u64, -1e-3f64), (3u64, 2.5e-4f64)];
    axpy_z(&set, &terms).unwrap();
    let after = as_f64(&tensor);
    let zs: Vec<Vec<f32>> = terms.iter().map(|&(s, _)| z_values(s, 0, 4099)).collect();
    for i in 0..before.len() {
        let reference: f64 = before[i]
            + terms
                .iter()
                .zip(&zs)
                .map(|(&(_, scale), z)| scale * f64::from(z[i]))
                .sum::<f64>();
        let bound = 8.0 * 2f64.powi(-24) * (before[i].abs() + 1e-2);
        assert!(
            (after[i] - reference).abs() <= bound,
            "element {i}: {} vs {reference}",
            after[i]
        );
    }
}

/// The ATen path (used for CUDA tensors without NVRTC) gives bit-identical results on the CPU.
#[test]
fn aten_path_matches_cpu_loops_bitwise() {
    let original = named(Kind::BFloat16, Kind::Float, Kind::Half);
    let via_loops = deep_copy(&original);
    let via_aten = deep_copy(&original);
    let terms = [(10u64, 0.5f64), (11u64, -0.125f64)];
    let masks = || vec![("z_head".to_string(), Tensor::from_slice(&[0i64, 5, 32]))];
    for masked in [false, true] {
        let mut sets = Vec::new();
        for tensors in [&via_loops, &via_aten] {
            let set = ParamSet::new(
                tensors
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
            )
            .unwrap();
            sets.push(if masked {
                set.with_masks(masks()).unwrap()
            } else {
                set
            });
        }
        axpy_z_using(&sets[0], &terms, PerturbPath::Auto).unwrap();
        axpy_z_using(&sets[1], &terms, PerturbPath::Aten).unwrap();
        for ((name, a), (_, b)) in via_loops.iter().zip(&via_aten) {
            assert_eq!(
                bits(a),
                bits(b),
                "{name} (masked: {masked}): ATen path differs from loops"
            );
        }
    }
}

#[test]
fn bad_inputs_are_rejected_with_the_offending_value() {
    let t = || Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
    let err = ParamSet::new(vec![("w".into(), t().transpose(0, 1))]).unwrap_err();
    assert!(
        matches!(err, PerturbError::NotContiguous { ref name, .. } if name == "w"),
        "{err}"
    );
    let err = ParamSet::new(vec![(
        "i".into(),
        Tensor::zeros([3], (Kind::Int64, Device::Cpu)),
    )])
    .unwrap_err();
    assert!(
        matches!(
            err,
            PerturbError::UnsupportedKind {
                kind: Kind::Int64,
                ..
            }
        ),
        "{err}"
    );
    let err = ParamSet::new(vec![("w".into(), t()), ("w".into(), t())]).unwrap_err();
    assert!(matches!(err, PerturbError::DuplicateName { .. }), "{err}");

    let set = || ParamSet::new(vec![("w".into(), t())]).unwrap();
    let err = set()
        .with_masks(vec![("w".into(), Tensor::from_slice(&[12i64]))])
        .unwrap_err();
    assert!(
        matches!(
            err,
            PerturbError::MaskIndexOutOfRange {
                index: 12,
                numel: 12,
                ..
            }
        ),
        "{err}"
    );
    let err = set()
        .with_masks(vec![("w".into(), Tensor::from_slice(&[-1i64]))])
        .unwrap_err();
    assert!(
        matches!(err, PerturbError::MaskIndexOutOfRange { index: -1, .. }),
        "{err}"
    );
    let err = set()
        .with_masks(vec![("w".into(), Tensor::from_slice(&[2i64, 2]))])
        .unwrap_err();
    assert!(
        matches!(err, PerturbError::MaskDuplicateIndex { index: 2, .. }),
        "{err}"
    );
    let err = set()
        .with_masks(vec![("v".into(), Tensor::from_slice(&[0i64]))])
        .unwrap_err();
    assert!(
        matches!(err, PerturbError::MaskUnknownName { ref name } if name == "v"),
        "{err}"
    );
    let err = set()
        .with_masks(vec![("w".into(), Tensor::from_slice(&[0i32]))])
        .unwrap_err();
    assert!(
        matches!(
            err,
            PerturbError::MaskShape {
                kind: Kind::Int,
                ..
            }
        ),
        "{err}"
    );

    for scale in [f64::NAN, f64::INFINITY, 1e39] {
        let err = axpy_z(&set(), &[(1, 0.0), (1, scale)]).unwrap_err();
        assert!(
            matches!(err, PerturbError::InvalidScale { term: 1, .. }),
            "{err}"
        );
    }
}

/// Empty masks and empty term lists touch nothing.
#[test]
fn empty_terms_and_empty_masks_change_nothing() {
    let tensor = weights(10, Kind::Float);
    let before = bits(&tensor);
    let set = ParamSet::new(vec![("w".into(), tensor.shallow_clone())]).unwrap();
    axpy_z(&set, &[]).unwrap();
    assert_eq!(bits(&tensor), before);
    let masked = set
        .with_masks(vec![("w".into(), Tensor::from_slice::<i64>(&[]))])
        .unwrap();
    axpy_z(&masked, &[(3, 1.0)]).unwrap();
    assert_eq!(bits(&tensor), before);
}

/// What destinations hold before an out-of-place pass: untouched coordinates must keep it.
const SENTINEL: f64 = 7.0;

/// Tensors of one dtype with odd sizes (offsets 0, 1, 14, 49, 82, 82: not multiples of 4), one
/// empty, and one large enough for the CPU path's parallel chunks.
fn odd_tensors(kind: Kind) -> Vec<(String, Tensor)> {
    vec![
        ("a".to_string(), weights(1, kind)),
        ("b".to_string(), weights(13, kind)),
        ("c".to_string(), weights(7 * 5, kind).view([7, 5])),
        ("d".to_string(), weights(3 * 11, kind).view([3, 11])),
        ("e".to_string(), weights(0, kind)),
        ("f".to_string(), weights(70_001, kind)),
    ]
}

/// Masks for [`odd_tensors`]: "a" and "e" stay untouched, "f" is masked on a strided subset.
fn odd_masks() -> Vec<(String, Tensor)> {
    vec![
        ("b".to_string(), Tensor::from_slice(&[12i64, 0, 5])),
        (
            "c".to_string(),
            Tensor::from_slice(&[34i64, 1, 2, 3, 4, 20]),
        ),
        ("d".to_string(), Tensor::from_slice(&[32i64])),
        (
            "f".to_string(),
            Tensor::arange_start_step(3, 70_001, 7, (Kind::Int64, Device::Cpu)),
        ),
    ]
}

fn shallow(named: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    named
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect()
}

/// Out of place equals copy + in place bitwise at the touched coordinates, leaves the sentinel
/// elsewhere and the source unchanged: every dtype, dense and masked, 1 to 3 terms, the CPU
/// loops and the ATen path.
#[test]
fn out_of_place_equals_copy_then_in_place_bitwise() {
    let term_lists: [&[(u64, f64)]; 3] = [
        &[(21, 1e-3)],
        &[(22, 1e-3), (23, -2e-3)],
        &[(24, 0.5), (25, -0.125), (24, 3e-4)],
    ];
    for kind in [Kind::Float, Kind::Double, Kind::Half, Kind::BFloat16] {
        for masked in [false, true] {
            for terms in term_lists {
                for path in [PerturbPath::Auto, PerturbPath::Aten] {
                    let label =
                        format!("{kind:?}, masked {masked}, {} terms, {path:?}", terms.len());
                    let original = odd_tensors(kind);
                    let restrict = |set: ParamSet| {
                        if masked {
                            set.with_masks(odd_masks()).unwrap()
                        } else {
                            set
                        }
                    };

                    let reference = deep_copy(&original);
                    let in_place = restrict(ParamSet::new(shallow(&reference)).unwrap());
                    axpy_z_using(&in_place, terms, path).unwrap();

                    let sources = deep_copy(&original);
                    let destinations: Vec<(String, Tensor)> = original
                        .iter()
                        .map(|(n, t)| (n.clone(), t.full_like(SENTINEL)))
                        .collect();
                    let set = restrict(ParamSet::new(shallow(&sources)).unwrap())
                        .writing_to(shallow(&destinations))
                        .unwrap();
                    assert_eq!(set.touched_numel(), in_place.touched_numel(), "{label}");
                    assert_eq!(set.pass_bytes(), in_place.pass_bytes(), "{label}");
                    let passes = passes_on_this_thread();
                    axpy_z_using(&set, terms, path).unwrap();
                    assert_eq!(passes_on_this_thread(), passes + 1, "{label}");

                    let masks: Vec<(String, Vec<i64>)> = odd_masks()
                        .iter()
                        .map(|(n, m)| (n.clone(), Vec::<i64>::try_from(m).unwrap()))
                        .collect();
                    for (((name, o), (_, r)), ((_, s), (_, d))) in original
                        .iter()
                        .zip(&reference)
                        .zip(sources.iter().zip(&destinations))
                    {
                        assert_eq!(bits(s), bits(o), "{label}: source {name} changed");
                        let (r, d) = (bits(r), bits(d));
                        let mut touched = vec![!masked; r.len()];
                        if masked {
                            for (_, indices) in masks.iter().filter(|(n, _)| n == name) {
                                for &i in indices {
                                    touched[i as usize] = true;
                                }
                            }
                        }
                        for i in 0..r.len() {
                            let expected = if touched[i] { r[i] } else { SENTINEL.to_bits() };
                            assert_eq!(
                                d[i], expected,
                                "{label}: {name}[{i}] (touched {})",
                                touched[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A set that writes elsewhere takes one destination per parameter, of the source's dtype, shape
/// and device, contiguous, sharing memory with no source or other destination.
#[test]
fn bad_destinations_are_rejected_by_name() {
    let a = weights(6, Kind::Float);
    let b = weights(20, Kind::Float).view([4, 5]);
    let set = ParamSet::new(vec![
        ("a".into(), a.shallow_clone()),
        ("b".into(), b.shallow_clone()),
    ])
    .unwrap();
    let zeros = |sizes: &[i64], kind: Kind| Tensor::zeros(sizes, (kind, Device::Cpu));
    let good_a = || ("a".to_string(), zeros(&[6], Kind::Float));
    let good_b = || ("b".to_string(), zeros(&[4, 5], Kind::Float));

    let err = set.writing_to(vec![good_a()]).unwrap_err();
    assert!(
        matches!(err, PerturbError::DestinationMissing { ref name } if name == "b"),
        "{err}"
    );
    let err = set
        .writing_to(vec![
            good_a(),
            good_b(),
            ("c".into(), zeros(&[6], Kind::Float)),
        ])
        .unwrap_err();
    assert!(
        matches!(err, PerturbError::DestinationUnknownName { ref name } if name == "c"),
        "{err}"
    );
    let err = set
        .writing_to(vec![good_a(), good_b(), good_a()])
        .unwrap_err();
    assert!(
        matches!(err, PerturbError::DuplicateDestination { ref name } if name == "a"),
        "{err}"
    );
    for (destination, needle) in [
        (zeros(&[5, 4], Kind::Float), "sizes [5, 4]"),
        (zeros(&[20], Kind::Float), "sizes [20]"),
        (zeros(&[4, 5], Kind::Half), "dtype Half"),
        (
            zeros(&[5, 4], Kind::Float).transpose(0, 1),
            "not contiguous",
        ),
    ] {
        let err = set
            .writing_to(vec![good_a(), ("b".into(), destination)])
            .unwrap_err();
        assert!(
            matches!(err, PerturbError::DestinationMismatch { ref name, .. } if name == "b"),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{err}");
    }
    // Memory shared with the destination's own source, another source, another destination.
    let shared = zeros(&[30], Kind::Float);
    let cases = [
        (
            vec![good_a(), ("b".to_string(), b.shallow_clone())],
            "\"b\" shares memory with its source",
        ),
        (
            vec![("a".to_string(), b.view([-1]).narrow(0, 3, 6)), good_b()],
            "\"a\" shares memory with the source of \"b\"",
        ),
        (
            vec![
                ("a".to_string(), shared.narrow(0, 14, 6)),
                ("b".to_string(), shared.narrow(0, 0, 20).view([4, 5])),
            ],
            "shares memory with the destination of",
        ),
    ];
    for (destinations, needle) in cases {
        let err = set.writing_to(destinations).unwrap_err();
        assert!(
            matches!(err, PerturbError::DestinationAliases { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{err}");
    }
    // Adjacent, disjoint buffers are fine.
    set.writing_to(vec![
        ("a".to_string(), shared.narrow(0, 20, 6)),
        ("b".to_string(), shared.narrow(0, 0, 20).view([4, 5])),
    ])
    .unwrap();

    // A source resized after the set was built is refused at the pass.
    let out = set.writing_to(vec![good_a(), good_b()]).unwrap();
    let _ = a.shallow_clone().resize_([3]);
    let err = axpy_z(&out, &[(1, 1.0)]).unwrap_err();
    assert!(
        matches!(err, PerturbError::SourceChanged { ref name, .. } if name == "a"),
        "{err}"
    );
}
