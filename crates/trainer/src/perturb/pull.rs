//! The proximal pull of DP-ZOSO / DP-ZOPO over a [`ParamSet`]: `theta <- lerp(theta, anchor, w)`
//! on the touched coordinates, i.e. `(1 - w) theta + w theta_anchor` (docs/paper.md §1.2, the
//! `lambda (theta - theta_anchor)` part of the update with `w = eta lambda`).
//!
//! An anchor holds one value per touched coordinate of its tensor: a full copy for a dense
//! entry, the masked coordinates in mask order for a masked one (what `take(mask)` returns).
//!
//! CUDA entries take one NVRTC kernel launch per element type (all tensors at once), instead of
//! a take / lerp / put per tensor, which on OPT-2.7B with a 1% mask is over a thousand small
//! launches per step and leaves the GPU waiting on the host. The kernel follows ATen's `lerp`
//! (aten/src/ATen/native/Lerp.h): in f32 for f32/f16/bf16 tensors (f64 for f64), with the
//! weight rounded to that type, `x + w (a - x)` for |w| < 1/2 and `a - (a - x)(1 - w)`
//! otherwise, rounded once to the tensor's dtype. ATen may contract the products into FMAs, so
//! the two agree to within one rounding of the tensor's dtype (tested on the GPU), not always
//! bit for bit. CPU entries, and CUDA entries when the kernel cannot be loaded, use ATen.

use super::cuda;
use super::error::PerturbError;
use super::param_set::{ParamEntry, ParamSet, Selection};
use super::PerturbPath;
use tch::{Device, Tensor};

/// `theta <- lerp(theta, anchor, weight)` on the touched coordinates of each tensor named in
/// `anchors`; tensors without an anchor are left alone.
///
/// # Errors
/// A non-finite weight; an anchor for an unknown or untouched tensor, or one whose dtype,
/// device, layout or length does not match the tensor's touched coordinates; a CUDA or
/// libtorch failure.
pub fn pull_towards(
    params: &ParamSet,
    anchors: &[(String, Tensor)],
    weight: f64,
) -> Result<(), PerturbError> {
    pull_towards_using(params, anchors, weight, PerturbPath::Auto)
}

/// [`pull_towards`] with an explicit implementation: `Auto` (the kernel for CUDA tensors when
/// it loads, else ATen), `NvrtcKernel` (an error if it cannot be loaded) or `Aten`.
pub fn pull_towards_using(
    params: &ParamSet,
    anchors: &[(String, Tensor)],
    weight: f64,
    path: PerturbPath,
) -> Result<(), PerturbError> {
    if !weight.is_finite() {
        return Err(PerturbError::InvalidPullWeight { weight });
    }
    let mut pairs = Vec::with_capacity(anchors.len());
    for (name, anchor) in anchors {
        let entry = params
            .position(name)
            .map(|position| &params.entries[position])
            .ok_or_else(|| PerturbError::AnchorMismatch {
                name: name.clone(),
                reason: "no parameter of this set has that name".into(),
            })?;
        check_anchor(entry, anchor)?;
        pairs.push((entry, anchor));
    }
    let mut on_kernel = Vec::new();
    for (entry, anchor) in pairs {
        match (path, entry.device) {
            (PerturbPath::Aten, _) | (_, Device::Cpu) => aten_pull(entry, anchor, weight)?,
            _ => on_kernel.push((entry, anchor)),
        }
    }
    if on_kernel.is_empty() {
        return Ok(());
    }
    if path == PerturbPath::NvrtcKernel || cuda::cuda_kernel_available() {
        cuda::pull_entries(&on_kernel, weight).map_err(PerturbError::from)
    } else {
        for (entry, anchor) in on_kernel {
            aten_pull(entry, anchor, weight)?;
        }
        Ok(())
    }
}

