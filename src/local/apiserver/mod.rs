//! placeholder: replaced by the in-memory API server
