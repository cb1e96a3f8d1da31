//! The large outputs of a step, each chunk zeroed by the task that writes it, just before it
//! does: the zeros land in that core's cache. Zeroing a whole output first, in a pass of its
//! own, streamed it through memory once more: 5% of a fashion-best training step.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

/// `len` values not written yet.
pub(super) struct Fresh<T> {
    values: Vec<T>,
    len: usize,
    /// How many values the chunks handed out so far zeroed.
    zeroed: AtomicUsize,
}

impl<T: Copy + Default + Send + Sync> Fresh<T> {
    pub fn new(len: usize) -> Self {
        Self {
            values: Vec::with_capacity(len),
            len,
            zeroed: AtomicUsize::new(0),
        }
    }

    /// The values in chunks of `chunk` (the last may be shorter), each zeroed as a task takes
    /// it.
    pub fn par_chunks_mut(
        &mut self,
        chunk: usize,
    ) -> impl IndexedParallelIterator<Item = &mut [T]> + '_ {
        let zeroed = &self.zeroed;
        self.values.spare_capacity_mut()[..self.len]
            .par_chunks_mut(chunk.max(1))
            .map(move |values| {
                values.fill(MaybeUninit::new(T::default()));
                zeroed.fetch_add(values.len(), Ordering::Relaxed);
                // SAFETY: every value of `values` was written just above.
                unsafe { &mut *(values as *mut [MaybeUninit<T>] as *mut [T]) }
            })
    }

    /// The values, once [`Fresh::par_chunks_mut`] has handed out every chunk once.
    pub fn into_vec(self) -> Vec<T> {
        let Self {
            mut values,
            len,
            zeroed,
        } = self;
        assert_eq!(
            zeroed.into_inner(),
            len,
            "every chunk of an output is written once"
        );
        // SAFETY: the chunks handed out cover the first `len` values, each zeroed.
        unsafe { values.set_len(len) };
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_what_its_chunk_wrote_or_zero() {
        let mut fresh = Fresh::<f32>::new(10);
        fresh
            .par_chunks_mut(4)
            .enumerate()
            .for_each(|(i, chunk)| chunk[0] = i as f32 + 1.0);
        let expected = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0];
        assert_eq!(fresh.into_vec(), expected);
    }

    #[test]
    #[should_panic(expected = "every chunk of an output is written once")]
    fn chunks_not_taken_are_caught() {
        let mut fresh = Fresh::<f32>::new(10);
        fresh
            .par_chunks_mut(4)
            .take(2)
            .for_each(|chunk| chunk[0] = 1.0);
        fresh.into_vec();
    }
}
