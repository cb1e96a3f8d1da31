//! Test-time augmentation: a network classifies an image as the average of its logits over a
//! few views of it (the image, its mirror, the image moved a pixel each way), the same in
//! every stage and every export.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{InputShape, Network};

/// `[tta]`: which views of an image are classified; the logits of all of them are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Views {
    /// Also each view mirrored left to right (for clothing; not for digits).
    #[serde(default)]
    pub flip: bool,
    /// Also the image moved this many pixels up, down, left and right, background coming in.
    #[serde(default)]
    pub shift: usize,
}

/// One view: the image moved `down` and `right` pixels (negative: up, left), then mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub down: isize,
    pub right: isize,
    pub mirrored: bool,
}

impl Views {
    /// Only the image itself.
    pub fn is_single(&self) -> bool {
        !self.flip && self.shift == 0
    }

    /// Every view, the image itself first.
    pub fn list(&self) -> Vec<View> {
        let s = self.shift as isize;
        let mut moves = vec![(0, 0)];
        if s > 0 {
            moves.extend([(-s, 0), (s, 0), (0, -s), (0, s)]);
        }
        let mirrors: &[bool] = if self.flip { &[false, true] } else { &[false] };
        (moves.into_iter())
            .flat_map(|(down, right)| {
                mirrors.iter().map(move |&mirrored| View {
                    down,
                    right,
                    mirrored,
                })
            })
            .collect()
    }

    /// A short description for logs and cards, e.g. `10 views: mirrored, moved 1 pixel`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.flip {
            parts.push("mirrored".to_owned());
        }
        if self.shift > 0 {
            let plural = if self.shift == 1 { "" } else { "s" };
            parts.push(format!("moved {} pixel{plural} each way", self.shift));
        }
        match self.is_single() {
            true => "1 view".into(),
            false => format!("{} views: {}", self.list().len(), parts.join(", ")),
        }
    }

    /// `network`'s logits `[batch, classes]` for flattened, preprocessed images `[batch,
    /// pixels]`: the average over the views, and the image's own. `background` is the
    /// preprocessed value of a background pixel, which fills what a move uncovers.
    pub fn classify(
        &self,
        network: &Network,
        images: Tensor<2>,
        shape: InputShape,
        background: f32,
    ) -> Classified {
        let views = self.list();
        let mut logits = views
            .iter()
            .map(|view| network.forward(view.of(images.clone(), shape, background)));
        // `list` always starts with the image itself.
        let own = logits.next().expect("the image's own view");
        let sum = logits.fold(own.clone(), |sum, view| sum + view);
        Classified {
            averaged: if views.len() == 1 {
                sum
            } else {
                sum / views.len() as f32
            },
            own,
        }
    }
}

/// What [`Views::classify`] returns: the model's logits and those of the image alone.
pub struct Classified {
    pub averaged: Tensor<2>,
    pub own: Tensor<2>,
}

impl View {
    /// This view of flattened images `[batch, pixels]` of `shape`.
    pub fn of(&self, images: Tensor<2>, shape: InputShape, background: f32) -> Tensor<2> {
        if *self == Self::IDENTITY {
            return images;
        }
        let [batch, pixels] = images.dims();
        let mut x = images.reshape([batch, shape.height, shape.width]);
        x = moved(x, 1, self.down, background);
        x = moved(x, 2, self.right, background);
        if self.mirrored {
            x = x.flip([2]);
        }
        x.reshape([batch, pixels])
    }

    const IDENTITY: Self = Self {
        down: 0,
        right: 0,
        mirrored: false,
    };
}

/// `x` moved `by` places along `dim` (towards higher indices when positive), `background`
/// filling the places uncovered; nothing wraps around.
fn moved(x: Tensor<3>, dim: usize, by: isize, background: f32) -> Tensor<3> {
    let len = x.dims()[dim];
    let n = by.unsigned_abs().min(len);
    if n == 0 {
        return x;
    }
    let mut fill = x.dims();
    fill[dim] = n;
    let fill = Tensor::full(fill, background, &x.device());
    let kept = len - n;
    if kept == 0 {
        return fill;
    }
    match by > 0 {
        true => Tensor::cat(vec![fill, x.narrow(dim, 0, kept)], dim),
        false => Tensor::cat(vec![x.narrow(dim, n, kept), fill], dim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn view(down: isize, right: isize, mirrored: bool) -> View {
        View {
            down,
            right,
            mirrored,
        }
    }

    #[test]
    fn views_start_with_the_image_and_cover_every_move_and_mirror() {
        assert!(Views::default().is_single());
        assert_eq!(Views::default().describe(), "1 view");
        let both = Views {
            flip: true,
            shift: 1,
        };
        let list = both.list();
        assert_eq!(list.len(), 10);
        assert_eq!(list[..2], [view(0, 0, false), view(0, 0, true)]);
        for (down, right) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
            for mirrored in [false, true] {
                assert!(list.contains(&view(down, right, mirrored)));
            }
        }
        assert_eq!(
            both.describe(),
            "10 views: mirrored, moved 1 pixel each way"
        );
        let shifts = Views {
            flip: false,
            shift: 2,
        };
        assert_eq!(shifts.list().len(), 5);
        assert_eq!(shifts.describe(), "5 views: moved 2 pixels each way");
    }

    #[test]
    fn a_view_moves_and_mirrors_without_wrapping() {
        let shape = InputShape {
            height: 2,
            width: 3,
        };
        // One image: rows [1 2 3] and [4 5 6]; 9 the background.
        let image = || {
            Tensor::<2>::from_data(
                TensorData::new(vec![1.0f32, 2., 3., 4., 5., 6.], [1, 6]),
                &Device::flex(),
            )
        };
        let values = |v: View| -> Vec<f32> {
            v.of(image(), shape, 9.0)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(values(view(0, 0, false)), [1., 2., 3., 4., 5., 6.]);
        assert_eq!(values(view(0, 0, true)), [3., 2., 1., 6., 5., 4.]);
        assert_eq!(values(view(1, 0, false)), [9., 9., 9., 1., 2., 3.]);
        assert_eq!(values(view(-1, 0, false)), [4., 5., 6., 9., 9., 9.]);
        assert_eq!(values(view(0, 1, false)), [9., 1., 2., 9., 4., 5.]);
        assert_eq!(values(view(0, -2, false)), [3., 9., 9., 6., 9., 9.]);
        // Moved, then mirrored.
        assert_eq!(values(view(0, 1, true)), [2., 1., 9., 5., 4., 9.]);
        // Moved past the edge: all background.
        assert_eq!(values(view(3, 0, false)), [9.; 6]);
    }
}
