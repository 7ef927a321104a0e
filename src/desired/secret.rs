//! The data of the credential Secrets, exactly in the shapes apps already parse: the seed's
//! `VCAP_SERVICES` entry for a BucketBinding, the seed's `cf service-key` output for a BucketServiceKey,
//! and flat `AWS_*` keys plus servicebinding.io `type`/`provider` for everything else.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The Cloud Foundry service label, and the `VCAP_SERVICES` key.
pub const LABEL: &str = "aws-s3-bucket";

/// The Secret key holding `VCAP_SERVICES`.
pub const VCAP_SERVICES: &str = "VCAP_SERVICES";
/// The servicebinding.io Secret type of a BucketBinding's Secret.
pub const BINDING_SECRET_TYPE: &str = "servicebinding.io/s3";

/// What a credential grants its holder: an access key, or a role its pods assume (keyless).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grant<'a> {
    Key { id: &'a str, secret: &'a str },
    Role { arn: &'a str },
}

/// What a credential Secret carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub grant: Grant<'a>,
    pub region: &'a str,
    pub bucket_name: &'a str,
    pub deploy_env: &'a str,
    /// The S3 endpoint when it is not AWS's (`AWS_ENDPOINT_URL_S3`).
    pub endpoint_url: Option<&'a str>,
}

// Never print a secret, even in a debug log.
impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Credentials");
        match self.grant {
            Grant::Key { id, .. } => {
                out.field("access_key_id", &id).field("secret_access_key", &"<redacted>")
            }
            Grant::Role { arn } => out.field("role_arn", &arn),
        };
        out.field("bucket_name", &self.bucket_name).finish_non_exhaustive()
    }
}

/// The `credentials` object of the seed: five keys, in this order; a keyless binding's has its role's ARN
/// where the seed has the two key fields.
fn credentials_json(c: &Credentials<'_>) -> serde_json::Value {
    match c.grant {
        Grant::Key { id, secret } => json!({
            "aws_access_key_id": id,
            "aws_region": c.region,
            "aws_secret_access_key": secret,
            "bucket_name": c.bucket_name,
            "deploy_env": c.deploy_env,
        }),
        Grant::Role { arn } => json!({
            "aws_region": c.region,
            "bucket_name": c.bucket_name,
            "deploy_env": c.deploy_env,
            "role_arn": arn,
        }),
    }
}

/// The flat keys for `envFrom` and the servicebinding.io keys, shared by both Secrets.
fn flat_keys(c: &Credentials<'_>) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        ("AWS_REGION".to_owned(), c.region.to_owned()),
        ("AWS_DEFAULT_REGION".to_owned(), c.region.to_owned()),
        ("BUCKET_NAME".to_owned(), c.bucket_name.to_owned()),
        ("type".to_owned(), "s3".to_owned()),
        ("provider".to_owned(), "aws".to_owned()),
    ]);
    match c.grant {
        Grant::Key { id, secret } => {
            data.insert("AWS_ACCESS_KEY_ID".to_owned(), id.to_owned());
            data.insert("AWS_SECRET_ACCESS_KEY".to_owned(), secret.to_owned());
        }
        Grant::Role { arn } => {
            data.insert("AWS_ROLE_ARN".to_owned(), arn.to_owned());
        }
    }
    if let Some(endpoint) = c.endpoint_url {
        data.insert("AWS_ENDPOINT_URL_S3".to_owned(), endpoint.to_owned());
    }
    data
}

/// The data of a BucketBinding's Secret. `instance_name` is the Bucket's name, as `cf` showed it.
pub fn binding_data(instance_name: &str, c: &Credentials<'_>) -> BTreeMap<String, String> {
    let entry = json!({
        "binding_name": null,
        "credentials": credentials_json(c),
        "instance_name": instance_name,
        "label": LABEL,
        "name": instance_name,
        "plan": "default",
        "provider": null,
        "syslog_drain_url": null,
        "tags": ["s3"],
        "volume_mounts": [],
    });
    let mut data = flat_keys(c);
    data.insert(VCAP_SERVICES.to_owned(), vcap_services(&[entry]));
    data
}

/// The data of a BucketServiceKey's Secret: `credentials.json` is what `cf service-key` printed.
pub fn service_key_data(c: &Credentials<'_>) -> BTreeMap<String, String> {
    let mut data = flat_keys(c);
    data.insert("credentials.json".to_owned(), credentials_json(c).to_string());
    data
}

