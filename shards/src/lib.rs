//! Thread-per-core substrate.
#![warn(missing_docs)]
