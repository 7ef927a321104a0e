//! IAM and STS operations for one credential: its user, inline policy, attached policy and access keys, or
//! the role of a ServiceAccount (keyless bindings) and its inline policies.
//! Creating what exists and deleting what is gone are successes.

use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::{AwsError, CallStats, ErrorKind, call, optional};
use crate::desired::policy;

const IAM: &str = "iam";

/// The name of the one inline policy of every user.
pub const POLICY_NAME: &str = "bucket-access";

/// An IAM user as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub arn: String,
    pub tags: Vec<(String, String)>,
    pub permissions_boundary: Option<String>,
}

/// An access key of a user, as IAM lists it (never with its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    /// When AWS created it, in seconds since the Unix epoch.
    pub created: Option<i64>,
}

/// A new access key. The secret is only ever in memory and in the Secret.
pub struct NewKey {
    pub id: String,
    pub secret: String,
    /// When AWS says it created the key (seconds since the epoch): what a later listing reports too.
    pub created: Option<i64>,
}

/// IAM calls on one user.
pub struct UserOps<'a> {
    pub client: Client,
    pub stats: &'a CallStats,
    pub user: &'a str,
}

impl UserOps<'_> {
    /// The user, or `None` when it does not exist.
    pub async fn get(&self) -> Result<Option<User>, AwsError> {
        let get = self.client.get_user().user_name(self.user).send();
        let output = optional(call(self.stats, IAM, "GetUser", get).await)?;
        Ok(output.and_then(|o| o.user).map(|u| User {
            arn: u.arn().to_owned(),
            tags: pairs(u.tags()),
            permissions_boundary: u
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_owned),
        }))
    }

    /// Creates the user with its path, tags and permissions boundary; returns its ARN.
    pub async fn create(
        &self,
        path: &str,
        tags: &[(String, String)],
        boundary: Option<&str>,
    ) -> Result<String, AwsError> {
        let tags = aws_tags(tags, "CreateUser")?;
        let create = self
            .client
            .create_user()
            .user_name(self.user)
            .path(path)
            .set_tags(Some(tags))
            .set_permissions_boundary(boundary.map(str::to_owned))
            .send();
        let output = call(self.stats, IAM, "CreateUser", create).await?;
        output.user.map(|u| u.arn).ok_or_else(|| invalid("CreateUser", "no user in the response"))
    }

    pub async fn set_boundary(&self, arn: &str) -> Result<(), AwsError> {
        let put =
            self.client.put_user_permissions_boundary().user_name(self.user).permissions_boundary(arn).send();
        call(self.stats, IAM, "PutUserPermissionsBoundary", put).await?;
        Ok(())
    }

    pub async fn clear_boundary(&self) -> Result<(), AwsError> {
        let delete = self.client.delete_user_permissions_boundary().user_name(self.user).send();
        optional(call(self.stats, IAM, "DeleteUserPermissionsBoundary", delete).await)?;
        Ok(())
    }

    /// Sets one tag on the user, or removes it (`None`).
    pub async fn set_tag(&self, key: &str, value: Option<&str>) -> Result<(), AwsError> {
        match value {
            Some(value) => {
                let tag = Tag::builder().key(key).value(value).build().map_err(|e| invalid("TagUser", e))?;
                let put = self.client.tag_user().user_name(self.user).tags(tag).send();
                call(self.stats, IAM, "TagUser", put).await?;
            }
            None => {
                let delete = self.client.untag_user().user_name(self.user).tag_keys(key).send();
                call(self.stats, IAM, "UntagUser", delete).await?;
            }
        }
        Ok(())
    }

    /// Whether the stored inline policy means the same as `desired`.
    pub async fn has_policy(&self, desired: &Value) -> Result<bool, AwsError> {
        let get = self.client.get_user_policy().user_name(self.user).policy_name(POLICY_NAME).send();
        let current = optional(call(self.stats, IAM, "GetUserPolicy", get).await)?
            .and_then(|p| parse_document(&p.policy_document));
        Ok(current.is_some_and(|c| policy::equivalent(&c, desired)))
    }

    /// Writes the inline policy.
    pub async fn put_policy(&self, desired: &Value) -> Result<(), AwsError> {
        let put = self
            .client
            .put_user_policy()
            .user_name(self.user)
            .policy_name(POLICY_NAME)
            .policy_document(desired.to_string())
            .send();
        call(self.stats, IAM, "PutUserPolicy", put).await?;
        Ok(())
    }

    /// The ARNs of the managed policies attached to the user.
    pub async fn attached_policies(&self) -> Result<Vec<String>, AwsError> {
        let list = self.client.list_attached_user_policies().user_name(self.user).send();
        let output = call(self.stats, IAM, "ListAttachedUserPolicies", list).await?;
        Ok(output.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn).collect())
    }

    pub async fn attach_policy(&self, arn: &str) -> Result<(), AwsError> {
        let attach = self.client.attach_user_policy().user_name(self.user).policy_arn(arn).send();
        call(self.stats, IAM, "AttachUserPolicy", attach).await?;
        Ok(())
    }

    pub async fn detach_policy(&self, arn: &str) -> Result<(), AwsError> {
        let detach = self.client.detach_user_policy().user_name(self.user).policy_arn(arn).send();
        optional(call(self.stats, IAM, "DetachUserPolicy", detach).await)?;
        Ok(())
    }

    /// The user's access keys.
    pub async fn access_keys(&self) -> Result<Vec<AccessKey>, AwsError> {
        let list = self.client.list_access_keys().user_name(self.user).send();
        let output = call(self.stats, IAM, "ListAccessKeys", list).await?;
        Ok(output
            .access_key_metadata
            .into_iter()
            .filter_map(|k| {
                Some(AccessKey { id: k.access_key_id?, created: k.create_date.map(|d| d.secs()) })
            })
            .collect())
    }

    /// Deletes every access key of the user; a user that does not exist has none.
    pub async fn delete_access_keys(&self) -> Result<(), AwsError> {
        for key in optional(self.access_keys().await)?.unwrap_or_default() {
            self.delete_access_key(&key.id).await?;
        }
        Ok(())
    }

    pub async fn create_access_key(&self) -> Result<NewKey, AwsError> {
        let create = self.client.create_access_key().user_name(self.user).send();
        let key = call(self.stats, IAM, "CreateAccessKey", create)
            .await?
            .access_key
            .ok_or_else(|| invalid("CreateAccessKey", "no key in the response"))?;
        let created = key.create_date.map(|d| d.secs());
        Ok(NewKey { id: key.access_key_id, secret: key.secret_access_key, created })
    }

    pub async fn delete_access_key(&self, id: &str) -> Result<(), AwsError> {
        let delete = self.client.delete_access_key().user_name(self.user).access_key_id(id).send();
        optional(call(self.stats, IAM, "DeleteAccessKey", delete).await)?;
        Ok(())
    }

    /// Deletes everything the controller may have given the user (access keys, every inline policy,
    /// every attached policy), then the user; whatever is already gone counts as deleted. Anything else
    /// that blocks the deletion (a console password, MFA, a signing certificate someone added) fails
    /// `DeleteUser` with a `DeleteConflict` that names it.
    pub async fn delete_all(&self) -> Result<(), AwsError> {
        let keys = match self.access_keys().await {
            Err(err) if err.is(ErrorKind::NotFound) => return Ok(()),
            other => other?,
        };
        for key in keys {
            self.delete_access_key(&key.id).await?;
        }
        let list = self.client.list_user_policies().user_name(self.user).send();
        let inline = optional(call(self.stats, IAM, "ListUserPolicies", list).await)?
            .map(|o| o.policy_names)
            .unwrap_or_default();
        for name in inline {
            let delete_policy =
                self.client.delete_user_policy().user_name(self.user).policy_name(name).send();
            optional(call(self.stats, IAM, "DeleteUserPolicy", delete_policy).await)?;
        }
        for arn in optional(self.attached_policies().await)?.unwrap_or_default() {
            self.detach_policy(&arn).await?;
        }
        let delete = self.client.delete_user().user_name(self.user).send();
        optional(call(self.stats, IAM, "DeleteUser", delete).await)?;
        Ok(())
    }
}

