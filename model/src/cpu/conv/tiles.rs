//! The convolution's products, read from the padded images and gradients where they lie
//! (implicit GEMM) instead of from a copy unfolded for gemm: unfolding, gemm's packing and the
//! copies between them took a third of a training step. A tile of accumulators, one vector
//! of channels by up to 14 positions (or taps), stays in registers for a whole product.
//!
//! A product has taps `t` (an input channel and kernel position, or an output channel and
//! kernel position for the input gradient) and positions `q`. The operand at `(t, q)` is
//! `src[taps[t] + q]`, broadcast to every lane; each tap's weights are a row of `weights`,
//! one lane a channel.

use super::super::isa::InstructionSet;
#[cfg(target_arch = "x86_64")]
use super::super::lanes::{Avx2, Avx512};
use super::super::lanes::{Lanes, Portable};

/// Channels are padded to a multiple of this in the weights and gradients the products read:
/// the widest block of channels a tile computes (two AVX-512 vectors).
pub(super) const BLOCK: usize = 32;
/// Positions a product may read past its last one, which a tile computes and drops: buffers
/// leave this much room.
pub(super) const SLACK: usize = 16;

/// A product's broadcast operand and weights.
pub(super) struct Operand<'a> {
    pub src: &'a [f32],
    /// Where each tap starts in `src`.
    pub taps: &'a [usize],
    /// `[taps, channels]`, channels a multiple of [`BLOCK`].
    pub weights: &'a [f32],
}

impl Operand<'_> {
    fn channels(&self) -> usize {
        self.weights.len() / self.taps.len()
    }

    /// Panics unless every position up to `positions` (plus [`SLACK`]) of every tap lies in
    /// `src`, which the unchecked reads rely on.
    fn check(&self, positions: usize) {
        let channels = self.channels();
        assert!(
            channels.is_multiple_of(BLOCK) && self.weights.len() == self.taps.len() * channels,
            "conv: weights of {} taps by a multiple of {BLOCK} channels",
            self.taps.len()
        );
        let last = self.taps.iter().max().copied().unwrap_or(0) + positions + SLACK;
        assert!(
            last < self.src.len(),
            "conv: a product reads past its operand"
        );
    }
}

/// Output positions laid out `stride` to a row, of which the first `width` are real (the
/// rest read across a row's end and are dropped).
#[derive(Clone, Copy)]
pub(super) struct Grid {
    pub positions: usize,
    pub stride: usize,
    pub width: usize,
}

impl Grid {
    fn rows(&self) -> usize {
        self.positions / self.stride
    }

    /// Positions a row computes in tiles of `p` laid along it.
    fn row_tiles_cost(&self, p: usize) -> usize {
        self.width.div_ceil(p) * p
    }

    /// Positions a row costs in tiles of `p`: tiles along each row when they fit it better
    /// than the row's stride (14 positions on 14x14 and 28x28 images, 7 on 7x7), else across
    /// the rows, the positions past each row's end computed and dropped.
    fn tile_cost(&self, p: usize) -> usize {
        self.row_tiles_cost(p).min(self.stride)
    }

    /// Where each tile of `p` positions starts and how many of its positions it keeps.
    fn tiles(&self, p: usize) -> Vec<(usize, usize)> {
        if self.row_tiles_cost(p) <= self.stride {
            let row = (0..self.width).step_by(p);
            (0..self.rows())
                .flat_map(|y| {
                    row.clone()
                        .map(move |x| (y * self.stride + x, p.min(self.width - x)))
                })
                .collect()
        } else {
            let all = (0..self.positions).step_by(p);
            all.map(|q| (q, p.min(self.positions - q))).collect()
        }
    }
}

/// `[rows, row_stride]`: row `r` of an output at position `(y, x)` goes to
/// `data[r * row_stride + y * width + x]`.
pub(super) struct Output<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub row_stride: usize,
}

