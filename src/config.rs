//! The controller's configuration: every flag of `bucket-broker run`, each also an environment variable,
//! parsed and validated here so that a bad value stops the process at start-up with a clear message.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::desired::keyless::Setup;

/// The longest bucket prefix: S3 names are at most 63 characters and a uid takes 36.
pub const MAX_BUCKET_PREFIX_LEN: usize = 63 - UID_LEN;
/// The longest IAM user prefix: IAM user names are at most 64 characters and a uid takes 36.
pub const MAX_USER_PREFIX_LEN: usize = 64 - UID_LEN;
const UID_LEN: usize = 36;

/// Flags of `bucket-broker run`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// AWS region for new buckets and for the IAM and STS clients. Defaults to the AWS SDK's region chain
    /// (AWS_REGION, profile, instance metadata).
    #[arg(long, env = "BUCKET_BROKER_REGION", value_parser = parse_region)]
    pub region: Option<String>,

    /// The deployment environment name, copied into every Secret as `deploy_env` and into the
    /// `deploy_env` tag of every AWS object.
    #[arg(long, env = "BUCKET_BROKER_DEPLOY_ENV", default_value = "")]
    pub deploy_env: String,

    /// A name for this cluster, written into the `bucketbroker.io/cluster` tag of every AWS object. Set a
    /// different one on each cluster that shares an AWS account: a controller never adopts, changes,
    /// deletes or sweeps an object tagged for another cluster. Letters, digits, `-`, `_` and `.`, at most 63.
    #[arg(long, env = "BUCKET_BROKER_CLUSTER_NAME", default_value = "", value_parser = parse_cluster_name)]
    pub cluster_name: String,

    /// Prefix of every bucket name (the rest is the Bucket's uid). At most 27 characters: lowercase
    /// letters, digits and hyphens, starting with a letter or digit.
    #[arg(long, env = "BUCKET_BROKER_BUCKET_PREFIX", default_value = "bucket-broker-", value_parser = parse_bucket_prefix)]
    pub bucket_prefix: String,

    /// Prefix of every IAM user name (the rest is the binding's uid). At most 28 characters from
    /// `A-Za-z0-9+=,.@_-`.
    #[arg(long, env = "BUCKET_BROKER_USER_PREFIX", default_value = "bucket-broker-", value_parser = parse_user_prefix)]
    pub user_prefix: String,

    /// IAM path of every user the controller creates; starts and ends with `/`. The controller's own IAM
    /// policy is scoped to it.
    #[arg(long, env = "BUCKET_BROKER_IAM_PATH", default_value = "/bucket-broker/", value_parser = parse_iam_path)]
    pub iam_path: String,

    /// Comma-separated CIDRs of the platform network (for example the NAT gateways' addresses). Unless a
    /// binding allows external access, its credentials are denied from anywhere else.
    #[arg(long, env = "BUCKET_BROKER_PLATFORM_CIDRS", value_delimiter = ',')]
    pub platform_cidrs: Vec<Cidr>,

    /// Comma-separated VPC endpoint ids (`vpce-...`) of the platform network; requests through them count
    /// as coming from the platform network. Needed when pods reach S3 through an S3 VPC endpoint: such
    /// requests carry no source IP, so --platform-cidrs alone would deny them.
    #[arg(long, env = "BUCKET_BROKER_PLATFORM_VPC_ENDPOINTS", value_delimiter = ',', value_parser = parse_vpc_endpoint)]
    pub platform_vpc_endpoints: Vec<String>,

    /// Comma-separated VPC ids (`vpc-...`) of the platform network; requests from them through any VPC
    /// endpoint count as coming from the platform network.
    #[arg(long, env = "BUCKET_BROKER_PLATFORM_VPCS", value_delimiter = ',', value_parser = parse_vpc)]
    pub platform_vpcs: Vec<String>,

    /// The oldest an access key may get: keys are rotated (with the overlap of their keyRotation, default
    /// 1h) when older. Also the default rotation interval. Units s, m, h, d (for example 90d). Default: no
    /// limit.
    #[arg(long, env = "BUCKET_BROKER_MAX_KEY_AGE", value_parser = parse_key_age)]
    pub max_key_age: Option<HumanDuration>,

    /// Required: ARN of the IAM policy set as the permissions boundary of every user the controller
    /// creates (deploy/aws/boundary-policy.json): the most any key it issues can ever do, whatever the
    /// controller writes. `none` runs without one, knowingly: logged at start and exported as
    /// bucket_broker_permissions_boundary{state="none"}.
    #[arg(long, env = "BUCKET_BROKER_PERMISSIONS_BOUNDARY_ARN", value_parser = parse_boundary)]
    pub permissions_boundary_arn: Option<Boundary>,

    /// ARN of a managed IAM policy attached to every user the controller creates (for example one that
    /// lets users copy data out during a migration).
    #[arg(long, env = "BUCKET_BROKER_COMMON_USER_POLICY_ARN", value_parser = parse_policy_arn)]
    pub common_user_policy_arn: Option<String>,

    /// Keyless bindings through IRSA: the ARN of the cluster's IAM OIDC provider
    /// (`arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>`). A BucketBinding with
    /// serviceAccountName then gets a role that only that ServiceAccount may assume, and the ServiceAccount
    /// the `eks.amazonaws.com/role-arn` annotation.
    #[arg(
        long,
        env = "BUCKET_BROKER_OIDC_PROVIDER_ARN",
        value_parser = parse_oidc_provider,
        conflicts_with = "pod_identity_cluster_name"
    )]
    pub oidc_provider_arn: Option<Setup>,

    /// Keyless bindings through EKS Pod Identity: the name of this EKS cluster. A BucketBinding with
    /// serviceAccountName then gets a role that the EKS Pod Identity agent gives that ServiceAccount's pods
    /// alone, and the controller makes the Pod Identity association. The cluster needs the
    /// eks-pod-identity-agent add-on. One of this and --oidc-provider-arn.
    #[arg(long, env = "BUCKET_BROKER_POD_IDENTITY_CLUSTER_NAME", value_parser = parse_eks_cluster_name)]
    pub pod_identity_cluster_name: Option<String>,

    /// Whether access keys may be issued. `allowed` (the default): BucketBindings without
    /// serviceAccountName and BucketServiceKeys get keys. `required`: no access key is ever issued; those
    /// are refused with the reason KeysNotAllowed (for accounts where keys are banned). `required` needs
    /// --oidc-provider-arn or --pod-identity-cluster-name.
    #[arg(long, env = "BUCKET_BROKER_KEYLESS", default_value = "allowed")]
    pub keyless: Keyless,

    // Booleans take a value (`--require-tls=false` and `--require-tls false`); the flag alone means true.
    /// Deny every request to a bucket that does not use TLS. Turn off only for plain-HTTP S3-compatible
    /// endpoints and local emulators.
    #[arg(long, env = "BUCKET_BROKER_REQUIRE_TLS", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub require_tls: bool,

    /// Endpoint URL for S3, IAM and STS instead of AWS's (S3-compatible stores, local emulators).
    #[arg(long, env = "BUCKET_BROKER_AWS_ENDPOINT_URL", value_parser = parse_endpoint_url)]
    pub aws_endpoint_url: Option<String>,

    /// How often every object is re-checked against AWS to repair drift, for example `10m`, `90s`, `1h`.
    #[arg(long, env = "BUCKET_BROKER_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: HumanDuration,

    /// How often the leader looks for AWS users, access keys and buckets whose Kubernetes object is gone
    /// (once at start, then at this interval), for example `1h`; `0` turns it off. Orphaned users lose
    /// their keys, policies and the user itself; orphaned buckets are only reported, never deleted.
    #[arg(long, env = "BUCKET_BROKER_ORPHAN_SWEEP_INTERVAL", default_value = "1h", value_parser = parse_interval_or_off)]
    pub orphan_sweep_interval: HumanDuration,

    /// The most IAM calls per second, across all reconciles (IAM throttles early; lower it when several
    /// controllers share an account).
    #[arg(long, env = "BUCKET_BROKER_AWS_IAM_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    pub aws_iam_rate: f64,

    /// The most S3 calls per second, across all reconciles.
    #[arg(long, env = "BUCKET_BROKER_AWS_S3_RATE", default_value_t = 100.0, value_parser = parse_rate)]
    pub aws_s3_rate: f64,

    /// The most STS calls per second (checks that new access keys work).
    #[arg(long, env = "BUCKET_BROKER_AWS_STS_RATE", default_value_t = 20.0, value_parser = parse_rate)]
    pub aws_sts_rate: f64,

    /// How many objects of each kind are reconciled at once.
    #[arg(long, env = "BUCKET_BROKER_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Watch only this namespace; by default all namespaces.
    #[arg(long, env = "BUCKET_BROKER_NAMESPACE", value_parser = parse_namespace)]
    pub namespace: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "BUCKET_BROKER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Run several replicas safely: only the holder of a coordination.k8s.io Lease reconciles.
    #[arg(long, env = "BUCKET_BROKER_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,

    /// The name of the leader-election Lease, in the controller's namespace. Give each Deployment of the
    /// controller in one namespace its own (and name it in the leader-election Role's resourceNames).
    #[arg(long, env = "BUCKET_BROKER_LEADER_ELECTION_LEASE_NAME", default_value = "bucket-broker",
          value_parser = parse_lease_name)]
    pub leader_election_lease_name: String,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "BUCKET_BROKER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// `--permissions-boundary-arn`: a policy ARN, or `none` said explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boundary {
    None,
    Arn(String),
}

