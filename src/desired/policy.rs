//! IAM and bucket policy documents.
//!
//! Access is granted by each credential's own inline user policy, never by editing the shared bucket
//! policy: bindings cannot race each other with read-modify-write, and the bucket policy's 20 KB limit does
//! not cap how many bindings a bucket can have. The bucket policy only carries bucket-wide rules: TLS only,
//! and anonymous reads of objects when the bucket is public.

use serde_json::{Value, json};

use crate::api::Permissions;
use crate::config::Cidr;

const VERSION: &str = "2012-10-17";

/// IAM's limit on the inline policies of one user, in characters, not counting whitespace.
pub const MAX_USER_INLINE_POLICY_SIZE: usize = 2048;
/// S3's limit on a bucket policy, in bytes.
pub const MAX_BUCKET_POLICY_SIZE: usize = 20 * 1024;

/// The size IAM counts for a policy document: its characters, whitespace excluded.
pub fn iam_size(document: &Value) -> usize {
    document.to_string().chars().filter(|c| !c.is_whitespace()).count()
}

/// What a read-only credential may do: the seed's read-only column, plus reading object tags.
pub const READ_ONLY_ACTIONS: &[&str] =
    &["s3:GetBucketLocation", "s3:ListBucket", "s3:GetBucketCORS", "s3:GetObject", "s3:GetObjectTagging"];

/// What a read-write credential may do on top of [`READ_ONLY_ACTIONS`]; multipart uploads included,
/// because every SDK switches to them for large objects.
pub const READ_WRITE_EXTRA_ACTIONS: &[&str] = &[
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:PutBucketCORS",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:ListBucketMultipartUploads",
];

/// The platform network credentials are confined to unless they allow external access.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformNetwork {
    pub cidrs: Vec<Cidr>,
    pub vpc_endpoints: Vec<String>,
    pub vpcs: Vec<String>,
}

impl PlatformNetwork {
    /// No CIDR and no VPC endpoint: there is nothing to restrict credentials to.
    pub fn is_configured(&self) -> bool {
        !self.cidrs.is_empty() || !self.vpc_endpoints.is_empty() || !self.vpcs.is_empty()
    }

    /// What counts as the platform network, in words (for the `NetworkRestricted` condition).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.cidrs.is_empty() {
            let cidrs: Vec<String> = self.cidrs.iter().map(Cidr::to_string).collect();
            parts.push(format!("addresses {}", cidrs.join(", ")));
        }
        if !self.vpc_endpoints.is_empty() {
            parts.push(format!("VPC endpoints {}", self.vpc_endpoints.join(", ")));
        }
        if !self.vpcs.is_empty() {
            parts.push(format!("VPCs {}", self.vpcs.join(", ")));
        }
        parts.join("; ")
    }
}

