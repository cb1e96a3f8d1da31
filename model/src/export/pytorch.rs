//! A [`Plan`] as the source of a PyTorch module whose `state_dict` is
//! [`super::safetensors`]'s file, names and layouts alike.

use std::fmt::Write;

use super::{Layer, Plan};
use crate::{ActivationKind, Preprocess, Views};

/// Python source defining `Net`, an `nn.Sequential` of `plan`'s layers after the model's
/// preprocessing that averages the logits of `views`, and `CLASSES`, the class names in label
/// order. `summary` heads its docstring.
pub fn pytorch_module(
    plan: &Plan,
    preprocess: &Preprocess,
    views: &Views,
    summary: &str,
    classes: &[String],
) -> String {
    let (height, width) = (plan.input.height, plan.input.width);
    let mut layers = vec![("preprocess".to_owned(), "Preprocess()".to_owned())];
    let mut flat = false;
    for step in &plan.layers {
        let module = match &step.layer {
            Layer::Flatten => {
                flat = true;
                "nn.Flatten()".to_owned()
            }
            Layer::Conv {
                weight, padding, ..
            } => {
                let [out, input, kernel] = [weight.shape[0], weight.shape[1], weight.shape[2]];
                format!("nn.Conv2d({input}, {out}, {kernel}, padding={padding})")
            }
            Layer::MaxPool { size } => format!("nn.MaxPool2d({size})"),
            Layer::BatchNorm { gamma, epsilon, .. } => {
                let dims = if flat { 1 } else { 2 };
                format!("nn.BatchNorm{dims}d({}, eps={epsilon:?})", gamma.shape[0])
            }
            Layer::Activation(kind) => match kind {
                ActivationKind::Relu => "nn.ReLU()",
                ActivationKind::Sigmoid => "nn.Sigmoid()",
                ActivationKind::Tanh => "nn.Tanh()",
                ActivationKind::Identity => "nn.Identity()",
            }
            .to_owned(),
            Layer::Linear { weight, .. } => {
                format!("nn.Linear({}, {})", weight.shape[0], weight.shape[1])
            }
        };
        layers.push((step.name.clone(), module));
    }

    let (doc, expression) = match *preprocess {
        Preprocess::Binarize {} => ("any ink is 1, background 0", "(pixels > 0).float()".into()),
        Preprocess::Scale {} => ("pixel / 255", "pixels / 255".into()),
        Preprocess::Standardize { mean, std } => (
            "(pixel / 255 - mean) / std",
            format!("(pixels / 255 - {mean:?}) / {std:?}"),
        ),
    };
    let classes = serde_json::to_string(classes).unwrap_or_else(|_| "[]".into());
    let (averaged, imports, constants, forward) = match views.is_single() {
        true => Default::default(),
        false => (
            format!(
                "\nThe logits are the average over the {} views of each image that `VIEWS` lists.",
                views.list().len()
            ),
            "import torch\n",
            views_constants(views),
            VIEWS_FORWARD,
        ),
    };
    let mut source = format!(
        r#""""The PyTorch twin of an `mnist` model: {summary}.

Written by `mnist export` {version} beside model.safetensors, whose names and layouts it matches:

    net = Net()
    net.load_state_dict(safetensors.torch.load_file("model.safetensors"), strict=True)
    probabilities = net.eval()(pixels).softmax(1)

`Net` reads raw pixels, float32 [batch, 1, {height}, {width}] with values 0..255 (0 the
background), applies the preprocessing the model was trained with, and returns the class logits
[batch, {count}].{averaged} In eval mode batch normalization uses its running statistics.
"""

from collections import OrderedDict

{imports}from torch import nn

# The class names, in label order.
CLASSES = {classes}
{constants}

class Preprocess(nn.Module):
    """Pixels 0..255 to the network's inputs: {doc}."""

    def forward(self, pixels):
        return {expression}


class Net(nn.Sequential):
    def __init__(self):
        super().__init__(
            OrderedDict(
                [
"#,
        version = env!("CARGO_PKG_VERSION"),
        count = plan.classes,
    );
    for (name, module) in layers {
        // Infallible: writing to a String.
        let _ = writeln!(source, "                    ({name:?}, {module}),");
    }
    source.push_str("                ]\n            )\n        )\n");
    source.push_str(forward);
    source
}

/// `VIEWS` and `SHIFT`, which [`VIEWS_FORWARD`] reads.
fn views_constants(views: &Views) -> String {
    let python_bool = |b: bool| if b { "True" } else { "False" };
    let list: Vec<String> = (views.list().iter())
        .map(|v| format!("({}, {}, {})", v.down, v.right, python_bool(v.mirrored)))
        .collect();
    format!(
        r#"
# Test-time augmentation: the views of an image whose logits `Net` averages, as (pixels moved
# down, pixels moved right, mirrored left to right afterwards); background comes in.
VIEWS = [{}]
SHIFT = {}
"#,
        list.join(", "),
        views.shift
    )
}

/// `Net.forward` when it averages the logits of several views.
const VIEWS_FORWARD: &str = r#"
    def forward(self, pixels):
        height, width = pixels.shape[2:]
        padded = nn.functional.pad(pixels, (SHIFT,) * 4)
        views = []
        for down, right, mirrored in VIEWS:
            top, left = SHIFT - down, SHIFT - right
            view = padded[:, :, top : top + height, left : left + width]
            views.append(view.flip(3) if mirrored else view)
        logits = super().forward(torch.cat(views))
        return logits.view(len(VIEWS), -1, logits.shape[1]).mean(0)
"#;