impl Boundary {
    /// The ARN, if there is one.
    pub fn arn(&self) -> Option<&str> {
        match self {
            Boundary::None => None,
            Boundary::Arn(arn) => Some(arn),
        }
    }
}

fn parse_boundary(s: &str) -> Result<Boundary, String> {
    if s == "none" {
        return Ok(Boundary::None);
    }
    parse_policy_arn(s).map(Boundary::Arn).map_err(|e| format!("{e}, or none"))
}

/// `--keyless`: whether access keys may be issued.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyless {
    /// Keys for bindings without a ServiceAccount, and for service keys.
    Allowed,
    /// No access key, ever: only keyless BucketBindings are served.
    Required,
}

impl RunArgs {
    /// How keyless bindings get their role, if the controller is set up for them.
    pub fn keyless_setup(&self) -> Option<Setup> {
        let pod_identity =
            self.pod_identity_cluster_name.clone().map(|cluster| Setup::PodIdentity { cluster });
        self.oidc_provider_arn.clone().or(pod_identity)
    }
}

/// An EKS cluster name as EKS allows it: 1 to 100 letters, digits, `-` and `_`, starting with a letter or
/// digit.
fn parse_eks_cluster_name(s: &str) -> Result<String, String> {
    let valid = (1..=100).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| s.to_owned()).ok_or_else(|| {
        format!("{s:?} is not an EKS cluster name (1 to 100 letters, digits, '-' and '_', starting with a letter or digit)")
    })
}

