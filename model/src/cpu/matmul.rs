//! Matrix products on f32 slices through the gemm crate (the one Burn's Flex backend uses).

/// A row-major matrix, or the transpose of one.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Matrix<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix size");
        Self {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `dst = lhs x rhs`, or `dst += lhs x rhs` when `accumulate`, on this thread or spread over
/// the rayon pool's threads when the product is large enough to gain from it; `dst` is
/// row-major.
pub(super) fn matmul_parallel(dst: &mut [f32], lhs: Matrix, rhs: Matrix, accumulate: bool) {
    // Splitting pays from a few million multiply-adds: with the MLP's 64x784x256 products
    // (12.8 million) on two threads it trains at 93,000-104,000 samples/s, on one at
    // 84,000-90,000 (Fashion-MNIST, 2 cores of a Zen 4); gemm splits without changing a bit.
    let parallelism = if lhs.rows * lhs.cols * rhs.cols >= 1 << 22 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    multiply(dst, lhs, rhs, accumulate, parallelism);
}

/// `dst = lhs x rhs`, or `dst += lhs x rhs` when `accumulate`, with gemm's `parallelism`; `dst`
/// is row-major. The one call into gemm, which the kernels and the `gemm_peak` benchmark share.
pub fn multiply(
    dst: &mut [f32],
    lhs: Matrix,
    rhs: Matrix,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimensions differ");
    assert_eq!(dst.len(), lhs.rows * rhs.cols, "matmul: destination size");
    // SAFETY: the asserts above and `Matrix::new` bound every index gemm computes from these
    // sizes and strides within the three slices; `dst` is borrowed mutably, so nothing aliases it.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst.as_mut_ptr(),
            1,
            rhs.cols as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr(),
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
