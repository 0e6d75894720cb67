//! The built-in `aws` provider: the same SecretProviderClass parameters as
//! secrets-store-csi-driver-provider-aws (Secrets Manager and SSM Parameter Store), served
//! in-process with the pod's own identity (IRSA or EKS Pod Identity).

pub(crate) mod credentials;
pub(crate) mod error;
pub(crate) mod files;
pub(crate) mod identity;
pub(crate) mod objects;
pub(crate) mod params;
pub(crate) mod sdk;
pub(crate) mod secretsmanager;
pub(crate) mod ssm;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::config::Credentials;

use self::credentials::{CredentialCache, POD_IDENTITY_IPV4, POD_IDENTITY_IPV6, Source};
use self::error::AwsError;
use self::files::{Request, Value};
use self::identity::KubeLookups;
use self::params::{AddressType, MountParameters, ObjectType, Target};
use self::sdk::SdkSettings;
use super::{MountInput, MountOutput, Provider, ProviderError};

/// Audience of the IRSA token.
pub(crate) const IRSA_AUDIENCE: &str = "sts.amazonaws.com";
/// Audience of the EKS Pod Identity token.
pub(crate) const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";

/// Node-level settings of the AWS provider.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// Region when a class sets no `region` (else the node's topology.kubernetes.io/region).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Use FIPS endpoints (as ASCP's useFipsEndpoint).
    #[arg(long, env = "AWS_USE_FIPS_ENDPOINT", default_value_t = false)]
    pub aws_use_fips_endpoint: bool,

    /// STS endpoint URL instead of the regional one (tests, private endpoints).
    #[arg(long, env = "KEYMOUNT_AWS_STS_ENDPOINT")]
    pub aws_sts_endpoint: Option<String>,

    /// Secrets Manager endpoint URL instead of the regional one.
    #[arg(long, env = "KEYMOUNT_AWS_SECRETSMANAGER_ENDPOINT")]
    pub aws_secretsmanager_endpoint: Option<String>,

    /// SSM endpoint URL instead of the regional one.
    #[arg(long, env = "KEYMOUNT_AWS_SSM_ENDPOINT")]
    pub aws_ssm_endpoint: Option<String>,

    /// EKS Pod Identity agent credentials URL instead of http://169.254.170.23/v1/credentials
    /// (and [fd00:ec2::23]).
    #[arg(long, env = "KEYMOUNT_AWS_POD_IDENTITY_ENDPOINT")]
    pub aws_pod_identity_endpoint: Option<String>,

    /// Timeout of one call to the Pod Identity agent.
    #[arg(long, env = "KEYMOUNT_AWS_POD_IDENTITY_HTTP_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub aws_pod_identity_http_timeout: Duration,

    /// AWS calls of one mount (batches) run at most this many at once.
    #[arg(long, env = "KEYMOUNT_AWS_CONCURRENCY", default_value_t = 8)]
    pub aws_concurrency: usize,

    /// Attempts per AWS call, retries included (throttling, 5xx, connection failures).
    #[arg(long, env = "KEYMOUNT_AWS_MAX_ATTEMPTS", default_value_t = 3)]
    pub aws_max_attempts: u32,

    /// Base of the jittered exponential backoff between attempts.
    #[arg(long, env = "KEYMOUNT_AWS_RETRY_INITIAL_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub aws_retry_initial_backoff: Duration,

    /// Longest wait between two attempts.
    #[arg(long, env = "KEYMOUNT_AWS_RETRY_MAX_BACKOFF", default_value = "20s", value_parser = humantime::parse_duration)]
    pub aws_retry_max_backoff: Duration,

    /// Deadline of one attempt of an AWS call.
    #[arg(long, env = "KEYMOUNT_AWS_ATTEMPT_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub aws_attempt_timeout: Duration,

    /// Identities whose AWS credentials are cached; 0 fetches credentials for every mount.
    #[arg(long, env = "KEYMOUNT_AWS_CACHE_SIZE", default_value_t = 1000)]
    pub aws_cache_size: usize,
}

impl Default for AwsArgs {
    /// The flag defaults, without reading the environment.
    fn default() -> Self {
        Self {
            aws_region: None,
            aws_use_fips_endpoint: false,
            aws_sts_endpoint: None,
            aws_secretsmanager_endpoint: None,
            aws_ssm_endpoint: None,
            aws_pod_identity_endpoint: None,
            aws_pod_identity_http_timeout: Duration::from_secs(5),
            aws_concurrency: 8,
            aws_max_attempts: 3,
            aws_retry_initial_backoff: Duration::from_secs(1),
            aws_retry_max_backoff: Duration::from_secs(20),
            aws_attempt_timeout: Duration::from_secs(15),
            aws_cache_size: 1000,
        }
    }
}

