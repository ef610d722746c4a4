//! The bundled providers, one per file.

pub(crate) mod faulty;
#[cfg(feature = "file")]
pub(crate) mod file;
pub(crate) mod memory;
