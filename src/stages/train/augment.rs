//! The training batch, gathered on the CPU with `[augment]`'s random changes applied to each
//! image's pixels (0..255, where 0 is the background) before preprocessing: a shift that fills
//! with background (never wrapping), a left-right mirror, an erased rectangle. Every draw comes
//! from the step's seed and the image's place in the batch, so a run repeats and resumes
//! exactly, at any thread count.

use model::InputShape;
use rayon::prelude::*;

use crate::formats::config::Augment;

/// Area of an erased rectangle, as shares of the image, and its aspect ratio (height / width).
const ERASE_AREA: (f64, f64) = (0.02, 0.25);
const ERASE_ASPECT: (f64, f64) = (0.3, 3.3);

/// The pixels of `images` (each `shape`) at `indices`, augmented with the draws of `seed`,
/// one after the other.
pub fn gather(
    augment: &Augment,
    pixels: &[u8],
    shape: InputShape,
    indices: &[usize],
    seed: u64,
) -> Vec<u8> {
    let len = shape.pixels();
    let mut batch = vec![0u8; indices.len() * len];
    batch
        .par_chunks_mut(len)
        .zip(indices)
        .enumerate()
        .for_each(|(place, (out, &index))| {
            let mut draws = Draws::new(seed, place as u64);
            augment_image(
                augment,
                &pixels[index * len..][..len],
                shape,
                &mut draws,
                out,
            );
        });
    batch
}

/// Writes `image` changed by `augment` into `out`.
fn augment_image(
    augment: &Augment,
    image: &[u8],
    shape: InputShape,
    draws: &mut Draws,
    out: &mut [u8],
) {
    let (h, w) = (shape.height as isize, shape.width as isize);
    let shift = augment.shift as isize;
    let (dy, dx) = (draws.between(-shift, shift), draws.between(-shift, shift));
    let flip = augment.flip && draws.chance(0.5);
    for (y, row) in (0..h).zip(out.chunks_exact_mut(w as usize)) {
        let sy = y + dy;
        if !(0..h).contains(&sy) {
            row.fill(0);
            continue;
        }
        let source = &image[(sy * w) as usize..][..w as usize];
        for (x, pixel) in (0..w).zip(row.iter_mut()) {
            let sx = if flip { w - 1 - x } else { x } + dx;
            *pixel = if (0..w).contains(&sx) {
                source[sx as usize]
            } else {
                0
            };
        }
    }
    if augment.erase > 0.0 && draws.chance(augment.erase) {
        erase(shape, draws, out);
    }
}

/// Sets a random rectangle of `out` to background, when one of the drawn size fits.
fn erase(shape: InputShape, draws: &mut Draws, out: &mut [u8]) {
    let area = (shape.pixels() as f64) * draws.uniform(ERASE_AREA.0, ERASE_AREA.1);
    let aspect = draws
        .uniform(ERASE_ASPECT.0.ln(), ERASE_ASPECT.1.ln())
        .exp();
    let eh = (area * aspect).sqrt().round() as usize;
    let ew = (area / aspect).sqrt().round() as usize;
    if eh == 0 || ew == 0 || eh > shape.height || ew > shape.width {
        return;
    }
    let top = draws.between(0, (shape.height - eh) as isize) as usize;
    let left = draws.between(0, (shape.width - ew) as isize) as usize;
    for row in out.chunks_exact_mut(shape.width).skip(top).take(eh) {
        row[left..left + ew].fill(0);
    }
}

/// A counter-based stream of random numbers (SplitMix64) for one image of one step.
struct Draws {
    state: u64,
}

