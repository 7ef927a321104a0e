//! Pure builders: everything the controllers decide without I/O. AWS names, ARNs and URLs ([`names`]),
//! policy documents ([`policy`]), status conditions ([`conditions`]), credential Secret data
//! ([`secret`]). Tested without any server.

pub mod conditions;
pub mod names;
pub mod policy;
pub mod secret;