/// An IAM role as the controller sees it: the keyless identity of a ServiceAccount.
#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub arn: String,
    pub tags: Vec<(String, String)>,
    pub permissions_boundary: Option<String>,
    /// The trust policy, parsed (IAM returns it URL-encoded).
    pub trust: Option<Value>,
}

/// IAM calls on one role. Each binding of the role's ServiceAccount owns one inline policy on it.
pub struct RoleOps<'a> {
    pub client: Client,
    pub stats: &'a CallStats,
    pub role: &'a str,
}

impl RoleOps<'_> {
    /// The role, or `None` when it does not exist.
    pub async fn get(&self) -> Result<Option<Role>, AwsError> {
        let get = self.client.get_role().role_name(self.role).send();
        let output = optional(call(self.stats, IAM, "GetRole", get).await)?;
        Ok(output.and_then(|o| o.role).map(|r| Role {
            arn: r.arn().to_owned(),
            tags: pairs(r.tags()),
            permissions_boundary: r
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_owned),
            trust: r.assume_role_policy_document().and_then(parse_document),
        }))
    }

    /// Creates the role with its path, trust policy, tags and permissions boundary; returns its ARN.
    pub async fn create(
        &self,
        path: &str,
        trust: &Value,
        tags: &[(String, String)],
        boundary: Option<&str>,
    ) -> Result<String, AwsError> {
        let tags = aws_tags(tags, "CreateRole")?;
        let create = self
            .client
            .create_role()
            .role_name(self.role)
            .path(path)
            .assume_role_policy_document(trust.to_string())
            .set_tags(Some(tags))
            .set_permissions_boundary(boundary.map(str::to_owned))
            .send();
        let output = call(self.stats, IAM, "CreateRole", create).await?;
        output.role.map(|r| r.arn).ok_or_else(|| invalid("CreateRole", "no role in the response"))
    }

    pub async fn set_trust(&self, trust: &Value) -> Result<(), AwsError> {
        let update = self
            .client
            .update_assume_role_policy()
            .role_name(self.role)
            .policy_document(trust.to_string())
            .send();
        call(self.stats, IAM, "UpdateAssumeRolePolicy", update).await?;
        Ok(())
    }

    pub async fn set_boundary(&self, arn: &str) -> Result<(), AwsError> {
        let put =
            self.client.put_role_permissions_boundary().role_name(self.role).permissions_boundary(arn).send();
        call(self.stats, IAM, "PutRolePermissionsBoundary", put).await?;
        Ok(())
    }

    /// Sets one tag on the role.
    pub async fn set_tag(&self, key: &str, value: &str) -> Result<(), AwsError> {
        let tag = Tag::builder().key(key).value(value).build().map_err(|e| invalid("TagRole", e))?;
        let put = self.client.tag_role().role_name(self.role).tags(tag).send();
        call(self.stats, IAM, "TagRole", put).await?;
        Ok(())
    }

    /// Whether the inline policy `name` means the same as `desired`.
    pub async fn has_policy(&self, name: &str, desired: &Value) -> Result<bool, AwsError> {
        let get = self.client.get_role_policy().role_name(self.role).policy_name(name).send();
        let current = optional(call(self.stats, IAM, "GetRolePolicy", get).await)?
            .and_then(|p| parse_document(&p.policy_document));
        Ok(current.is_some_and(|c| policy::equivalent(&c, desired)))
    }

    pub async fn put_policy(&self, name: &str, desired: &Value) -> Result<(), AwsError> {
        let put = self
            .client
            .put_role_policy()
            .role_name(self.role)
            .policy_name(name)
            .policy_document(desired.to_string())
            .send();
        call(self.stats, IAM, "PutRolePolicy", put).await?;
        Ok(())
    }

    /// Deletes the inline policy `name`; one already gone (or a role already gone) counts as deleted.
    pub async fn delete_policy(&self, name: &str) -> Result<(), AwsError> {
        let delete = self.client.delete_role_policy().role_name(self.role).policy_name(name).send();
        optional(call(self.stats, IAM, "DeleteRolePolicy", delete).await)?;
        Ok(())
    }

    /// The names of the role's inline policies (none for a role that does not exist).
    pub async fn policies(&self) -> Result<Vec<String>, AwsError> {
        let list = self.client.list_role_policies().role_name(self.role).send();
        Ok(optional(call(self.stats, IAM, "ListRolePolicies", list).await)?
            .map(|o| o.policy_names)
            .unwrap_or_default())
    }

    /// Deletes the role, which must hold no policy any more: IAM refuses (`DeleteConflict`) while one is
    /// left, so a binding that put its policy meanwhile keeps the role. A role already gone counts as
    /// deleted.
    pub async fn delete(&self) -> Result<(), AwsError> {
        let delete = self.client.delete_role().role_name(self.role).send();
        optional(call(self.stats, IAM, "DeleteRole", delete).await)?;
        Ok(())
    }
}

