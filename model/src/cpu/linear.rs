//! A fully connected layer, `y [n, out] = x [n, in] x w [in, out] + bias`, with its gradients
//! `dw = xᵀ x dy`, `dbias = columns of dy summed` and `dx = dy x wᵀ`: one matrix multiply each,
//! straight into the result, where Flex's matmul copies its operands and result.

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;

use super::matmul::{Matrix, matmul_parallel};
use super::{Grads, f32s};

pub(super) fn forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
    let ([n, inputs], [_, outputs]) = (x.shape().dims::<2>(), weight.shape().dims::<2>());
    let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
    let mut y: Vec<f32> = f32s(&bias).repeat(n);
    let (x, w) = (
        Matrix::new(f32s(&x), n, inputs),
        Matrix::new(f32s(&weight), inputs, outputs),
    );
    matmul_parallel(&mut y, x, w, true);
    FlexTensor::from_data(TensorData::new(y, [n, outputs]))
}

pub(super) fn backward(
    x: FlexTensor,
    weight: FlexTensor,
    dy: FlexTensor,
    input_grad: bool,
) -> Grads<Flex> {
    let ([n, inputs], [_, outputs]) = (x.shape().dims::<2>(), weight.shape().dims::<2>());
    let [x, weight, dy] = [x, weight, dy].map(|t| t.to_contiguous());
    let x = Matrix::new(f32s(&x), n, inputs);
    let dy_m = Matrix::new(f32s(&dy), n, outputs);
    let mut dweight = vec![0.0f32; inputs * outputs];
    matmul_parallel(&mut dweight, x.t(), dy_m, false);
    let mut dbias = vec![0.0f32; outputs];
    for row in f32s(&dy).chunks(outputs) {
        for (sum, value) in dbias.iter_mut().zip(row) {
            *sum += value;
        }
    }
    let dx = input_grad.then(|| {
        let mut dx = vec![0.0f32; n * inputs];
        matmul_parallel(
            &mut dx,
            dy_m,
            Matrix::new(f32s(&weight), inputs, outputs).t(),
            false,
        );
        FlexTensor::from_data(TensorData::new(dx, [n, inputs]))
    });
    Grads {
        x: dx,
        weight: FlexTensor::from_data(TensorData::new(dweight, [inputs, outputs])),
        bias: FlexTensor::from_data(TensorData::new(dbias, [outputs])),
    }
}