/// `VCAP_SERVICES` listing `entries`, in the given order: one for a binding Secret, one per binding for an
/// app Secret.
pub fn vcap_services(entries: &[Value]) -> String {
    json!({ LABEL: entries }).to_string()
}

/// The one entry of a binding Secret's `VCAP_SERVICES`.
pub fn binding_entry(vcap_services: &[u8]) -> Option<Value> {
    let vcap: Value = serde_json::from_slice(vcap_services).ok()?;
    vcap.get(LABEL)?.get(0).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn creds() -> Credentials<'static> {
        Credentials {
            grant: Grant::Key { id: "AKIAEXAMPLE", secret: "secret/key" },
            region: "eu-west-2",
            bucket_name: "bucket-broker-uid",
            deploy_env: "prod",
            endpoint_url: None,
        }
    }

    #[test]
    fn vcap_services_has_exactly_the_seed_shape() {
        let data = binding_data("my-bucket", &creds());
        let vcap: Value = serde_json::from_str(&data["VCAP_SERVICES"]).expect("json");
        let entries = vcap[LABEL].as_array().expect("a list under aws-s3-bucket");
        assert_eq!(entries.len(), 1);
        let expected = json!({
            "binding_name": null,
            "credentials": {
                "aws_access_key_id": "AKIAEXAMPLE",
                "aws_region": "eu-west-2",
                "aws_secret_access_key": "secret/key",
                "bucket_name": "bucket-broker-uid",
                "deploy_env": "prod"
            },
            "instance_name": "my-bucket",
            "label": "aws-s3-bucket",
            "name": "my-bucket",
            "plan": "default",
            "provider": null,
            "syslog_drain_url": null,
            "tags": ["s3"],
            "volume_mounts": []
        });
        assert_eq!(entries[0], expected);
    }

    #[test]
    fn flat_keys_and_servicebinding_keys() {
        let data = binding_data("b", &creds());
        assert_eq!(data["AWS_ACCESS_KEY_ID"], "AKIAEXAMPLE");
        assert_eq!(data["AWS_SECRET_ACCESS_KEY"], "secret/key");
        assert_eq!(data["AWS_REGION"], "eu-west-2");
        assert_eq!(data["AWS_DEFAULT_REGION"], "eu-west-2");
        assert_eq!(data["BUCKET_NAME"], "bucket-broker-uid");
        assert_eq!(data["type"], "s3");
        assert_eq!(data["provider"], "aws");
        assert!(!data.contains_key("AWS_ENDPOINT_URL_S3"));
        let local = Credentials { endpoint_url: Some("http://127.0.0.1:5000"), ..creds() };
        assert_eq!(binding_data("b", &local)["AWS_ENDPOINT_URL_S3"], "http://127.0.0.1:5000");
    }

    #[test]
    fn service_key_json_is_the_cf_service_key_output() {
        let data = service_key_data(&creds());
        let parsed: Value = serde_json::from_str(&data["credentials.json"]).expect("json");
        let keys: Vec<&String> = parsed.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["aws_access_key_id", "aws_region", "aws_secret_access_key", "bucket_name", "deploy_env"]
        );
        assert_eq!(parsed["aws_secret_access_key"], "secret/key");
        assert!(!data.contains_key("VCAP_SERVICES"));
        assert_eq!(data["AWS_ACCESS_KEY_ID"], "AKIAEXAMPLE");
    }

    #[test]
    fn a_keyless_secret_names_the_role_and_holds_no_key() {
        let keyless =
            Credentials { grant: Grant::Role { arn: "arn:aws:iam::123456789012:role/r" }, ..creds() };
        let data = binding_data("b", &keyless);
        assert!(!data.contains_key("AWS_ACCESS_KEY_ID") && !data.contains_key("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(data["AWS_ROLE_ARN"], "arn:aws:iam::123456789012:role/r");
        assert_eq!(data["BUCKET_NAME"], "bucket-broker-uid");
        assert_eq!(data["AWS_REGION"], "eu-west-2");
        assert_eq!(data["type"], "s3");
        let vcap: Value = serde_json::from_str(&data["VCAP_SERVICES"]).expect("json");
        assert_eq!(
            vcap[LABEL][0]["credentials"],
            json!({"bucket_name": "bucket-broker-uid", "aws_region": "eu-west-2", "deploy_env": "prod",
                   "role_arn": "arn:aws:iam::123456789012:role/r"})
        );
        assert!(format!("{keyless:?}").contains("role_arn"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let printed = format!("{:?}", creds());
        assert!(!printed.contains("secret/key"), "{printed}");
        assert!(printed.contains("AKIAEXAMPLE"));
    }
}
