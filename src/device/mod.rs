//! Where the stages compute: the backend and device choice, the CPU's threads, the GPU kernel
//! cache kept between processes, the allocator. Uses nothing else of the crate: everything above takes a `Device`.

pub mod allocator;
pub mod backend;
pub mod cpu;
pub mod gpu_cache;
