//! Signed evidence manifests.