/// The bucket policy, or `None` when it would be empty (then it is deleted rather than written).
pub fn bucket_policy(bucket_arn: &str, public: bool, require_tls: bool) -> Option<Value> {
    let mut statements = Vec::new();
    if require_tls {
        statements.push(json!({
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, format!("{bucket_arn}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }));
    }
    if public {
        statements.push(json!({
            "Sid": "PublicReadObjects",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": format!("{bucket_arn}/*"),
        }));
    }
    (!statements.is_empty()).then(|| json!({"Version": VERSION, "Statement": statements}))
}

/// The `Sid`s of the bucket policy statements this controller writes. Only these are ours: any other
/// statement (an organisation's deny rules, a log delivery grant) is kept on every pass.
pub const BUCKET_POLICY_SIDS: &[&str] = &["DenyInsecureTransport", "PublicReadObjects"];

/// The bucket policy to hold: every statement of `current` that is not ours, then `ours`; `None` when
/// nothing is left (then the policy is deleted).
pub fn merge_bucket_policy(current: Option<&Value>, ours: Option<&Value>) -> Option<Value> {
    let statements = |policy: Option<&Value>| -> Vec<Value> {
        match policy.map(|p| &p["Statement"]) {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Object(one)) => vec![Value::Object(one.clone())],
            _ => Vec::new(),
        }
    };
    let is_ours =
        |statement: &Value| statement["Sid"].as_str().is_some_and(|sid| BUCKET_POLICY_SIDS.contains(&sid));
    let mut merged: Vec<Value> = statements(current).into_iter().filter(|s| !is_ours(s)).collect();
    merged.extend(statements(ours));
    if merged.is_empty() {
        return None;
    }
    let mut policy = current.or(ours).cloned().unwrap_or_else(|| json!({"Version": VERSION}));
    if !policy.is_object() {
        policy = json!({"Version": VERSION});
    }
    policy["Statement"] = Value::Array(merged);
    Some(policy)
}

/// The inline policy of a credential's IAM user: access to exactly one bucket of our account, and, unless
/// external access is allowed and a platform network is configured, a deny of every request from outside
/// that network.
///
/// The Allow holds only while the bucket is `account`'s (`s3:ResourceAccount`): bucket names are global,
/// and should ours be deleted and its name taken by another account, the key reaches nothing there.
pub fn user_policy(
    bucket_arn: &str,
    account: &str,
    permissions: Permissions,
    allow_external_access: bool,
    network: &PlatformNetwork,
    kms_key: Option<&str>,
) -> Value {
    let mut actions: Vec<&str> = READ_ONLY_ACTIONS.to_vec();
    if permissions == Permissions::ReadWrite {
        actions.extend_from_slice(READ_WRITE_EXTRA_ACTIONS);
    }
    let mut allow = json!({
        "Sid": "BucketAccess",
        "Effect": "Allow",
        "Action": actions,
        "Resource": [bucket_arn, format!("{bucket_arn}/*")],
    });
    if !account.is_empty() {
        allow["Condition"] = json!({"StringEquals": {"s3:ResourceAccount": account}});
    }
    let mut statements = vec![allow];
    // A bucket encrypted with the platform's key: that key, to encrypt and decrypt through S3, nothing more.
    if let Some(key) = kms_key {
        statements.push(kms_statement(key));
    }
    if !allow_external_access && network.is_configured() {
        // Conditions in one statement are ANDed, and a negated condition on a key the request lacks is
        // true: a request is denied only when it comes from no platform address, through no platform VPC
        // endpoint and from no platform VPC. Requests through a VPC endpoint carry no `aws:SourceIp`,
        // which is why endpoints and VPCs are listed apart. Calls an AWS service makes for the user
        // (`aws:ViaAWSService`) come from AWS's own network and are never denied.
        let mut condition = serde_json::Map::new();
        if !network.cidrs.is_empty() {
            let cidrs: Vec<String> = network.cidrs.iter().map(Cidr::to_string).collect();
            condition.insert("NotIpAddress".into(), json!({"aws:SourceIp": cidrs}));
        }
        let mut not_equals = serde_json::Map::new();
        if !network.vpc_endpoints.is_empty() {
            not_equals.insert("aws:SourceVpce".into(), json!(network.vpc_endpoints));
        }
        if !network.vpcs.is_empty() {
            not_equals.insert("aws:SourceVpc".into(), json!(network.vpcs));
        }
        if !not_equals.is_empty() {
            condition.insert("StringNotEquals".into(), Value::Object(not_equals));
        }
        condition.insert("Bool".into(), json!({"aws:ViaAWSService": "false"}));
        statements.push(json!({
            "Sid": "DenyOutsidePlatformNetwork",
            "Effect": "Deny",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": condition,
        }));
    }
    json!({"Version": VERSION, "Statement": statements})
}

/// The statement a user policy gets for a bucket encrypted with the KMS key `key_arn` (SSE-KMS): exactly
/// `kms:GenerateDataKey` (to write objects) and `kms:Decrypt` (to read them, and to finish multipart
/// uploads) on that key, and only when S3 asks KMS for the user (`kms:ViaService`) in the key's region,
/// which is the bucket's: the key cannot be used directly, nor through any other service.
///
/// The region is read from the ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`); in the China
/// partition the service's name ends in `.amazonaws.com.cn`. An ARN without a region gives a condition
/// that no request meets: the statement then grants nothing rather than too much.
pub fn kms_statement(key_arn: &str) -> Value {
    let mut parts = key_arn.split(':');
    let partition = parts.nth(1).unwrap_or_default();
    let region = parts.nth(1).unwrap_or_default();
    let suffix = if partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
    json!({
        "Sid": "BucketKey",
        "Effect": "Allow",
        "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
        "Resource": key_arn,
        "Condition": {"StringEquals": {"kms:ViaService": format!("s3.{region}.{suffix}")}},
    })
}

/// Whether two policy documents mean the same, ignoring what AWS rewrites when it stores one: key order,
/// whitespace, a one-element list written as a scalar, and the order of list items.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        Value::Array(items) if items.len() == 1 => normalize(&items[0]),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalize).collect();
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:s3:::bucket-broker-x";
    const ACCOUNT: &str = "123456789012";

    fn network() -> PlatformNetwork {
        PlatformNetwork {
            cidrs: vec!["10.0.0.0/16".parse().expect("cidr"), "2001:db8::/32".parse().expect("cidr")],
            vpc_endpoints: vec!["vpce-0123abcd".to_owned()],
            vpcs: vec!["vpc-0a1b2c3d".to_owned()],
        }
    }

    fn actions(policy: &Value) -> Vec<String> {
        serde_json::from_value(policy["Statement"][0]["Action"].clone()).expect("action list")
    }

    #[test]
    fn private_bucket_policy_only_denies_plain_http() {
        let policy = bucket_policy(ARN, false, true).expect("a TLS-only policy");
        let statements = policy["Statement"].as_array().expect("statements");
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Effect"], "Deny");
        assert_eq!(statements[0]["Action"], "s3:*");
        assert_eq!(statements[0]["Condition"], json!({"Bool": {"aws:SecureTransport": "false"}}));
        assert_eq!(statements[0]["Resource"], json!([ARN, format!("{ARN}/*")]));
    }

    #[test]
    fn public_bucket_policy_allows_anonymous_object_reads_only() {
        let policy = bucket_policy(ARN, true, true).expect("policy");
        let allow = &policy["Statement"][1];
        assert_eq!(allow["Effect"], "Allow");
        assert_eq!(allow["Principal"], "*");
        assert_eq!(allow["Action"], "s3:GetObject");
        assert_eq!(allow["Resource"], format!("{ARN}/*"), "objects only: no anonymous listing");
        let public_without_tls = bucket_policy(ARN, true, false).expect("policy");
        assert_eq!(public_without_tls["Statement"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn other_teams_statements_survive_and_only_ours_change() {
        let log_delivery = json!({
            "Sid": "AllowLogDelivery",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": format!("{ARN}/logs/*"),
        });
        let unnamed_deny =
            json!({"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket", "Resource": ARN});
        let public = bucket_policy(ARN, true, true).expect("policy");
        let mut current = public.clone();
        current["Statement"].as_array_mut().expect("statements").push(log_delivery.clone());
        current["Statement"].as_array_mut().expect("statements").push(unnamed_deny.clone());
        current["Id"] = json!("SecurityTeam");

        // Made private: our public statement goes, theirs stay, and so does the policy's Id.
        let private = bucket_policy(ARN, false, true);
        let merged = merge_bucket_policy(Some(&current), private.as_ref()).expect("a policy");
        let sids: Vec<&str> = merged["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .filter_map(|s| s["Sid"].as_str())
            .collect();
        assert_eq!(sids, ["AllowLogDelivery", "DenyInsecureTransport"]);
        assert!(merged["Statement"].as_array().expect("statements").contains(&unnamed_deny));
        assert_eq!(merged["Id"], "SecurityTeam");

        // Unchanged ours: the merge means what the current policy means, so nothing is written.
        let same = merge_bucket_policy(Some(&current), Some(&public)).expect("a policy");
        assert!(equivalent(&same, &current));

        // Nothing of ours wanted and only ours there: the policy goes. Only theirs: it stays as it is.
        assert_eq!(merge_bucket_policy(Some(&public), None), None);
        let theirs = json!({"Version": VERSION, "Statement": log_delivery});
        assert!(equivalent(&merge_bucket_policy(Some(&theirs), None).expect("kept"), &theirs));
        assert_eq!(merge_bucket_policy(None, None), None);
    }

    #[test]
    fn an_empty_bucket_policy_is_none() {
        assert_eq!(bucket_policy(ARN, false, false), None);
    }

    #[test]
    fn read_only_policy_has_exactly_the_read_actions() {
        let policy = user_policy(ARN, ACCOUNT, Permissions::ReadOnly, true, &network(), None);
        assert_eq!(actions(&policy), READ_ONLY_ACTIONS);
        assert_eq!(policy["Statement"][0]["Resource"], json!([ARN, format!("{ARN}/*")]));
        assert!(!actions(&policy).iter().any(|a| a.contains("Put") || a.contains("Delete")));
    }

    #[test]
    fn access_holds_only_for_a_bucket_of_our_account() {
        for permissions in [Permissions::ReadOnly, Permissions::ReadWrite] {
            for external in [true, false] {
                let policy = user_policy(ARN, ACCOUNT, permissions, external, &network(), None);
                let allows: Vec<&Value> = policy["Statement"]
                    .as_array()
                    .expect("statements")
                    .iter()
                    .filter(|s| s["Effect"] == "Allow")
                    .collect();
                assert_eq!(allows.len(), 1);
                assert_eq!(allows[0]["Condition"], json!({"StringEquals": {"s3:ResourceAccount": ACCOUNT}}));
            }
        }
    }

    #[test]
    fn read_write_policy_adds_writes_and_multipart() {
        let policy = user_policy(ARN, ACCOUNT, Permissions::ReadWrite, true, &network(), None);
        let got = actions(&policy);
        assert_eq!(got.len(), READ_ONLY_ACTIONS.len() + READ_WRITE_EXTRA_ACTIONS.len());
        for action in READ_ONLY_ACTIONS.iter().chain(READ_WRITE_EXTRA_ACTIONS) {
            assert!(got.iter().any(|a| a == action), "{action} missing");
        }
        assert!(!got.iter().any(|a| a.ends_with('*')), "no wildcards");
    }

    #[test]
    fn network_deny_is_present_exactly_when_it_should_be() {
        let restricted = user_policy(ARN, ACCOUNT, Permissions::ReadWrite, false, &network(), None);
        let deny = &restricted["Statement"][1];
        assert_eq!(deny["Effect"], "Deny");
        assert_eq!(deny["Action"], "s3:*");
        assert_eq!(deny["Resource"], "*");
        assert_eq!(
            deny["Condition"]["NotIpAddress"]["aws:SourceIp"],
            json!(["10.0.0.0/16", "2001:db8::/32"])
        );
        assert_eq!(deny["Condition"]["StringNotEquals"]["aws:SourceVpce"], json!(["vpce-0123abcd"]));
        assert_eq!(deny["Condition"]["StringNotEquals"]["aws:SourceVpc"], json!(["vpc-0a1b2c3d"]));
        assert_eq!(
            deny["Condition"]["Bool"]["aws:ViaAWSService"], "false",
            "calls AWS services make for the user are not denied"
        );

        let external = user_policy(ARN, ACCOUNT, Permissions::ReadWrite, true, &network(), None);
        assert_eq!(external["Statement"].as_array().map(Vec::len), Some(1));

        let unconfigured =
            user_policy(ARN, ACCOUNT, Permissions::ReadWrite, false, &PlatformNetwork::default(), None);
        assert_eq!(unconfigured["Statement"].as_array().map(Vec::len), Some(1));

        let cidrs_only = PlatformNetwork { vpc_endpoints: vec![], vpcs: vec![], ..network() };
        let deny =
            &user_policy(ARN, ACCOUNT, Permissions::ReadOnly, false, &cidrs_only, None)["Statement"][1];
        assert!(deny["Condition"].get("StringNotEquals").is_none());

        // Pods behind a gateway VPC endpoint send no aws:SourceIp: a VPC alone restricts them.
        let vpc_only = PlatformNetwork { vpcs: vec!["vpc-1".to_owned()], ..PlatformNetwork::default() };
        let deny = &user_policy(ARN, ACCOUNT, Permissions::ReadOnly, false, &vpc_only, None)["Statement"][1];
        assert!(deny["Condition"].get("NotIpAddress").is_none());
        assert_eq!(deny["Condition"]["StringNotEquals"], json!({"aws:SourceVpc": ["vpc-1"]}));
        assert_eq!(vpc_only.describe(), "VPCs vpc-1");
        assert_eq!(
            network().describe(),
            "addresses 10.0.0.0/16, 2001:db8::/32; VPC endpoints vpce-0123abcd; VPCs vpc-0a1b2c3d"
        );
    }

    #[test]
    fn a_kms_key_is_usable_only_through_s3_in_its_region_and_only_to_encrypt_and_decrypt() {
        let key = "arn:aws:kms:eu-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            kms_statement(key),
            json!({
                "Sid": "BucketKey",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": key,
                "Condition": {"StringEquals": {"kms:ViaService": "s3.eu-west-2.amazonaws.com"}},
            })
        );
        let china = "arn:aws-cn:kms:cn-north-1:123456789012:key/1234abcd";
        assert_eq!(
            kms_statement(china)["Condition"]["StringEquals"]["kms:ViaService"],
            "s3.cn-north-1.amazonaws.com.cn"
        );
        let gov = "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/1234abcd";
        assert_eq!(
            kms_statement(gov)["Condition"]["StringEquals"]["kms:ViaService"],
            "s3.us-gov-west-1.amazonaws.com"
        );
        // No region to read: a service name no request carries, so nothing is granted.
        for bad in ["not-an-arn", "arn:aws:kms::123456789012:key/x", ""] {
            let via = kms_statement(bad)["Condition"]["StringEquals"]["kms:ViaService"].clone();
            assert!(via.as_str().is_some_and(|v| v.starts_with("s3..")), "{bad}: {via}");
        }
        // It fits next to the credential's own statements within IAM's inline size limit.
        let mut policy = user_policy(ARN, ACCOUNT, Permissions::ReadWrite, false, &network(), None);
        policy["Statement"].as_array_mut().expect("statements").push(kms_statement(key));
        assert!(iam_size(&policy) <= MAX_USER_INLINE_POLICY_SIZE, "{}", iam_size(&policy));
    }

    #[test]
    fn equivalence_ignores_aws_rewrites_but_not_meaning() {
        let ours = bucket_policy(ARN, true, true).expect("policy");
        let mut stored = ours.clone();
        stored["Statement"][0]["Resource"] = json!([format!("{ARN}/*"), ARN]);
        stored["Statement"][1]["Resource"] = json!([format!("{ARN}/*")]);
        assert!(equivalent(&ours, &stored));
        let private = bucket_policy(ARN, false, true).expect("policy");
        assert!(!equivalent(&ours, &private));
    }
}
