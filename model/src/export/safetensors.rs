//! A [`Plan`]'s weights as safetensors, with the names and layouts of the PyTorch module that
//! [`super::pytorch_module`] writes: `load_state_dict(..., strict=True)` takes them as they are.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{ExportError, Layer, Plan, Values};

/// The safetensors file of `plan`'s weights; `metadata` goes into its header. Written here
/// rather than by the `safetensors` crate, whose header follows a `HashMap`'s order: the same
/// model gives the same bytes (and the same W&B digest) every time.
pub fn safetensors(
    plan: &Plan,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ExportError> {
    let mut tensors: Vec<Entry> = Vec::new();
    for step in &plan.layers {
        let mut add = |key: &str, values: &Values| {
            let bytes = values.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((
                format!("{}.{key}", step.name),
                "F32",
                values.shape.clone(),
                bytes,
            ));
        };
        match &step.layer {
            Layer::Conv { weight, bias, .. } => {
                add("weight", weight);
                add("bias", bias);
            }
            Layer::Linear { weight, bias } => {
                add("weight", &transposed(weight));
                add("bias", bias);
            }
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                variance,
                ..
            } => {
                add("weight", gamma);
                add("bias", beta);
                add("running_mean", mean);
                add("running_var", variance);
                // PyTorch's count of training batches, read only when its momentum is None
                // (a cumulative average); ours is a moving one.
                tensors.push((
                    format!("{}.num_batches_tracked", step.name),
                    "I64",
                    vec![],
                    0_i64.to_le_bytes().to_vec(),
                ));
            }
            Layer::Flatten | Layer::MaxPool { .. } | Layer::Activation(_) => {}
        }
    }

    // The header: a JSON object of the metadata and each tensor's type, shape and byte range,
    // padded with spaces to a multiple of 8 bytes, after its length (u64, little-endian).
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0;
    for (name, dtype, shape, bytes) in &tensors {
        let end = offset + bytes.len();
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header =
        serde_json::to_vec(&Value::Object(header)).map_err(|err| ExportError::Write {
            format: "safetensors",
            reason: err.to_string(),
        })?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut file = Vec::with_capacity(8 + header.len() + offset);
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(&header);
    for (_, _, _, bytes) in &tensors {
        file.extend_from_slice(bytes);
    }
    Ok(file)
}

/// A tensor's name, safetensors type, shape and little-endian bytes.
type Entry = (String, &'static str, Vec<usize>, Vec<u8>);

/// A `[in, out]` matrix as `[out, in]`.
fn transposed(matrix: &Values) -> Values {
    let [rows, columns] = [matrix.shape[0], matrix.shape[1]];
    let data = (0..columns)
        .flat_map(|c| (0..rows).map(move |r| matrix.data[r * columns + c]))
        .collect();
    Values {
        shape: vec![columns, rows],
        data,
    }
}
