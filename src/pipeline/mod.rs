//! Sponsor transaction sending.
