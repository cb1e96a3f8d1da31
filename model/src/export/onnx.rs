//! A [`Plan`] as an ONNX model: opset 13, one graph from raw pixels to class probabilities.

use prost::Message;

use super::onnx_proto::*;
use super::{Layer, Plan, Values};
use crate::{ActivationKind, InputShape, Preprocess, Views};

/// The ONNX operator set the graphs use (ONNX Runtime 1.8 and TensorRT 8 on read it).
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
const IR_VERSION: i64 = 7;

/// What the graph reads and writes, for its documentation and metadata.
pub const INPUT: &str = "pixels";
pub const INPUT_DOC: &str = "float32 [batch, 1, height, width]: raw pixel values 0..255, 0 the \
                             background; the graph applies the model's preprocessing itself";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";

/// The ONNX model of `plan`, which was trained on pixels `preprocess`ed and classifies an image
/// by the average of its `views`' logits: input [`INPUT`], outputs [`LOGITS`] (the class scores)
/// and [`PROBABILITIES`] (their softmax), each `[batch, classes]` with the batch size free.
/// `metadata` goes into `metadata_props`.
pub fn onnx(
    plan: &Plan,
    preprocess: &Preprocess,
    views: &Views,
    doc: &str,
    metadata: &[(String, String)],
) -> Vec<u8> {
    let mut graph = Graph::default();
    let pixels = graph.views(views, plan.input);
    let inputs = graph.preprocess(preprocess, pixels);
    let mut last =
        (plan.layers.iter()).fold(inputs, |x, step| graph.layer(&step.name, &step.layer, x));
    if !views.is_single() {
        last = graph.average(views.list().len(), plan.classes, last);
    }
    graph.rename(&last, LOGITS);
    graph.node(
        "Softmax",
        PROBABILITIES,
        vec![LOGITS.into()],
        vec![int("axis", 1)],
    );

    let batch = || Dimension {
        dim_param: Some("batch".into()),
        ..Default::default()
    };
    let sized = |size: usize| Dimension {
        dim_value: Some(size as i64),
        ..Default::default()
    };
    let (height, width) = (plan.input.height, plan.input.width);
    let input = value_info(
        INPUT,
        vec![batch(), sized(1), sized(height), sized(width)],
        INPUT_DOC,
    );
    let output = |name: &str, doc: &str| value_info(name, vec![batch(), sized(plan.classes)], doc);
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "mnist".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: "mnist".into(),
            initializer: graph.initializers,
            input: vec![input],
            output: vec![
                output(LOGITS, "float32 [batch, classes]: the class scores"),
                output(
                    PROBABILITIES,
                    "float32 [batch, classes]: softmax of the logits",
                ),
            ],
        }),
        metadata_props: (metadata.iter())
            .map(|(key, value)| StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    };
    model.encode_to_vec()
}

