//! A local environment that needs no cluster and no AWS account: the project's in-memory Kubernetes API
//! server and a moto (AWS emulator) process. Used by the integration tests and by the quickstart.

pub mod apiserver;
pub mod moto;
pub mod quickstart;
