//! Running a network over a dataset: batched forward passes, the loss, predictions.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::TensorData;
use model::Network;

use crate::config::{Loss, Preprocess};
use crate::data::{CLASSES, Images, Labelled};

/// Images per forward pass when no gradients are kept.
const EVAL_BATCH: usize = 1024;

/// The preprocessed images `[count, pixels]` as one tensor on `device`.
fn images_tensor(images: &Images, preprocess: &Preprocess, device: &Device) -> Tensor<2> {
    let data = TensorData::new(
        preprocess.apply(&images.pixels),
        [images.count, images.shape.pixels()],
    );
    Tensor::from_data(data, device)
}

/// The labels `[count]` as one tensor on `device`.
fn labels_tensor(labels: &[u8], device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i32> = labels.iter().map(|&l| i32::from(l)).collect();
    let count = labels.len();
    Tensor::from_data(TensorData::new(labels, [count]), device)
}

/// Row indices `[len]` for `select`.
pub fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let indices: Vec<i32> = indices.iter().map(|&i| i as i32).collect();
    let len = indices.len();
    Tensor::from_data(TensorData::new(indices, [len]), device)
}

/// The training objective of `outputs` `[batch, classes]` against `targets` `[batch]`.
pub fn loss(loss: Loss, outputs: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    match loss {
        Loss::CrossEntropy => {
            burn::nn::loss::CrossEntropyLoss::new(None, &outputs.device()).forward(outputs, targets)
        }
        // Half the summed squared error per example, as the older Go example's update rule.
        Loss::SquaredError => {
            let one_hot: Tensor<2> = targets.one_hot::<2>(CLASSES).float();
            (outputs - one_hot).square().sum_dim(1).mean() * 0.5
        }
    }
}

/// Number of rows of `outputs` whose highest score is the target class.
pub fn correct(outputs: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1, Int> {
    outputs
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(targets)
        .int()
        .sum()
}

/// The predicted class of every image, and its softmax probability.
#[derive(Debug, Clone)]
pub struct Predicted {
    pub classes: Vec<u8>,
    pub confidences: Vec<f32>,
}

/// The predicted class of every image.
pub fn predict(
    network: &Network,
    images: &Images,
    preprocess: &Preprocess,
    device: &Device,
) -> Result<Predicted> {
    let inputs = images_tensor(images, preprocess, device);
    let mut predicted = Predicted::with_capacity(images.count);
    for start in (0..images.count).step_by(EVAL_BATCH) {
        let len = EVAL_BATCH.min(images.count - start);
        let outputs = network.forward(inputs.clone().narrow(0, start, len));
        predicted.add(outputs)?;
    }
    Ok(predicted)
}

impl Predicted {
    fn with_capacity(len: usize) -> Self {
        Self {
            classes: Vec::with_capacity(len),
            confidences: Vec::with_capacity(len),
        }
    }

    /// Adds the predictions of a batch's outputs.
    fn add(&mut self, outputs: Tensor<2>) -> Result<()> {
        let probabilities = burn::tensor::activation::softmax(outputs.clone(), 1);
        let classes = outputs.argmax(1).try_into_data()?;
        self.classes.extend(classes.iter::<i64>().map(|c| c as u8));
        let best = probabilities.max_dim(1).try_into_data()?;
        self.confidences.extend(best.iter::<f32>());
        Ok(())
    }
}

/// Loss, accuracy and predictions of a network on labelled data.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub predicted: Predicted,
}

/// A labelled dataset on a device: its preprocessed images and its labels as tensors, made
/// once and then used for every batch and every evaluation.
pub struct DeviceData<'a> {
    pub data: &'a Labelled,
    pub inputs: Tensor<2>,
    pub targets: Tensor<1, Int>,
}

impl<'a> DeviceData<'a> {
    pub fn new(data: &'a Labelled, preprocess: &Preprocess, device: &Device) -> Self {
        Self {
            data,
            inputs: images_tensor(&data.images, preprocess, device),
            targets: labels_tensor(&data.labels, device),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Loss, accuracy and predictions of `network` on this data, in batches.
    pub fn evaluate(&self, network: &Network, loss_kind: Loss) -> Result<Evaluation> {
        let len = self.len();
        let mut predicted = Predicted::with_capacity(len);
        let mut loss_sum = 0.0;
        for start in (0..len).step_by(EVAL_BATCH) {
            let batch = EVAL_BATCH.min(len - start);
            let outputs = network.forward(self.inputs.clone().narrow(0, start, batch));
            let targets = self.targets.clone().narrow(0, start, batch);
            let batch_loss = loss(loss_kind, outputs.clone(), targets);
            loss_sum += f64::from(batch_loss.try_into_scalar::<f32>()?) * batch as f64;
            predicted.add(outputs)?;
        }
        let correct = predicted
            .classes
            .iter()
            .zip(&self.data.labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(Evaluation {
            loss: loss_sum / len.max(1) as f64,
            accuracy: correct as f64 / len.max(1) as f64,
            predicted,
        })
    }
}
