//! Keyless bindings: the IAM role of a ServiceAccount, who may assume it (IRSA's web identity or EKS Pod
//! Identity), and the names of what the controller puts on it. Pure: tested without any server.

use serde_json::{Value, json};

/// The ServiceAccount annotation IRSA's webhook reads: the role the pods of that ServiceAccount assume.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// The audience of the ServiceAccount tokens IRSA exchanges with STS.
pub const AUDIENCE: &str = "sts.amazonaws.com";

/// How the pods of a ServiceAccount get the role's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setup {
    /// IAM Roles for Service Accounts: the pod's projected token is exchanged with
    /// `sts:AssumeRoleWithWebIdentity`, trusted through the cluster's IAM OIDC provider.
    Irsa {
        /// `arn:<partition>:iam::<account>:oidc-provider/<issuer>`.
        provider_arn: String,
        /// The issuer without `https://`, as IAM condition keys spell it (`oidc.eks.<region>.amazonaws.com/id/<id>`).
        issuer: String,
    },
    /// EKS Pod Identity: the EKS agent assumes the role for pods of an associated ServiceAccount.
    PodIdentity {
        /// The EKS cluster's name.
        cluster: String,
    },
}

impl Setup {
    /// IRSA from the OIDC provider's ARN; `None` for anything else.
    pub fn irsa(provider_arn: &str) -> Option<Self> {
        let (prefix, issuer) = provider_arn.split_once(":oidc-provider/")?;
        let mut parts = prefix.split(':');
        let valid = parts.next() == Some("arn")
            && parts.next().is_some_and(|p| p.starts_with("aws"))
            && parts.next() == Some("iam")
            && parts.next() == Some("")
            && parts.next().is_some_and(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
            && parts.next().is_none()
            && !issuer.is_empty()
            && !issuer.contains("://")
            && issuer.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| Setup::Irsa { provider_arn: provider_arn.to_owned(), issuer: issuer.to_owned() })
    }

    /// Names the setup for messages and `--help`.
    pub fn describe(&self) -> String {
        match self {
            Setup::Irsa { issuer, .. } => format!("IRSA through the OIDC provider {issuer}"),
            Setup::PodIdentity { cluster } => format!("EKS Pod Identity on cluster {cluster}"),
        }
    }
}

/// The trust policy of the role of ServiceAccount `namespace/name`: that ServiceAccount, and nothing else,
/// may assume it.
pub fn trust_policy(setup: &Setup, account: &str, namespace: &str, name: &str) -> Value {
    let statement = match setup {
        Setup::Irsa { provider_arn, issuer } => json!({
            "Sid": "ServiceAccount",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{issuer}:sub"): format!("system:serviceaccount:{namespace}:{name}"),
                format!("{issuer}:aud"): AUDIENCE,
            }},
        }),
        // The EKS agent tags the session with the pod's cluster, namespace and ServiceAccount: the
        // conditions hold the role to exactly this one, whatever association names it.
        Setup::PodIdentity { cluster } => json!({
            "Sid": "ServiceAccount",
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": {
                "aws:SourceAccount": account,
                "aws:RequestTag/eks-cluster-name": cluster,
                "aws:RequestTag/kubernetes-namespace": namespace,
                "aws:RequestTag/kubernetes-service-account": name,
            }},
        }),
    };
    json!({"Version": "2012-10-17", "Statement": [statement]})
}

/// The name of a binding's inline policy on its ServiceAccount's role: from the binding's uid, so that each
/// binding of the ServiceAccount owns exactly one.
pub fn role_policy_name(binding_uid: &str) -> String {
    format!("binding-{binding_uid}")
}

/// The binding uid a role policy name was made from, if it is one of ours.
pub fn binding_of_policy(policy_name: &str) -> Option<&str> {
    policy_name.strip_prefix("binding-").filter(|uid| !uid.is_empty())
}

/// The ARN of role `name` under `path` in `account`, as CreateRole returns it.
pub fn role_arn(partition: &str, account: &str, path: &str, name: &str) -> String {
    format!("arn:{partition}:iam::{account}:role{path}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: &str = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

    #[test]
    fn irsa_takes_the_issuer_from_the_provider_arn_and_refuses_anything_else() {
        let setup = Setup::irsa(PROVIDER).expect("valid");
        assert_eq!(
            setup,
            Setup::Irsa {
                provider_arn: PROVIDER.to_owned(),
                issuer: "oidc.eks.eu-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE".to_owned()
            }
        );
        for bad in [
            "oidc.eks.eu-west-2.amazonaws.com/id/X",
            "arn:aws:iam::123456789012:role/x",
            "arn:aws:iam::1234:oidc-provider/issuer",
            "arn:aws:iam::123456789012:oidc-provider/",
            "arn:aws:iam::123456789012:oidc-provider/https://issuer",
            "arn:aws:s3::123456789012:oidc-provider/issuer",
        ] {
            assert_eq!(Setup::irsa(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_irsa_trust_names_exactly_one_service_account_and_the_sts_audience() {
        let setup = Setup::irsa(PROVIDER).expect("valid");
        let trust = trust_policy(&setup, "123456789012", "team-a", "app");
        let statements = trust["Statement"].as_array().expect("statements");
        assert_eq!(statements.len(), 1);
        let s = &statements[0];
        assert_eq!(s["Principal"], json!({"Federated": PROVIDER}));
        assert_eq!(s["Action"], "sts:AssumeRoleWithWebIdentity");
        let issuer = "oidc.eks.eu-west-2.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";
        assert_eq!(
            s["Condition"],
            json!({"StringEquals": {
                format!("{issuer}:sub"): "system:serviceaccount:team-a:app",
                format!("{issuer}:aud"): "sts.amazonaws.com",
            }})
        );
    }

    #[test]
    fn the_pod_identity_trust_holds_the_session_to_the_cluster_namespace_and_service_account() {
        let setup = Setup::PodIdentity { cluster: "prod".to_owned() };
        let trust = trust_policy(&setup, "123456789012", "team-a", "app");
        let s = &trust["Statement"][0];
        assert_eq!(s["Principal"], json!({"Service": "pods.eks.amazonaws.com"}));
        assert_eq!(s["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
        let equals = &s["Condition"]["StringEquals"];
        assert_eq!(equals["aws:SourceAccount"], "123456789012");
        assert_eq!(equals["aws:RequestTag/eks-cluster-name"], "prod");
        assert_eq!(equals["aws:RequestTag/kubernetes-namespace"], "team-a");
        assert_eq!(equals["aws:RequestTag/kubernetes-service-account"], "app");
    }

    #[test]
    fn each_binding_owns_one_policy_name_on_the_role() {
        let name = role_policy_name("8d0c1f0e-1111-2222-3333-444455556666");
        assert_eq!(name, "binding-8d0c1f0e-1111-2222-3333-444455556666");
        assert!(name.len() <= 128, "IAM's limit on policy names");
        assert_eq!(binding_of_policy(&name), Some("8d0c1f0e-1111-2222-3333-444455556666"));
        assert_eq!(binding_of_policy("bucket-access"), None);
        assert_eq!(binding_of_policy("binding-"), None);
        assert_eq!(
            role_arn("aws", "123456789012", "/bucket-broker/", "r"),
            "arn:aws:iam::123456789012:role/bucket-broker/r"
        );
    }
}
