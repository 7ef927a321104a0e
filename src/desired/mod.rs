//! The desired state, computed without I/O: what the controllers want AWS and Kubernetes to hold. AWS
//! names, tags, ARNs and URLs ([`names`]), IAM and bucket policy documents ([`policy`]: the read-only and
//! read-write user policies are there), status conditions ([`conditions`]), credential Secret data
//! ([`secret`]), and what else a user gets attached, with the record of what the controller attached
//! ([`attachments`]), when keys rotate ([`rotation`]), and what tenants may read of an error
//! ([`redact`]), and the role of a ServiceAccount for keyless bindings ([`keyless`]). The controllers
//! compare it with what they read and write only the difference; all of it is tested without any server.

pub mod attachments;
pub mod class;
pub mod conditions;
pub mod keyless;
pub mod names;
pub mod policy;
pub mod redact;
pub mod rotation;
pub mod secret;
