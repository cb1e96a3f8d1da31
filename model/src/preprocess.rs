//! How pixels 0..255 become network inputs: in training, in inference and in every export.

use serde::{Deserialize, Serialize};

/// How pixels 0..255 become network inputs. (Variants without data are written as empty
/// structs: serde ignores unknown keys beside the tag of a unit variant.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// Any ink is 1, background 0 (the older Go example).
    Binarize {},
    /// `pixel / 255`.
    Scale {},
    /// `(pixel / 255 - mean) / std`.
    Standardize { mean: f32, std: f32 },
}

impl Preprocess {
    /// The network input for each pixel value, as a lookup table.
    pub fn table(&self) -> [f32; 256] {
        std::array::from_fn(|pixel| {
            let value = pixel as f32 / 255.0;
            match *self {
                Self::Binarize {} => f32::from(u8::from(pixel > 0)),
                Self::Scale {} => value,
                Self::Standardize { mean, std } => (value - mean) / std,
            }
        })
    }

    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        let table = self.table();
        pixels.iter().map(|&p| table[usize::from(p)]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessing_tables() {
        assert_eq!(Preprocess::Binarize {}.apply(&[0, 1, 255]), [0.0, 1.0, 1.0]);
        assert_eq!(Preprocess::Scale {}.apply(&[0, 255]), [0.0, 1.0]);
        let standardize = Preprocess::Standardize {
            mean: 0.5,
            std: 0.25,
        };
        assert_eq!(standardize.apply(&[0, 255]), [-2.0, 2.0]);
    }
}
