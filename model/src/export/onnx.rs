//! A [`Plan`] as an ONNX model: opset 13, one graph from raw pixels to class probabilities.

use prost::Message;

use super::onnx_proto::*;
use super::{Layer, Plan, Values};
use crate::{ActivationKind, Preprocess};

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

/// The ONNX model of `plan`, which was trained on pixels `preprocess`ed: input [`INPUT`],
/// outputs [`LOGITS`] (the network's class scores) and [`PROBABILITIES`] (their softmax), each
/// `[batch, classes]` with the batch size free. `metadata` goes into `metadata_props`.
pub fn onnx(
    plan: &Plan,
    preprocess: &Preprocess,
    doc: &str,
    metadata: &[(String, String)],
) -> Vec<u8> {
    let mut graph = Graph::default();
    let inputs = graph.preprocess(preprocess);
    let last = (plan.layers.iter()).fold(inputs, |x, step| graph.layer(&step.name, &step.layer, x));
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
    /// Pixels 0..255 to network inputs, the same float operations as [`Preprocess::table`].
    fn preprocess(&mut self, preprocess: &Preprocess) -> String {
        let pixels = String::from(INPUT);
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
