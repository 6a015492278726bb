//! The thin part that makes syscalls: file descriptors resolved inside the root, loop devices and
//! the new mount API. Everything above it decides; everything here only does, with context on
//! every error.

pub mod clock;
pub mod devmapper;
pub mod fs;
pub mod identity;
pub mod loopdev;
pub mod mount;
pub mod staging;
