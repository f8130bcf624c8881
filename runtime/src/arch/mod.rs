//! Architecture support. Only x86_64 today; the folder tells the room.
pub mod x86_64;
