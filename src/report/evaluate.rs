//! Running a network over a dataset: batched forward passes, the loss, predictions.

use anyhow::Result;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::TensorData;
use model::{Network, Views};
use serde::Serialize;

use crate::formats::classes::{Classes, Label};
use crate::formats::config::{Loss, Preprocess};
use crate::formats::data::{Images, Labelled};
use crate::formats::model_dir::WorstClass;

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
fn labels_tensor(labels: &[Label], device: &Device) -> Tensor<1, Int> {
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

/// The objective of `outputs` `[batch, classes]` against `targets` `[batch]`, with that share
/// of label smoothing (cross-entropy only; 0 in evaluations).
pub fn loss(loss: Loss, smoothing: f64, outputs: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    match loss {
        Loss::CrossEntropy => CrossEntropyLossConfig::new()
            .with_smoothing((smoothing > 0.0).then_some(smoothing as f32))
            .init(&outputs.device())
            .forward(outputs, targets),
        // Half the summed squared error per example, as the older Go example's update rule.
        Loss::SquaredError => {
            let [_, classes] = outputs.dims();
            let one_hot: Tensor<2> = targets.one_hot::<2>(classes).float();
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

/// The predicted class of every image, and the softmax probability of every class.
#[derive(Debug, Clone)]
pub struct Predicted {
    pub classes: Vec<Label>,
    /// One row of `width` per image.
    probabilities: Vec<f32>,
    width: usize,
}

/// The predicted class of every image, from the average of `views`' logits.
pub fn predict(
    network: &Network,
    images: &Images,
    preprocess: &Preprocess,
    views: &Views,
    device: &Device,
) -> Result<Predicted> {
    let inputs = images_tensor(images, preprocess, device);
    let background = background(preprocess);
    let mut predicted = Predicted::with_capacity(images.count);
    for start in (0..images.count).step_by(EVAL_BATCH) {
        let len = EVAL_BATCH.min(images.count - start);
        let batch = inputs.clone().narrow(0, start, len);
        let outputs = views.classify(network, batch, images.shape, background);
        predicted.add(outputs.averaged)?;
    }
    Ok(predicted)
}

/// The network input of a background pixel: what a moved view is filled with.
fn background(preprocess: &Preprocess) -> f32 {
    preprocess.table()[0]
}

impl Predicted {
    fn with_capacity(len: usize) -> Self {
        Self {
            classes: Vec::with_capacity(len),
            probabilities: Vec::new(),
            width: 0,
        }
    }

    /// Adds the predictions of a batch's outputs.
    fn add(&mut self, outputs: Tensor<2>) -> Result<()> {
        let [_, width] = outputs.dims();
        self.width = width;
        let probabilities = burn::tensor::activation::softmax(outputs.clone(), 1);
        let classes = outputs.argmax(1).try_into_data()?;
        // An index into the outputs, of which there are at most `classes::MAX`.
        self.classes
            .extend(classes.iter::<i64>().map(|c| c as Label));
        self.probabilities
            .extend(probabilities.try_into_data()?.iter::<f32>());
        Ok(())
    }

    /// Image `i`'s probability of each class.
    pub fn probabilities(&self, i: usize) -> &[f32] {
        &self.probabilities[i * self.width..(i + 1) * self.width]
    }

    /// Image `i`'s probability of its predicted class.
    pub fn confidence(&self, i: usize) -> f32 {
        self.probabilities(i)[usize::from(self.classes[i])]
    }
}

/// Loss, accuracy and predictions of a network on labelled data.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    /// With several views: the accuracy of the image's own view alone.
    pub single_view_accuracy: Option<f64>,
    pub predicted: Predicted,
}

/// A labelled dataset on a device: its preprocessed images and its labels as tensors, made
/// once and then used for every batch and every evaluation.
pub struct DeviceData<'a> {
    pub data: &'a Labelled,
    pub inputs: Tensor<2>,
    pub targets: Tensor<1, Int>,
    background: f32,
}

impl<'a> DeviceData<'a> {
    pub fn new(data: &'a Labelled, preprocess: &Preprocess, device: &Device) -> Self {
        Self {
            data,
            inputs: images_tensor(&data.images, preprocess, device),
            targets: labels_tensor(&data.labels, device),
            background: background(preprocess),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Loss, accuracy and predictions of `network` on this data, in batches, classifying each
    /// image by the average of `views`' logits.
    pub fn evaluate(
        &self,
        network: &Network,
        loss_kind: Loss,
        views: &Views,
    ) -> Result<Evaluation> {
        let len = self.len();
        let mut predicted = Predicted::with_capacity(len);
        let mut loss_sum = 0.0;
        let mut own_correct = 0;
        for start in (0..len).step_by(EVAL_BATCH) {
            let batch = EVAL_BATCH.min(len - start);
            let inputs = self.inputs.clone().narrow(0, start, batch);
            let outputs = views.classify(network, inputs, self.data.images.shape, self.background);
            let targets = self.targets.clone().narrow(0, start, batch);
            if !views.is_single() {
                let own = correct(outputs.own, targets.clone());
                own_correct += own.try_into_scalar::<i64>()? as usize;
            }
            let batch_loss = loss(loss_kind, 0.0, outputs.averaged.clone(), targets);
            loss_sum += f64::from(batch_loss.try_into_scalar::<f32>()?) * batch as f64;
            predicted.add(outputs.averaged)?;
        }
        let correct = predicted
            .classes
            .iter()
            .zip(&self.data.labels)
            .filter(|(p, l)| p == l)
            .count();
        let share = |count: usize| count as f64 / len.max(1) as f64;
        Ok(Evaluation {
            loss: loss_sum / len.max(1) as f64,
            accuracy: share(correct),
            single_view_accuracy: (!views.is_single()).then(|| share(own_correct)),
            predicted,
        })
    }
}

/// Accuracy, loss and per-class figures of a labelled evaluation.
#[derive(Debug, Serialize)]
pub struct ClassStats {
    pub data: String,
    pub examples: usize,
    pub accuracy: f64,
    pub loss: f64,
    pub per_class: Vec<ClassFigures>,
    /// `confusion[actual][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub worst_class: usize,
    /// Its name, when the classes have names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_class_name: Option<String>,
    pub worst_class_error: f64,
    /// The classes' names, in label order, when they have names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct ClassFigures {
    pub class: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl ClassStats {
    /// The class most often missed; `None` without examples.
    pub fn worst(&self) -> Option<WorstClass> {
        worst_of(&self.per_class)
    }

    /// The figures of `evaluation` on data (named `data`) labelled `labels`, among `classes`.
    pub fn of(data: String, classes: &Classes, labels: &[Label], evaluation: &Evaluation) -> Self {
        let (predictions, loss) = (&evaluation.predicted.classes, evaluation.loss);
        let count = classes.count;
        let named = |class: usize| classes.names.as_ref().map(|_| classes.name(class));
        let mut confusion = vec![vec![0usize; count]; count];
        for (&actual, &predicted) in labels.iter().zip(predictions) {
            confusion[usize::from(actual)][usize::from(predicted)] += 1;
        }
        let ratio = |num: usize, den: usize| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let per_class: Vec<ClassFigures> = (0..count)
            .map(|class| {
                let hits = confusion[class][class];
                let support: usize = confusion[class].iter().sum();
                let predicted: usize = confusion.iter().map(|row| row[class]).sum();
                let precision = ratio(hits, predicted);
                let recall = ratio(hits, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassFigures {
                    class,
                    name: named(class),
                    support,
                    precision,
                    recall,
                    f1,
                }
            })
            .collect();
        let worst = worst_of(&per_class);
        let correct: usize = (0..count).map(|c| confusion[c][c]).sum();
        Self {
            data,
            examples: labels.len(),
            accuracy: ratio(correct, labels.len()),
            loss,
            worst_class: worst.as_ref().map_or(0, |w| w.class),
            worst_class_name: worst.as_ref().and_then(|w| w.name.clone()),
            worst_class_error: worst.map_or(0.0, |w| w.error),
            class_names: classes.names.clone(),
            per_class,
            confusion,
        }
    }
}

/// The class with the lowest recall among those with examples; `None` without examples.
fn worst_of(per_class: &[ClassFigures]) -> Option<WorstClass> {
    per_class
        .iter()
        .filter(|c| c.support > 0)
        .min_by(|a, b| a.recall.total_cmp(&b.recall))
        .map(|c| WorstClass {
            class: c.class,
            name: c.name.clone(),
            error: 1.0 - c.recall,
        })
}