/// `out(r, q) = bias[r] + Σ_t operand(t, q) · weights[t][r]` for the real positions of
/// `grid` and the rows `r < out.rows`.
pub(super) fn outputs(
    isa: InstructionSet,
    operand: &Operand,
    bias: Option<&[f32]>,
    grid: Grid,
    out: &mut Output,
) {
    operand.check(grid.positions);
    let rows = grid.rows();
    assert!(
        out.rows <= operand.channels()
            && bias.is_none_or(|bias| bias.len() == operand.channels())
            && (out.rows == 0
                || (out.rows - 1) * out.row_stride + rows * grid.width <= out.data.len()),
        "conv: output sizes"
    );
    assert!(isa <= InstructionSet::detected(), "{isa} is not available");
    // SAFETY: `check` and the asserts above bound every read and write; the CPU has `isa`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx512 => outputs_avx512(operand, bias, grid, out),
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx2 => outputs_avx2(operand, bias, grid, out),
            _ => output_tiles::<Portable, 6, 2>(operand, bias, grid, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn outputs_avx512(operand: &Operand, bias: Option<&[f32]>, grid: Grid, out: &mut Output) {
    // 28 of the 32 registers accumulate, or 14 where tiles of 7 fit the rows better (7x7
    // images).
    // SAFETY: the caller's.
    unsafe {
        if grid.tile_cost(7) < grid.tile_cost(14) {
            output_tiles::<Avx512, 7, 2>(operand, bias, grid, out)
        } else {
            output_tiles::<Avx512, 14, 2>(operand, bias, grid, out)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_avx2(operand: &Operand, bias: Option<&[f32]>, grid: Grid, out: &mut Output) {
    // 12 of the 16 registers accumulate.
    // SAFETY: the caller's.
    unsafe { output_tiles::<Avx2, 6, 2>(operand, bias, grid, out) }
}

/// [`outputs`] in tiles of `P` positions by `N` vectors of channels.
#[inline(always)]
unsafe fn output_tiles<V: Lanes, const P: usize, const N: usize>(
    operand: &Operand,
    bias: Option<&[f32]>,
    grid: Grid,
    out: &mut Output,
) {
    let (width, channels) = (V::WIDTH * N, operand.channels());
    let mut tile = [[0.0f32; BLOCK]; P];
    let tiles = grid.tiles(P);
    for first in (0..out.rows).step_by(width) {
        // SAFETY: the caller's (the CPU has `V`'s features).
        let mut start = [unsafe { V::zero() }; N];
        if let Some(bias) = bias {
            for (v, lanes) in start.iter_mut().enumerate() {
                // SAFETY: `first + width <= channels = bias.len()`.
                *lanes = unsafe { V::load(bias.as_ptr().add(first + v * V::WIDTH)) };
            }
        }
        let rows = out.rows.min(first + width) - first;
        for &(q0, kept) in &tiles {
            let mut acc = [start; P];
            // SAFETY (this block): `Operand::check` bounds the reads of the positions up to
            // `q0 + P`, and the weights' `first..first + width` are within a row.
            unsafe {
                let src = operand.src.as_ptr().add(q0);
                let mut weights = operand.weights.as_ptr().add(first);
                for &tap in operand.taps {
                    let mut row = [V::zero(); N];
                    for (v, lanes) in row.iter_mut().enumerate() {
                        *lanes = V::load(weights.add(v * V::WIDTH));
                    }
                    let values = src.add(tap);
                    for (m, acc) in acc.iter_mut().enumerate() {
                        let value = V::splat(values.add(m));
                        for (acc, &row) in acc.iter_mut().zip(&row) {
                            *acc = acc.mul_add(value, row);
                        }
                    }
                    weights = weights.add(channels);
                }
            }
            // Through memory: reading the accumulators in place of a copy kept the compiler
            // from holding them in registers in the loop above.
            for (acc, tile) in acc.iter().zip(&mut tile) {
                for (v, lanes) in acc.iter().enumerate() {
                    // SAFETY: a row of `tile` holds `N` vectors.
                    unsafe { lanes.store(tile.as_mut_ptr().add(v * V::WIDTH)) };
                }
            }
            // SAFETY: as above.
            unsafe { write_tile::<V, P, N>(&tile, q0, kept, grid, first, rows, out) };
        }
    }
}

/// A tile's real positions into the rows `first..first + rows` of `out`, a run along a row
/// at a time: `tile[m]` holds the rows' values for position `q0 + m`, `N` vectors of them.
#[inline(always)]
unsafe fn write_tile<V: Lanes, const P: usize, const N: usize>(
    tile: &[[f32; BLOCK]; P],
    q0: usize,
    kept: usize,
    grid: Grid,
    first: usize,
    rows: usize,
    out: &mut Output,
) {
    let mut m = 0;
    while m < kept {
        let (y, x) = ((q0 + m) / grid.stride, (q0 + m) % grid.stride);
        // Real positions from here to the row's end (none past it).
        let run = grid.width.saturating_sub(x).min(kept - m);
        let at = first * out.row_stride + y * grid.width + x;
        let blocks = (0..N).map(|v| (v, rows.saturating_sub(v * V::WIDTH).min(V::WIDTH)));
        for (v, lanes) in blocks.filter(|&(_, lanes)| run > 0 && lanes > 0) {
            // SAFETY (this block): `outputs` asserts that every real position of every row lies
            // in `out.data`; the CPU has `V`'s features (the caller's).
            unsafe {
                let columns: [V; P] =
                    std::array::from_fn(|i| V::load(tile[i].as_ptr().add(v * V::WIDTH)));
                let to = out
                    .data
                    .as_mut_ptr()
                    .add(at + v * V::WIDTH * out.row_stride);
                V::store_transposed(&columns, m, run, lanes, to, out.row_stride);
            }
        }
        m += (grid.stride - x).min(kept - m);
    }
}

/// One image's operand and output gradient for [`tap_sums`].
pub(super) struct TapImage<'a> {
    /// The padded image: tap `t` at position `q` is `src[taps[t] + q]`.
    pub src: &'a [f32],
    /// `[positions, channels]`: the output gradient at position `q` is row `shift + q`.
    pub grads: &'a [f32],
}

/// `sums[t][r] += Σ_images Σ_q src(t, q) · grads[shift + q][r]` over the real positions `q`
/// of `grid`: the weight gradient, `sums` `[taps, channels]`.
pub(super) fn tap_sums(
    isa: InstructionSet,
    images: &[TapImage],
    taps: &[usize],
    grid: Grid,
    shift: usize,
    sums: &mut [f32],
) {
    let channels = sums.len() / taps.len().max(1);
    assert!(
        channels.is_multiple_of(BLOCK) && sums.len() == taps.len() * channels,
        "conv: sums of {} taps by a multiple of {BLOCK} channels",
        taps.len()
    );
    let positions = grid.positions;
    let reach = taps.iter().max().copied().unwrap_or(0) + positions;
    for image in images {
        assert!(
            reach <= image.src.len() && (shift + positions) * channels <= image.grads.len(),
            "conv: a weight gradient reads past its image"
        );
    }
    assert!(isa <= InstructionSet::detected(), "{isa} is not available");
    let sums = Sums {
        taps,
        grid,
        shift,
        channels,
        sums,
    };
    // SAFETY: the asserts above bound every read and write; the CPU has `isa`.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx512 => tap_sums_avx512(images, sums),
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx2 => tap_sums_avx2(images, sums),
            _ => tap_tiles::<Portable, 6, 2>(images, sums),
        }
    }
}

/// [`tap_sums`]'s sizes and destination.
struct Sums<'a, 'b> {
    taps: &'a [usize],
    grid: Grid,
    shift: usize,
    channels: usize,
    sums: &'b mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tap_sums_avx512(images: &[TapImage], sums: Sums) {
    // SAFETY: the caller's.
    unsafe { tap_tiles::<Avx512, 14, 2>(images, sums) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tap_sums_avx2(images: &[TapImage], sums: Sums) {
    // SAFETY: the caller's.
    unsafe { tap_tiles::<Avx2, 6, 2>(images, sums) }
}

/// [`tap_sums`] in tiles of `T` taps by `N` vectors of channels, each summed over every real
/// position of every image before it is added to `sums`.
#[inline(always)]
unsafe fn tap_tiles<V: Lanes, const T: usize, const N: usize>(images: &[TapImage], s: Sums) {
    let width = V::WIDTH * N;
    let taps = s.taps.len();
    for first in (0..s.channels).step_by(width) {
        for t0 in (0..taps).step_by(T) {
            // A last tile of fewer taps repeats its last one and drops it.
            let real = T.min(taps - t0);
            let mut starts = [0usize; T];
            for (m, start) in starts.iter_mut().enumerate() {
                *start = s.taps[t0 + m.min(real - 1)];
            }
            // SAFETY: as above.
            let mut acc = [[unsafe { V::zero() }; N]; T];
            // SAFETY (this block): `tap_sums` bounds the reads of every tap and position and
            // the writes of the real taps' channels `first..first + width`.
            unsafe {
                for image in images {
                    let src = image.src.as_ptr();
                    for y in 0..s.grid.rows() {
                        let begin = y * s.grid.stride;
                        let at = (s.shift + begin) * s.channels + first;
                        let mut grads = image.grads.as_ptr().add(at);
                        for q in begin..begin + s.grid.width {
                            let mut row = [V::zero(); N];
                            for (v, lanes) in row.iter_mut().enumerate() {
                                *lanes = V::load(grads.add(v * V::WIDTH));
                            }
                            for (acc, &start) in acc.iter_mut().zip(&starts) {
                                let value = V::splat(src.add(start + q));
                                for (acc, &row) in acc.iter_mut().zip(&row) {
                                    *acc = acc.mul_add(value, row);
                                }
                            }
                            grads = grads.add(s.channels);
                        }
                    }
                }
                for (m, acc) in acc.iter().enumerate().take(real) {
                    for (v, lanes) in acc.iter().enumerate() {
                        let at = s
                            .sums
                            .as_mut_ptr()
                            .add((t0 + m) * s.channels + first + v * V::WIDTH);
                        V::load(at).add(*lanes).store(at);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of ordinary size, different at every index.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 + seed * 11) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    #[test]
    fn outputs_agree_with_plain_sums_on_every_instruction_set() {
        // 40 taps (not a multiple of a tile's), 20 of 32 channels real, and grids of 3 rows
        // of 9 positions (7 real), 2 rows of 16 (14 real) and 3 of 12 (10 real): tiles along
        // the rows, of 7 and of 14 positions, and tiles across them, which no tile size
        // divides.
        let (channels, rows, taps) = (BLOCK, 20, 40);
        for (rows_of_grid, stride, width) in [(3, 9, 7), (2, 16, 14), (3, 12, 10)] {
            let grid = Grid {
                positions: rows_of_grid * stride,
                stride,
                width,
            };
            let starts: Vec<usize> = (0..taps).map(|t| t * 3 % 50).collect();
            let src = values(50 + grid.positions + SLACK + 1, 1);
            let weights = values(taps * channels, 2);
            let bias = values(channels, 3);
            let operand = Operand {
                src: &src,
                taps: &starts,
                weights: &weights,
            };
            let real = rows_of_grid * width;
            let row_stride = real + 5;
            let mut fused = None;
            for isa in InstructionSet::available() {
                let mut data = vec![f32::NAN; rows * row_stride];
                let mut out = Output {
                    data: &mut data,
                    rows,
                    row_stride,
                };
                outputs(isa, &operand, Some(&bias), grid, &mut out);
                for r in 0..rows {
                    for q in (0..grid.positions).filter(|q| q % stride < width) {
                        let exact: f64 = f64::from(bias[r])
                            + (0..taps)
                                .map(|t| {
                                    f64::from(src[starts[t] + q])
                                        * f64::from(weights[t * channels + r])
                                })
                                .sum::<f64>();
                        let got = data[r * row_stride + q / stride * width + q % stride];
                        assert!(
                            (f64::from(got) - exact).abs() < 1e-4,
                            "{isa}, grid of {stride}: {r}, {q}: {got} vs {exact}"
                        );
                    }
                    // What lies between rows is not written.
                    assert!(
                        data[r * row_stride + real..(r + 1) * row_stride]
                            .iter()
                            .all(|v| v.is_nan())
                    );
                }
                same_bits_where_fused(isa, &mut fused, data);
            }
        }
    }

    /// Asserts that the instruction sets with fused multiply-adds, which add in the same
    /// order, give the same bits: `first` keeps the first one's `result`.
    fn same_bits_where_fused(isa: InstructionSet, first: &mut Option<Vec<f32>>, result: Vec<f32>) {
        if isa < InstructionSet::Avx2 {
            return;
        }
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        match first {
            Some(first) => assert_eq!(bits(first), bits(&result), "{isa}"),
            None => *first = Some(result),
        }
    }

    #[test]
    fn tap_sums_agree_with_plain_sums_on_every_instruction_set() {
        // Rows of 6 real positions of 8.
        let (channels, taps, shift) = (2 * BLOCK, 17, 3);
        let grid = Grid {
            positions: 24,
            stride: 8,
            width: 6,
        };
        let positions = grid.positions;
        let starts: Vec<usize> = (0..taps).map(|t| t * 5 % 31).collect();
        let images: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
            .map(|i| {
                (
                    values(31 + positions, 4 + i),
                    values((shift + positions) * channels, 7 + i),
                )
            })
            .collect();
        let tap_images: Vec<TapImage> = images
            .iter()
            .map(|(src, grads)| TapImage { src, grads })
            .collect();
        let before = values(taps * channels, 9);
        let mut fused = None;
        for isa in InstructionSet::available() {
            let mut sums = before.clone();
            tap_sums(isa, &tap_images, &starts, grid, shift, &mut sums);
            for t in 0..taps {
                for r in 0..channels {
                    let start = starts[t];
                    let exact: f64 = f64::from(before[t * channels + r])
                        + images
                            .iter()
                            .flat_map(|(src, grads)| {
                                (0..positions).filter(|q| q % grid.stride < grid.width).map(
                                    move |q| {
                                        f64::from(src[start + q])
                                            * f64::from(grads[(shift + q) * channels + r])
                                    },
                                )
                            })
                            .sum::<f64>();
                    let got = sums[t * channels + r];
                    assert!(
                        (f64::from(got) - exact).abs() < 1e-4,
                        "{isa}: {t}, {r}: {got} vs {exact}"
                    );
                }
            }
            same_bits_where_fused(isa, &mut fused, sums);
        }
    }
}