/// How long a ServiceAccount's role or the node's region is reused by default (as the node's
/// `--api-cache-ttl`).
pub(crate) const DEFAULT_LOOKUP_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The `aws` provider.
#[derive(Debug)]
pub struct AwsProvider {
    args: AwsArgs,
    sdk: SdkSettings,
    credentials: CredentialCache,
    kube: Option<KubeLookups>,
    node: String,
}

impl AwsProvider {
    /// A provider with these node settings. With a client, the role of a pod's ServiceAccount
    /// and this node's (`node`) region label are read from the API server when a volume needs
    /// them, each kept for [`DEFAULT_LOOKUP_TTL`] (see [`Self::with_lookup_ttl`]); without one
    /// (local mode) the class names the role (`roleArn`).
    pub fn new(args: AwsArgs, kube: Option<kube::Client>, node: &str) -> Self {
        Self {
            sdk: SdkSettings::new(&args),
            credentials: CredentialCache::new(
                args.aws_cache_size,
                args.aws_pod_identity_http_timeout,
            ),
            kube: kube.map(|client| KubeLookups::new(client, node, DEFAULT_LOOKUP_TTL)),
            node: node.to_owned(),
            args,
        }
    }

    /// Keeps each ServiceAccount role and the node region read from the API server for `ttl`.
    #[must_use]
    pub(crate) fn with_lookup_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.kube = self.kube.map(|kube| kube.with_ttl(ttl));
        self
    }

    /// Identities with cached credentials (for tests).
    pub fn cached_identities(&self) -> usize {
        self.credentials.len()
    }

    async fn region(&self, params: &MountParameters) -> Result<String, AwsError> {
        if let Some(region) = params
            .region
            .clone()
            .or_else(|| self.args.aws_region.clone())
        {
            return Ok(region);
        }
        if let Some(kube) = &self.kube
            && let Some(region) = kube.node_region().await?
        {
            return Ok(region);
        }
        Err(AwsError::NoRegion {
            node: self.node.clone(),
        })
    }

    async fn credentials(
        &self,
        input: &MountInput,
        params: &MountParameters,
        region: &str,
    ) -> Result<Credentials, AwsError> {
        let audience = if params.use_pod_identity {
            POD_IDENTITY_AUDIENCE
        } else {
            IRSA_AUDIENCE
        };
        let token = &input
            .tokens
            .for_audience(audience)
            .ok_or_else(|| AwsError::MissingToken {
                audience: audience.to_owned(),
                present: input.tokens.audiences().collect::<Vec<_>>().join(", "),
            })?
            .token;
        let account = format!(
            "{}/{}",
            params.pod_namespace.as_deref().unwrap_or_default(),
            params.service_account.as_deref().unwrap_or_default()
        );
        let subject = super::tokens::subject_key(token);
        if params.use_pod_identity {
            let endpoints = match (&self.args.aws_pod_identity_endpoint, params.address_type) {
                (Some(e), _) => vec![e.clone()],
                (None, AddressType::Ipv4) => vec![POD_IDENTITY_IPV4.to_owned()],
                (None, AddressType::Ipv6) => vec![POD_IDENTITY_IPV6.to_owned()],
                (None, AddressType::Auto) => {
                    vec![POD_IDENTITY_IPV4.to_owned(), POD_IDENTITY_IPV6.to_owned()]
                }
            };
            let key = format!("pod-identity|{}|{account}|{subject}", endpoints.join(","));
            let source = Source::PodIdentity { endpoints, token };
            return self.credentials.get(&key, &source, &self.sdk).await;
        }
        let role_arn = match &self.kube {
            Some(kube) => {
                let (Some(ns), Some(sa)) = (&params.pod_namespace, &params.service_account) else {
                    return Err(AwsError::MissingPodInfo {
                        field: "csi.storage.k8s.io/serviceAccount.name",
                    });
                };
                kube.role_arn(ns, sa).await?
            }
            None => params
                .role_arn
                .clone()
                .ok_or(AwsError::MissingRoleParameter)?,
        };
        let key = format!("irsa|{role_arn}|{region}|{account}|{subject}");
        let source = Source::Irsa {
            role_arn: &role_arn,
            region,
            session_name: credentials::session_name(
                params.pod_namespace.as_deref(),
                params.service_account.as_deref(),
            ),
            token,
        };
        self.credentials.get(&key, &source, &self.sdk).await
    }

    async fn mount_inner(&self, input: &MountInput) -> Result<MountOutput, AwsError> {
        let params = MountParameters::parse(&input.attributes, input.permission)?;
        let region = self.region(&params).await?;
        params.check_arn_regions(&region)?;
        let credentials = match self.credentials(input, &params, &region).await {
            // STS of the primary region down: the failover region's STS can still answer.
            Err(e) if e.is_unavailable() && !params.use_pod_identity => {
                match params.failover_region.as_deref() {
                    Some(failover) => {
                        tracing::info!(
                            class = %input.class,
                            region = %region,
                            failover_region = failover,
                            error = %e,
                            "STS unavailable; credentials from the failover region"
                        );
                        self.credentials(input, &params, failover).await?
                    }
                    None => return Err(e),
                }
            }
            other => other?,
        };
        tracing::debug!(
            class = %input.class,
            region = %region,
            failover_region = params.failover_region.as_deref().unwrap_or(""),
            pod_identity = params.use_pod_identity,
            objects = params.objects.len(),
            "reading from AWS"
        );
        let primary: Vec<Request> = params
            .objects
            .iter()
            .map(|o| Request {
                target: o.primary.clone(),
                object: o.at.clone(),
            })
            .collect();
        let mut outcomes = self.read(&region, &credentials, &primary).await;
        if let Some(failover) = &params.failover_region {
            let retry: Vec<usize> = (0..outcomes.len())
                .filter(|&i| matches!(&outcomes[i], Err(e) if e.is_unavailable()))
                .collect();
            if !retry.is_empty() {
                tracing::info!(
                    class = %input.class,
                    region = %region,
                    failover_region = %failover,
                    objects = retry.len(),
                    "primary region unavailable; reading from the failover region"
                );
                let requests: Vec<Request> = retry
                    .iter()
                    .map(|&i| Request {
                        target: params.objects[i].failover.clone(),
                        object: params.objects[i].at.clone(),
                    })
                    .collect();
                let second = self.read(failover, &credentials, &requests).await;
                for (i, outcome) in retry.into_iter().zip(second) {
                    outcomes[i] = outcome;
                }
            }
        }
        let mut out = MountOutput::default();
        for (object, outcome) in params.objects.iter().zip(outcomes) {
            files::add_files(object, outcome?.as_ref(), &mut out)?;
        }
        Ok(out)
    }

    /// Reads `requests` in `region`, each distinct target once; one outcome per request.
    async fn read(
        &self,
        region: &str,
        credentials: &Credentials,
        requests: &[Request],
    ) -> Vec<Result<Arc<Value>, AwsError>> {
        let mut distinct: BTreeMap<Target, usize> = BTreeMap::new();
        let mut by_kind: BTreeMap<ObjectType, Vec<Request>> = BTreeMap::new();
        for r in requests {
            if !distinct.contains_key(&r.target) {
                let list = by_kind.entry(r.target.kind).or_default();
                distinct.insert(r.target.clone(), list.len());
                list.push(r.clone());
            }
        }
        let concurrency = self.args.aws_concurrency;
        let sm_requests = by_kind
            .remove(&ObjectType::SecretsManager)
            .unwrap_or_default();
        let ssm_requests = by_kind
            .remove(&ObjectType::SsmParameter)
            .unwrap_or_default();
        let sm = async {
            if sm_requests.is_empty() {
                return Vec::new();
            }
            let client = self.sdk.secretsmanager(region, credentials);
            secretsmanager::fetch(&client, region, &sm_requests, concurrency).await
        };
        let ps = async {
            if ssm_requests.is_empty() {
                return Vec::new();
            }
            let client = self.sdk.ssm(region, credentials);
            ssm::fetch(&client, region, &ssm_requests, concurrency).await
        };
        let (sm, ps) = futures::join!(sm, ps);
        requests
            .iter()
            .map(|r| {
                let i = distinct[&r.target];
                let list = match r.target.kind {
                    ObjectType::SecretsManager => &sm,
                    ObjectType::SsmParameter => &ps,
                };
                list[i].clone()
            })
            .collect()
    }
}

#[async_trait]
impl Provider for AwsProvider {
    async fn mount(&self, input: &MountInput) -> Result<MountOutput, ProviderError> {
        self.mount_inner(input).await.map_err(ProviderError::from)
    }

    fn class_only_parameters(&self) -> &'static [&'static str] {
        params::CLASS_ONLY
    }

    fn token_audiences(&self, parameters: &BTreeMap<String, String>) -> Vec<String> {
        let pod_identity = parameters
            .get("usePodIdentity")
            .is_some_and(|v| crate::parse::go_bool(v.trim()).unwrap_or(false));
        let audience = if pod_identity {
            POD_IDENTITY_AUDIENCE
        } else {
            IRSA_AUDIENCE
        };
        vec![audience.to_owned()]
    }
}