/// Every role under the IAM path `path`, as ListUsers shows users (name and creation time).
pub async fn list_roles(client: &Client, stats: &CallStats, path: &str) -> Result<Vec<ListedUser>, AwsError> {
    let mut roles = Vec::new();
    let mut marker = None;
    loop {
        let list = client.list_roles().path_prefix(path).set_marker(marker.take()).send();
        let page = call(stats, IAM, "ListRoles", list).await?;
        roles.extend(
            page.roles.into_iter().map(|r| ListedUser { name: r.role_name, created: r.create_date.secs() }),
        );
        match page.marker {
            Some(next) if page.is_truncated => marker = Some(next),
            _ => return Ok(roles),
        }
    }
}

/// An IAM user as ListUsers shows it (without its tags: ask [`UserOps::get`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedUser {
    pub name: String,
    /// When AWS created it, in seconds since the Unix epoch.
    pub created: i64,
}

/// Every user under the IAM path `path`.
pub async fn list_users(client: &Client, stats: &CallStats, path: &str) -> Result<Vec<ListedUser>, AwsError> {
    let mut users = Vec::new();
    let mut marker = None;
    loop {
        let list = client.list_users().path_prefix(path).set_marker(marker.take()).send();
        let page = call(stats, IAM, "ListUsers", list).await?;
        users.extend(
            page.users.into_iter().map(|u| ListedUser { name: u.user_name, created: u.create_date.secs() }),
        );
        match page.marker {
            Some(next) if page.is_truncated => marker = Some(next),
            _ => return Ok(users),
        }
    }
}