fn parse_oidc_provider(s: &str) -> Result<Setup, String> {
    Setup::irsa(s).ok_or_else(|| {
        format!(
            "{s:?} is not an IAM OIDC provider ARN such as \
             arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-2.amazonaws.com/id/EXAMPLE"
        )
    })
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = || format!("{s:?} is not a CIDR such as 10.0.0.0/16 or 2001:db8::/32");
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: the prefix length must be at most {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A duration written as a number and a unit (`s`, `m`, `h`), such as `10m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    let invalid = || format!("{s:?} is not a duration such as 30s, 10m or 1h");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(invalid()),
    };
    if seconds == 0 {
        return Err(format!("{s:?}: the interval must be longer than zero"));
    }
    Ok(HumanDuration(Duration::from_secs(seconds)))
}

fn parse_key_age(s: &str) -> Result<HumanDuration, String> {
    crate::desired::rotation::parse_duration(s).map(HumanDuration)
}

/// A duration as [`parse_duration`] reads it, or `0` for "off".
fn parse_interval_or_off(s: &str) -> Result<HumanDuration, String> {
    if s == "0" { Ok(HumanDuration(Duration::ZERO)) } else { parse_duration(s) }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a rate in calls per second, such as 10 or 0.5")),
    }
}

fn parse_cluster_name(s: &str) -> Result<String, String> {
    let valid = s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a cluster name (letters, digits, -, _ and ., at most 63)"))
    }
}

/// A Lease name: a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253).
fn parse_lease_name(s: &str) -> Result<String, String> {
    let valid = (1..=253).contains(&s.len())
        && s.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    valid
        .then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not a Lease name (a DNS subdomain such as bucket-broker-eu)"))
}

fn parse_region(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid { Ok(s.to_owned()) } else { Err(format!("{s:?} is not an AWS region such as eu-west-2")) }
}

fn parse_bucket_prefix(s: &str) -> Result<String, String> {
    if s.len() > MAX_BUCKET_PREFIX_LEN {
        return Err(format!(
            "{s:?} is {} characters long; a bucket prefix is at most {MAX_BUCKET_PREFIX_LEN} so that prefix \
             plus uid fits S3's 63-character limit",
            s.len()
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(format!("{s:?}: a bucket prefix may contain only lowercase letters, digits and hyphens"));
    }
    if s.starts_with('-') {
        return Err(format!("{s:?}: a bucket name must start with a letter or a digit"));
    }
    Ok(s.to_owned())
}

fn parse_user_prefix(s: &str) -> Result<String, String> {
    if s.len() > MAX_USER_PREFIX_LEN {
        return Err(format!(
            "{s:?} is {} characters long; a user prefix is at most {MAX_USER_PREFIX_LEN} so that prefix plus \
             uid fits IAM's 64-character limit",
            s.len()
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)) {
        return Err(format!("{s:?}: an IAM user name may contain only letters, digits and +=,.@_-"));
    }
    Ok(s.to_owned())
}

fn parse_iam_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || !s.ends_with('/') {
        return Err(format!("{s:?}: an IAM path must start and end with '/', for example /bucket-broker/"));
    }
    if s.len() > 512 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(format!("{s:?}: an IAM path is at most 512 printable ASCII characters without spaces"));
    }
    Ok(s.to_owned())
}

fn parse_vpc_endpoint(s: &str) -> Result<String, String> {
    parse_aws_id(s, "vpce-", "a VPC endpoint id such as vpce-0123abcd")
}

fn parse_vpc(s: &str) -> Result<String, String> {
    parse_aws_id(s, "vpc-", "a VPC id such as vpc-0123abcd")
}

fn parse_aws_id(s: &str, prefix: &str, what: &str) -> Result<String, String> {
    let id = s.trim();
    let valid = id
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if valid { Ok(id.to_owned()) } else { Err(format!("{s:?} is not {what}")) }
}

fn parse_policy_arn(s: &str) -> Result<String, String> {
    let mut parts = s.splitn(6, ':');
    let valid = parts.next() == Some("arn")
        && parts.next().is_some_and(|p| p.starts_with("aws"))
        && parts.next() == Some("iam")
        && parts.next() == Some("")
        && parts.next().is_some()
        && parts.next().is_some_and(|r| r.starts_with("policy/") && r.len() > "policy/".len());
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not an IAM policy ARN such as arn:aws:iam::123456789012:policy/name"))
    }
}

fn parse_endpoint_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("{s:?} is not an http:// or https:// URL")),
    }
}

fn parse_namespace(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid { Ok(s.to_owned()) } else { Err(format!("{s:?} is not a valid namespace name")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        let argv = std::iter::once("bucket-broker").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.run).map_err(|e| e.to_string())
    }

    #[test]
    fn keyless_takes_one_setup_and_is_allowed_by_default() {
        use crate::desired::keyless::Setup;
        let run = parse(&[]).expect("defaults");
        assert_eq!((run.keyless, run.keyless_setup()), (Keyless::Allowed, None));
        let provider = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-2.amazonaws.com/id/ABC";
        let irsa = parse(&["--oidc-provider-arn", provider, "--keyless=required"]).expect("irsa");
        assert_eq!(irsa.keyless, Keyless::Required);
        assert!(
            matches!(irsa.keyless_setup(), Some(Setup::Irsa { issuer, .. }) if issuer.ends_with("/id/ABC"))
        );
        let bad =
            parse(&["--oidc-provider-arn", "oidc.eks.eu-west-2.amazonaws.com/id/ABC"]).expect_err("bad");
        assert!(bad.contains("not an IAM OIDC provider ARN"), "{bad}");
        let pod_identity = parse(&["--pod-identity-cluster-name", "prod-eu_1"]).expect("pod identity");
        assert_eq!(
            pod_identity.keyless_setup(),
            Some(Setup::PodIdentity { cluster: "prod-eu_1".to_owned() })
        );
        let both = parse(&["--oidc-provider-arn", provider, "--pod-identity-cluster-name", "prod"])
            .expect_err("both");
        assert!(both.contains("cannot be used with"), "{both}");
        for bad in ["", "-prod", "prod cluster", &"x".repeat(101)] {
            let refused = parse(&[&format!("--pod-identity-cluster-name={bad}")]).expect_err(bad);
            assert!(refused.contains("not an EKS cluster name"), "{refused}");
        }
        assert!(parse(&["--keyless", "sometimes"]).is_err());
    }

    #[test]
    fn defaults_match_the_design() {
        let run = parse(&[]).expect("defaults parse");
        assert_eq!(run.bucket_prefix, "bucket-broker-");
        assert_eq!(run.user_prefix, "bucket-broker-");
        assert_eq!(run.iam_path, "/bucket-broker/");
        assert!(run.require_tls);
        assert!(!run.leader_election);
        assert_eq!(run.leader_election_lease_name, "bucket-broker");
        let named = parse(&["--leader-election-lease-name", "bucket-broker-eu"]).expect("a name");
        assert_eq!(named.leader_election_lease_name, "bucket-broker-eu");
        for bad in ["Bucket_Broker", "-x", "a..b"] {
            let refused = parse(&[&format!("--leader-election-lease-name={bad}")]).expect_err(bad);
            assert!(refused.contains("not a Lease name"), "{refused}");
        }
        assert_eq!(run.resync_interval, HumanDuration(Duration::from_secs(600)));
        assert!(run.platform_cidrs.is_empty());
        assert_eq!(run.namespace, None);
    }

    #[test]
    fn every_flag_parses() {
        let run = parse(&[
            "--region=eu-west-2",
            "--deploy-env=prod",
            "--bucket-prefix=paas-s3-",
            "--user-prefix=paas-s3-",
            "--iam-path=/paas/s3/",
            "--platform-cidrs=10.0.0.0/16,2001:db8::/32",
            "--platform-vpc-endpoints=vpce-0123abcd",
            "--platform-vpcs=vpc-0a1b2c3d,vpc-99",
            "--max-key-age=90d",
            "--cluster-name=eks-prod-1",
            "--aws-iam-rate=2.5",
            "--permissions-boundary-arn=arn:aws:iam::123456789012:policy/boundary",
            "--common-user-policy-arn=arn:aws-us-gov:iam::123456789012:policy/common",
            "--require-tls=false",
            "--aws-endpoint-url=http://127.0.0.1:5000/",
            "--resync-interval=90s",
            "--concurrency=8",
            "--namespace=team-a",
            "--metrics-addr=127.0.0.1:9090",
            "--leader-election",
            "--log-format=json",
        ])
        .expect("all flags parse");
        assert_eq!(run.region.as_deref(), Some("eu-west-2"));
        assert_eq!(
            run.platform_cidrs.iter().map(Cidr::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/16", "2001:db8::/32"]
        );
        assert_eq!(run.platform_vpcs, ["vpc-0a1b2c3d", "vpc-99"]);
        assert_eq!(run.max_key_age, Some(HumanDuration(Duration::from_secs(90 * 86_400))));
        assert_eq!(run.cluster_name, "eks-prod-1");
        assert_eq!(
            run.permissions_boundary_arn,
            Some(Boundary::Arn("arn:aws:iam::123456789012:policy/boundary".to_owned()))
        );
        let none = parse(&["--permissions-boundary-arn=none"]).expect("none parses");
        assert_eq!(none.permissions_boundary_arn, Some(Boundary::None));
        assert_eq!(
            parse(&[]).expect("defaults").permissions_boundary_arn,
            None,
            "refused at start, not here"
        );
        assert_eq!(run.aws_iam_rate, 2.5);
        assert_eq!(run.aws_s3_rate, 100.0, "the default");
        assert!(!run.require_tls);
        assert!(run.leader_election);
        assert_eq!(run.aws_endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(run.resync_interval.0, Duration::from_secs(90));
        assert_eq!(run.concurrency, 8);
        assert_eq!(run.log_format, LogFormat::Json);
    }

    #[test]
    fn booleans_take_a_value_with_or_without_equals() {
        for (args, require_tls, leader_election) in [
            (&["--require-tls", "false"][..], false, false),
            (&["--require-tls=false"][..], false, false),
            (&["--require-tls"][..], true, false),
            (&["--leader-election"][..], true, true),
            (&["--leader-election", "--require-tls", "false"][..], false, true),
            (&["--leader-election", "true", "--require-tls", "true"][..], true, true),
            (&["--leader-election=false"][..], true, false),
        ] {
            let run = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!((run.require_tls, run.leader_election), (require_tls, leader_election), "{args:?}");
        }
        let err = parse(&["--require-tls", "no"]).expect_err("not a boolean");
        assert!(
            err.contains("invalid value 'no'") && err.contains("[possible values: true, false]"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_rejected_with_a_clear_message() {
        let cases: &[(&str, &str)] = &[
            ("--bucket-prefix=a-very-long-bucket-prefix-of-30c", "at most 27"),
            ("--bucket-prefix=Upper-", "lowercase"),
            ("--user-prefix=a-user-prefix-that-is-too-long-29", "at most 28"),
            ("--iam-path=bucket-broker/", "start and end with '/'"),
            ("--iam-path=/bucket-broker", "start and end with '/'"),
            ("--platform-cidrs=10.0.0.0", "not a CIDR"),
            ("--platform-cidrs=10.0.0.0/33", "at most 32"),
            ("--platform-cidrs=10.0.0.300/8", "not a CIDR"),
            ("--platform-vpc-endpoints=vpc-123", "not a VPC endpoint id"),
            ("--platform-vpcs=vpce-123", "not a VPC id"),
            ("--max-key-age=3w", "not a duration"),
            ("--cluster-name=prod cluster", "not a cluster name"),
            ("--aws-iam-rate=0", "not a rate"),
            ("--permissions-boundary-arn=boundary", "not an IAM policy ARN"),
            ("--aws-endpoint-url=localhost:5000", "not an http:// or https:// URL"),
            ("--resync-interval=10", "not a duration"),
            ("--resync-interval=0s", "longer than zero"),
            ("--concurrency=0", "0"),
            ("--region=EU_WEST", "not an AWS region"),
            ("--namespace=Team", "not a valid namespace"),
        ];
        for (arg, expected) in cases {
            let err = parse(&[arg]).expect_err(arg);
            assert!(err.contains(expected), "{arg}: {err:?} does not mention {expected:?}");
        }
    }

    #[test]
    fn the_orphan_sweep_runs_hourly_and_zero_turns_it_off() {
        assert_eq!(parse(&[]).expect("defaults").orphan_sweep_interval.0, Duration::from_secs(3600));
        let off = parse(&["--orphan-sweep-interval=0"]).expect("0 parses");
        assert_eq!(off.orphan_sweep_interval.0, Duration::ZERO);
        assert_eq!(
            parse(&["--orphan-sweep-interval=15m"]).expect("15m").orphan_sweep_interval.0.as_secs(),
            900
        );
        let err = parse(&["--orphan-sweep-interval=often"]).expect_err("not a duration");
        assert!(err.contains("not a duration"), "{err}");
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == "bucket_prefix").expect("bucket_prefix flag");
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some("BUCKET_BROKER_BUCKET_PREFIX"));
        let missing: Vec<_> = cmd
            .get_arguments()
            .filter(|a| a.get_env().is_none() && a.get_id() != "help")
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(missing.is_empty(), "flags without an environment variable: {missing:?}");
    }
}