/// The anchor must be a contiguous tensor of the entry's dtype and device with one value per
/// touched coordinate.
fn check_anchor(entry: &ParamEntry, anchor: &Tensor) -> Result<(), PerturbError> {
    let mismatch = |reason: String| PerturbError::AnchorMismatch {
        name: entry.name.clone(),
        reason,
    };
    let expected = match &entry.selection {
        Selection::Dense => entry.numel,
        Selection::Masked { indices, .. } => indices.len() as u64,
        Selection::Untouched => {
            return Err(mismatch(
                "the tensor is not trained (no mask lists it)".into(),
            ))
        }
    };
    if anchor.kind() != entry.kind || anchor.device() != entry.device {
        return Err(mismatch(format!(
            "anchor is {:?} on {:?}, the tensor {:?} on {:?}",
            anchor.kind(),
            anchor.device(),
            entry.kind,
            entry.device
        )));
    }
    if !anchor.is_contiguous() || anchor.numel() as u64 != expected {
        return Err(mismatch(format!(
            "anchor has sizes {:?} (contiguous: {}); expected {expected} contiguous values",
            anchor.size(),
            anchor.is_contiguous()
        )));
    }
    Ok(())
}

/// ATen's lerp on one entry (in place for dense, take / lerp / put for masked).
fn aten_pull(entry: &ParamEntry, anchor: &Tensor, weight: f64) -> Result<(), PerturbError> {
    tch::no_grad(|| {
        let mut flat = entry.tensor.f_view(-1)?;
        match &entry.selection {
            Selection::Dense => {
                let _ = flat.f_lerp_(&anchor.f_view(-1)?, weight)?;
            }
            Selection::Masked {
                indices_on_device, ..
            } => {
                let moved = flat
                    .f_take(indices_on_device)?
                    .f_lerp(&anchor.f_view(-1)?, weight)?;
                let _ = flat.f_put_(indices_on_device, &moved, false)?;
            }
            Selection::Untouched => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn set_with_mask() -> (ParamSet, Tensor, Tensor) {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        let b = Tensor::from_slice(&[10.0f32, 20.0, 30.0]);
        let set = ParamSet::new(vec![
            ("a".into(), a.shallow_clone()),
            ("b".into(), b.shallow_clone()),
        ])
        .unwrap()
        .with_masks(vec![("b".into(), Tensor::from_slice(&[2i64, 0]))])
        .unwrap();
        (set, a, b)
    }

    /// Closed form: (1 - w) theta + w anchor at the masked coordinates (mask order), others kept.
    #[test]
    fn masked_pull_moves_listed_coordinates_towards_the_anchor() {
        let (set, _a, b) = set_with_mask();
        let anchor = Tensor::from_slice(&[0.0f32, 4.0]); // for b[2], then b[0]
        pull_towards(&set, &[("b".into(), anchor)], 0.25).unwrap();
        let got = Vec::<f32>::try_from(&b).unwrap();
        assert_eq!(got, vec![0.75 * 10.0 + 0.25 * 4.0, 20.0, 0.75 * 30.0]);
    }

    #[test]
    fn dense_pull_with_weight_above_one_half() {
        let a = Tensor::from_slice(&[1.0f64, -2.0]);
        let set = ParamSet::new(vec![("a".into(), a.shallow_clone())]).unwrap();
        pull_towards(
            &set,
            &[("a".into(), Tensor::from_slice(&[3.0f64, 2.0]))],
            0.75,
        )
        .unwrap();
        assert_eq!(Vec::<f64>::try_from(&a).unwrap(), vec![2.5, 1.0]);
    }

    #[test]
    fn mismatched_anchors_are_refused_by_name() {
        let (set, _a, _b) = set_with_mask();
        let zeros = |n: i64, kind: Kind| Tensor::zeros([n], (kind, Device::Cpu));
        let cases = [
            ("c", zeros(2, Kind::Float), "no parameter"),
            ("a", zeros(4, Kind::Float), "not trained"),
            ("b", zeros(3, Kind::Float), "expected 2"),
            ("b", zeros(2, Kind::Double), "Double"),
        ];
        for (name, anchor, needle) in cases {
            let err = pull_towards(&set, &[(name.into(), anchor)], 0.1).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(needle), "{text}");
        }
        let err = pull_towards(&set, &[], f64::NAN).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
    }
}
