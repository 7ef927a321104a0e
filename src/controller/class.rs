//! The class of a Bucket, as the controllers decide it: from the cluster's BucketClasses (a shared watch)
//! and, when the class selects namespaces, the Bucket's namespace labels (read from the API server).

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use super::{Context, Error};
use crate::api::BucketSpec;
use crate::desired::class::{self, Class, Refusal};

/// The class of a Bucket with `spec` in `namespace`, or why it cannot have one (`Ok(Err(_))`); `Err` only
/// when the namespace could not be read.
pub async fn class_of(
    ctx: &Context,
    spec: &BucketSpec,
    namespace: &str,
) -> Result<Result<Class, Refusal>, Error> {
    let classes = ctx.classes();
    let class = match class::choose(spec, &classes, &ctx.settings.region) {
        Ok(class) => class,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if class.spec.namespace_selector.is_some() {
        let found = Api::<Namespace>::all(ctx.client.clone()).get_metadata(namespace).await?;
        let labels = found.metadata.labels.unwrap_or_default();
        if let Err(refusal) = class::check_namespace(&class, namespace, &labels) {
            return Ok(Err(refusal));
        }
    }
    Ok(Ok(class))
}
