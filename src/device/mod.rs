//! Where the stages compute: the backend and device choice, the GPU kernel cache kept between
//! processes, the allocator. Uses nothing else of the crate: everything above takes a `Device`.

pub mod allocator;
pub mod backend;
pub mod gpu_cache;
