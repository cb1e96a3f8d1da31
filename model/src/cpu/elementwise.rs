//! ReLU and dropout's mask applied to a whole tensor, forward and backward: in parallel chunks,
//! vectorised for the CPU's instruction set, in place where nothing else holds the tensor.
//! Flex computes element-wise operations on one thread, and dropout as a multiply by a mask
//! tensor it keeps for the backward pass; the mask here is recomputed from its seed instead.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::dropout::Mask;
use super::f32s;
use super::isa::{InstructionSet, simd_kernel};

/// Elements per task.
const CHUNK: usize = 1 << 14;

/// ReLU: `x` where it is positive or NaN (which propagates, as in Burn and PyTorch), else zero.
pub(super) fn relu(x: FlexTensor) -> FlexTensor {
    in_place(x, |isa, _, values| relu_values(isa, values))
}

/// The gradient of [`relu`] from its output `y` and the output's gradient `dy`.
pub(super) fn relu_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
    let y = y.to_contiguous();
    let y = f32s(&y);
    in_place(dy, |isa, first, dy| {
        relu_gradient(isa, &y[first..first + dy.len()], dy)
    })
}

/// `x` times `mask`; as the mask is its own derivative, also the gradient of that.
pub(super) fn dropout(x: FlexTensor, mask: Mask) -> FlexTensor {
    in_place(x, |isa, first, values| {
        mask_values(isa, &mask, first as u64, values)
    })
}

/// Applies `f(isa, offset of the chunk, chunk)` to `x`'s values in parallel chunks: in place
/// when nothing else holds them, else on a copy.
fn in_place(x: FlexTensor, f: impl Fn(InstructionSet, usize, &mut [f32]) + Sync) -> FlexTensor {
    let len = x.shape().num_elements();
    let whole = x.is_contiguous() && x.layout().start_offset() == 0 && x.bytes().len() == len * 4;
    let mut x = if whole { x } else { x.to_contiguous() };
    let isa = InstructionSet::detected();
    x.storage_mut::<f32>()
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| f(isa, i * CHUNK, chunk));
    x
}

simd_kernel! {
    fn relu_values(values: &mut [f32]) {
        for value in values {
            if !(value.is_nan() || *value > 0.0) {
                *value = 0.0;
            }
        }
    }
}

simd_kernel! {
    fn relu_gradient(y: &[f32], dy: &mut [f32]) {
        for (dy, &y) in dy.iter_mut().zip(y) {
            if !(y.is_nan() || y > 0.0) {
                *dy = 0.0;
            }
        }
    }
}

simd_kernel! {
    /// `values` (the elements from index `first` on) times the mask.
    fn mask_values(mask: &Mask, first: u64, values: &mut [f32]) {
        for (value, index) in values.iter_mut().zip(first..) {
            *value *= mask.factor(index);
        }
    }
}
