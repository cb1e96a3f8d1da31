//! The data every stage passes around: images, their labels, a dataset's splits and its
//! classes. The readers of each format (`idx`, `pixels_csv`,
//! `png_digit`) and the loaders in `dataset` build on it.

use model::InputShape;

use super::classes::{Classes, Label};

/// Images of one shape, pixels 0..255 row-major, image after image.
#[derive(Debug, Clone)]
pub struct Images {
    pub shape: InputShape,
    pub count: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    pub fn empty(shape: InputShape) -> Self {
        Self {
            shape,
            count: 0,
            pixels: Vec::new(),
        }
    }

    /// Adds `other`'s images, of the same shape, after these.
    pub fn append(&mut self, mut other: Images) {
        debug_assert_eq!(self.shape, other.shape);
        self.pixels.append(&mut other.pixels);
        self.count += other.count;
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let len = self.shape.pixels();
        &self.pixels[index * len..(index + 1) * len]
    }
}

/// Images with one label each.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub images: Images,
    pub labels: Vec<Label>,
}

impl Labelled {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(indices.len() * self.images.shape.pixels());
        for &i in indices {
            pixels.extend_from_slice(self.images.image(i));
        }
        Self {
            images: Images {
                shape: self.images.shape,
                count: indices.len(),
                pixels,
            },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// A dataset's training and test parts, and its classes.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Where the data came from, for logs and provenance.
    pub source: String,
    pub train: Labelled,
    pub test: Labelled,
    pub classes: Classes,
}

impl Splits {
    /// Both parts must hold images of one shape.
    pub fn check_shapes(&self) -> anyhow::Result<()> {
        let (train, test) = (self.train.images.shape, self.test.images.shape);
        anyhow::ensure!(
            train == test,
            "{}: training images are {}x{} but test images are {}x{}",
            self.source,
            train.height,
            train.width,
            test.height,
            test.width
        );
        Ok(())
    }
}