/// What STS says of an access key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    Accepted,
    /// STS does not know the key (`InvalidClientTokenId`): what IAM's propagation delay looks like for a
    /// new key, and the only answer worth waiting on.
    NotYetKnown,
    /// The key is known but the secret is wrong (`SignatureDoesNotMatch`): a hand-edited Secret.
    WrongSecret,
}

/// Checks an access key with STS GetCallerIdentity, which every valid key may call. Any answer other than
/// the three of [`KeyCheck`] (a disabled regional STS endpoint, say) is an error, never a reason to wait.
pub async fn check_key(
    sts: &aws_sdk_sts::Client,
    stats: &CallStats,
    id: &str,
    secret: &str,
) -> Result<KeyCheck, AwsError> {
    let credentials = aws_sdk_sts::config::Credentials::new(id, secret, None, None, "bucket-broker-check");
    // The controller's client with the key's credentials for this one call: its HTTP client (connection
    // pool, TLS configuration) is reused, where a client of its own would build both again for every key.
    // Nor is the key cached: the client's identity cache would keep every key checked.
    let with_key = aws_sdk_sts::config::Builder::default()
        .credentials_provider(credentials)
        .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache());
    let probe = sts.get_caller_identity().customize().config_override(with_key).send();
    match call(stats, "sts", "GetCallerIdentity", probe).await {
        Ok(_) => Ok(KeyCheck::Accepted),
        Err(err) if err.has_code("InvalidClientTokenId") => Ok(KeyCheck::NotYetKnown),
        // A 403 whose body names no code (some emulators) cannot be told apart from an unknown key: it
        // gets the same bounded wait, never an endless one.
        Err(err) if err.code.is_none() && err.status == Some(403) => Ok(KeyCheck::NotYetKnown),
        Err(err) if err.has_code("SignatureDoesNotMatch") => Ok(KeyCheck::WrongSecret),
        Err(err) => Err(err),
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986); emulators sometimes do not.
pub fn parse_document(document: &str) -> Option<Value> {
    serde_json::from_str(document).ok().or_else(|| serde_json::from_str(&percent_decode(document)?).ok())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Tags as IAM takes them.
fn aws_tags(tags: &[(String, String)], operation: &'static str) -> Result<Vec<Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(operation, e))
}

/// Tags as IAM returns them, as key-value pairs.
fn pairs(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
}

fn invalid(operation: &'static str, err: impl std::fmt::Display) -> AwsError {
    AwsError {
        service: IAM,
        operation,
        kind: ErrorKind::Invalid,
        code: None,
        status: None,
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_policy_documents_are_read() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            parse_document(encoded),
            Some(serde_json::json!({"Version": "2012-10-17", "Statement": []}))
        );
        assert_eq!(parse_document(r#"{"a":1}"#), Some(serde_json::json!({"a": 1})));
        assert_eq!(parse_document("%zz"), None);
    }
}
