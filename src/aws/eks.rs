//! EKS Pod Identity associations: which IAM role the EKS Pod Identity agent gives the pods of one
//! ServiceAccount. EKS allows one association per (cluster, namespace, ServiceAccount); the controller
//! makes it for the role of a keyless binding's ServiceAccount and deletes it with that role.

use aws_sdk_eks::Client;

use super::{AwsError, CallStats, ErrorKind, call, optional};

const EKS: &str = "eks";

/// A Pod Identity association as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub id: String,
    /// The role the pods get.
    pub role_arn: String,
}

/// The association operations on the ServiceAccount `namespace/service_account` of `cluster`.
pub struct AssociationOps<'a> {
    pub client: Client,
    pub stats: &'a CallStats,
    pub cluster: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
}

impl AssociationOps<'_> {
    /// The ServiceAccount's association, or `None` when it has none (EKS allows one).
    pub async fn get(&self) -> Result<Option<Association>, AwsError> {
        let list = self
            .client
            .list_pod_identity_associations()
            .cluster_name(self.cluster)
            .namespace(self.namespace)
            .service_account(self.service_account)
            .send();
        let listed = call(self.stats, EKS, "ListPodIdentityAssociations", list).await?;
        // The filter is EKS's; the summaries are checked again, so that a wider answer is never taken
        // for this ServiceAccount's.
        let Some(id) = listed
            .associations()
            .iter()
            .find(|a| {
                a.namespace() == Some(self.namespace) && a.service_account() == Some(self.service_account)
            })
            .and_then(|a| a.association_id())
        else {
            return Ok(None);
        };
        let describe = self
            .client
            .describe_pod_identity_association()
            .cluster_name(self.cluster)
            .association_id(id)
            .send();
        let described = optional(call(self.stats, EKS, "DescribePodIdentityAssociation", describe).await)?;
        Ok(described.and_then(|d| d.association).map(|a| Association {
            id: a.association_id().unwrap_or(id).to_owned(),
            role_arn: a.role_arn().unwrap_or_default().to_owned(),
        }))
    }

    /// Associates the ServiceAccount with `role_arn`, tagged with `tags`; returns the association's id.
    pub async fn create(&self, role_arn: &str, tags: &[(String, String)]) -> Result<String, AwsError> {
        let create = self
            .client
            .create_pod_identity_association()
            .cluster_name(self.cluster)
            .namespace(self.namespace)
            .service_account(self.service_account)
            .role_arn(role_arn)
            .set_tags(Some(tags.iter().cloned().collect()))
            .send();
        let output = call(self.stats, EKS, "CreatePodIdentityAssociation", create).await?;
        output.association.and_then(|a| a.association_id).ok_or_else(|| AwsError {
            service: EKS,
            operation: "CreatePodIdentityAssociation",
            kind: ErrorKind::Invalid,
            code: None,
            status: None,
            message: "no association in the response".to_owned(),
        })
    }

    /// Points association `id` at `role_arn`.
    pub async fn set_role(&self, id: &str, role_arn: &str) -> Result<(), AwsError> {
        let update = self
            .client
            .update_pod_identity_association()
            .cluster_name(self.cluster)
            .association_id(id)
            .role_arn(role_arn)
            .send();
        call(self.stats, EKS, "UpdatePodIdentityAssociation", update).await?;
        Ok(())
    }

    /// Deletes the ServiceAccount's association if it gives `role_arn` (and no other role); says whether
    /// it did.
    pub async fn delete_if_for(&self, role_arn: &str) -> Result<bool, AwsError> {
        match self.get().await? {
            Some(association) if association.role_arn == role_arn => {
                self.delete(&association.id).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes association `id`; one already gone is a success.
    pub async fn delete(&self, id: &str) -> Result<(), AwsError> {
        let delete = self
            .client
            .delete_pod_identity_association()
            .cluster_name(self.cluster)
            .association_id(id)
            .send();
        optional(call(self.stats, EKS, "DeletePodIdentityAssociation", delete).await)?;
        Ok(())
    }
}
