//! Memory: physical frames, the kernel heap, the app's address space, and
//! checked access to app memory from system calls.
pub mod frame;
pub mod heap;
pub mod user;
pub mod vm;
