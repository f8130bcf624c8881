//! Memory: physical frames, the kernel heap, the image's page permissions,
//! the app's address space, and checked access to app memory from system calls.
pub mod frame;
pub mod heap;
pub mod image;
pub mod user;
pub mod vm;