/// Nodes and weights, each node's output named after the node.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// The graph's input, or with several views all of them one after another along the batch
    /// axis, in [`Views::list`]'s order: moved by slicing the input padded with background,
    /// mirrored by slicing backwards.
    fn views(&mut self, views: &Views, input: InputShape) -> String {
        let list = views.list();
        if list.len() == 1 {
            return INPUT.into();
        }
        let s = views.shift as i64;
        let (height, width) = (input.height as i64, input.width as i64);
        // The input padded with background, and the axes a move slices along.
        let moves = (s > 0).then(|| {
            let pads = self.int64s("view_pads", &[0, 0, s, s, 0, 0, s, s]);
            let padded = self.node("Pad", "padded", vec![INPUT.into(), pads], vec![]);
            (padded, self.int64s("spatial_axes", &[2, 3]))
        });
        let mirror = views.flip.then(|| {
            [
                self.int64s("mirror_starts", &[-1]),
                self.int64s("mirror_ends", &[i64::MIN]),
                self.int64s("width_axis", &[3]),
                self.int64s("mirror_steps", &[-1]),
            ]
        });
        let mut each = Vec::new();
        for (i, view) in list.iter().enumerate() {
            let mut x = String::from(INPUT);
            if let Some((padded, axes)) = &moves
                && (view.down, view.right) != (0, 0)
            {
                let (top, left) = (s - view.down as i64, s - view.right as i64);
                let starts = self.int64s(&format!("view{i}_starts"), &[top, left]);
                let ends = self.int64s(&format!("view{i}_ends"), &[top + height, left + width]);
                let inputs = vec![padded.clone(), starts, ends, axes.clone()];
                x = self.node("Slice", &format!("view{i}_moved"), inputs, vec![]);
            }
            if let Some(mirror) = mirror.as_ref().filter(|_| view.mirrored) {
                let inputs = std::iter::once(x).chain(mirror.iter().cloned()).collect();
                x = self.node("Slice", &format!("view{i}_mirrored"), inputs, vec![]);
            }
            each.push(x);
        }
        self.node("Concat", "views", each, vec![int("axis", 0)])
    }

    /// The mean over `views` of logits `[views * batch, classes]`, view by view.
    fn average(&mut self, views: usize, classes: usize, logits: String) -> String {
        let shape = self.int64s("views_shape", &[views as i64, -1, classes as i64]);
        let split = self.node("Reshape", "view_logits", vec![logits, shape], vec![]);
        let attributes = vec![ints("axes", &[0]), int("keepdims", 0)];
        self.node("ReduceMean", "averaged", vec![split], attributes)
    }

    /// Pixels 0..255 to network inputs, the same float operations as [`Preprocess::table`].
    fn preprocess(&mut self, preprocess: &Preprocess, pixels: String) -> String {
        match *preprocess {
            Preprocess::Binarize {} => {
                let zero = self.scalar("zero", 0.0);
                let ink = self.node("Greater", "ink", vec![pixels, zero], vec![]);
                self.node(
                    "Cast",
                    "inputs",
                    vec![ink],
                    vec![int("to", TensorProto::FLOAT)],
                )
            }
            Preprocess::Scale {} => {
                let full = self.scalar("full_scale", 255.0);
                self.node("Div", "inputs", vec![pixels, full], vec![])
            }
            Preprocess::Standardize { mean, std } => {
                let full = self.scalar("full_scale", 255.0);
                let scaled = self.node("Div", "scaled", vec![pixels, full], vec![]);
                let mean = self.scalar("mean", mean);
                let centred = self.node("Sub", "centred", vec![scaled, mean], vec![]);
                let std = self.scalar("std", std);
                self.node("Div", "inputs", vec![centred, std], vec![])
            }
        }
    }

    fn layer(&mut self, name: &str, layer: &Layer, x: String) -> String {
        match layer {
            Layer::Flatten => self.node("Flatten", name, vec![x], vec![int("axis", 1)]),
            Layer::Conv {
                weight,
                bias,
                padding,
            } => {
                let kernel = weight.shape[2] as i64;
                let pad = *padding as i64;
                let inputs = vec![
                    x,
                    self.weight(&format!("{name}.weight"), weight),
                    self.weight(&format!("{name}.bias"), bias),
                ];
                let attributes = vec![
                    ints("kernel_shape", &[kernel, kernel]),
                    ints("pads", &[pad; 4]),
                    ints("strides", &[1, 1]),
                ];
                self.node("Conv", name, inputs, attributes)
            }
            Layer::MaxPool { size } => {
                let size = *size as i64;
                let attributes = vec![
                    ints("kernel_shape", &[size, size]),
                    ints("strides", &[size, size]),
                ];
                self.node("MaxPool", name, vec![x], attributes)
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                variance,
                epsilon,
            } => {
                let inputs = vec![
                    x,
                    self.weight(&format!("{name}.weight"), gamma),
                    self.weight(&format!("{name}.bias"), beta),
                    self.weight(&format!("{name}.running_mean"), mean),
                    self.weight(&format!("{name}.running_var"), variance),
                ];
                let epsilon = AttributeProto {
                    name: "epsilon".into(),
                    f: Some(*epsilon as f32),
                    r#type: AttributeProto::FLOAT,
                    ..Default::default()
                };
                self.node("BatchNormalization", name, inputs, vec![epsilon])
            }
            Layer::Activation(kind) => {
                let op = match kind {
                    ActivationKind::Relu => "Relu",
                    ActivationKind::Sigmoid => "Sigmoid",
                    ActivationKind::Tanh => "Tanh",
                    ActivationKind::Identity => "Identity",
                };
                self.node(op, name, vec![x], vec![])
            }
            Layer::Linear { weight, bias } => {
                // Gemm computes x·B + C: Burn's [in, out] weight is B as it is.
                let inputs = vec![
                    x,
                    self.weight(&format!("{name}.weight"), weight),
                    self.weight(&format!("{name}.bias"), bias),
                ];
                self.node("Gemm", name, inputs, vec![])
            }
        }
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        input: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input,
            output: vec![name.into()],
            name: name.into(),
            op_type: op.into(),
            attribute,
        });
        name.into()
    }

    /// Names the value `from` `to` where it is made and read.
    fn rename(&mut self, from: &str, to: &str) {
        for name in (self.nodes.iter_mut()).flat_map(|n| n.input.iter_mut().chain(&mut n.output)) {
            if name == from {
                *name = to.into();
            }
        }
    }

    fn weight(&mut self, name: &str, values: &Values) -> String {
        self.initializers.push(TensorProto {
            dims: values.shape.iter().map(|&d| d as i64).collect(),
            data_type: TensorProto::FLOAT,
            name: name.into(),
            raw_data: values.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    /// A one-dimensional int64 constant: shapes, pads, slice bounds.
    fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: TensorProto::INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    fn scalar(&mut self, name: &str, value: f32) -> String {
        let values = Values {
            shape: vec![],
            data: vec![value],
        };
        self.weight(name, &values)
    }
}

fn int(name: &str, value: i32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: Some(value.into()),
        r#type: AttributeProto::INT,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: AttributeProto::INTS,
        ..Default::default()
    }
}

fn value_info(name: &str, dim: Vec<Dimension>, doc: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: TensorProto::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: doc.into(),
    }
}