impl Draws {
    fn new(seed: u64, place: u64) -> Self {
        Self {
            state: mix(seed ^ mix(place.wrapping_add(0xA5A5_5A5A))),
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform over the integers `low..=high`.
    fn between(&mut self, low: isize, high: isize) -> isize {
        let span = (high - low + 1) as u64;
        low + (self.next() % span) as isize
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: InputShape = InputShape {
        height: 6,
        width: 5,
    };

    /// Pixels 1 to 200, each different within an image: none is background.
    fn images(count: usize) -> Vec<u8> {
        (0..count * SHAPE.pixels())
            .map(|p| 1 + (p % 200) as u8)
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_batch_and_another_seed_another() {
        let augment = Augment {
            shift: 2,
            flip: true,
            erase: 0.5,
            ..Augment::default()
        };
        let pixels = images(8);
        let indices = [3, 1, 4, 1, 5, 7, 2, 6];
        let a = gather(&augment, &pixels, SHAPE, &indices, 7);
        assert_eq!(a, gather(&augment, &pixels, SHAPE, &indices, 7));
        assert_ne!(a, gather(&augment, &pixels, SHAPE, &indices, 8));
        // A thread pool of one draws the same.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            a,
            pool.install(|| gather(&augment, &pixels, SHAPE, &indices, 7))
        );
    }

    #[test]
    fn off_leaves_the_images_as_they_are() {
        let pixels = images(4);
        let batch = gather(&Augment::default(), &pixels, SHAPE, &[2, 0], 1);
        let len = SHAPE.pixels();
        assert_eq!(&batch[..len], &pixels[2 * len..3 * len]);
        assert_eq!(&batch[len..], &pixels[..len]);
    }

    #[test]
    fn a_shift_moves_pixels_and_fills_with_background_without_wrapping() {
        let augment = Augment {
            shift: 2,
            ..Augment::default()
        };
        let pixels = images(1);
        let (h, w) = (SHAPE.height as isize, SHAPE.width as isize);
        let mut shifts = std::collections::HashSet::new();
        for seed in 0..200 {
            let out = gather(&augment, &pixels, SHAPE, &[0], seed);
            // The one shift that explains every pixel: moved, or background where the source
            // is outside the image.
            let found = (-2..=2)
                .flat_map(|dy| (-2..=2).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| {
                    (0..h).all(|y| {
                        (0..w).all(|x| {
                            let (sy, sx) = (y + dy, x + dx);
                            let expected = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                                pixels[(sy * w + sx) as usize]
                            } else {
                                0
                            };
                            out[(y * w + x) as usize] == expected
                        })
                    })
                });
            shifts.insert(found.expect("every output is a shift of the image"));
        }
        assert_eq!(shifts.len(), 25, "every shift in -2..=2 x -2..=2 is drawn");
    }

    #[test]
    fn a_flip_mirrors_rows_and_erasing_blanks_one_rectangle() {
        let pixels = images(1);
        let w = SHAPE.width;
        let flip = Augment {
            flip: true,
            ..Augment::default()
        };
        let outputs: Vec<Vec<u8>> = (0..50)
            .map(|seed| gather(&flip, &pixels, SHAPE, &[0], seed))
            .collect();
        let mirrored: Vec<u8> = pixels
            .chunks(w)
            .flat_map(|row| row.iter().rev().copied())
            .collect();
        assert!(outputs.iter().all(|o| *o == pixels || *o == mirrored));
        assert!(outputs.contains(&pixels) && outputs.contains(&mirrored));

        let erase = Augment {
            erase: 1.0,
            ..Augment::default()
        };
        let mut erased_any = false;
        for seed in 0..50 {
            let out = gather(&erase, &pixels, SHAPE, &[0], seed);
            let blank: Vec<(usize, usize)> = (0..out.len())
                .filter(|&p| out[p] == 0)
                .map(|p| (p / w, p % w))
                .collect();
            if blank.is_empty() {
                continue;
            }
            erased_any = true;
            let rows = blank.iter().map(|p| p.0);
            let cols = blank.iter().map(|p| p.1);
            let (top, bottom) = (rows.clone().min().unwrap(), rows.max().unwrap());
            let (left, right) = (cols.clone().min().unwrap(), cols.max().unwrap());
            assert_eq!(
                blank.len(),
                (bottom - top + 1) * (right - left + 1),
                "seed {seed}: the blanked pixels form one rectangle"
            );
            // A quarter of the image, give or take the rounding of its sides.
            assert!(
                blank.len() * 2 <= SHAPE.pixels(),
                "{} pixels erased",
                blank.len()
            );
            for p in 0..out.len() {
                assert!(out[p] == 0 || out[p] == pixels[p], "other pixels unchanged");
            }
        }
        assert!(erased_any);
    }
}
