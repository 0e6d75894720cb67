//! Configuration of the AWS SDK clients: one shared rustls HTTP client (connection pool),
//! standard retries with jittered exponential backoff (throttling included), timeouts,
//! optional endpoint overrides and FIPS endpoints.

use std::time::Duration;

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{
    AppName, BehaviorVersion, Credentials, Region, SharedHttpClient,
};

use super::AwsArgs;

/// Everything the SDK clients of a mount share.
#[derive(Debug, Clone)]
pub struct SdkSettings {
    http: SharedHttpClient,
    retry: RetryConfig,
    timeouts: TimeoutConfig,
    fips: bool,
    sts_endpoint: Option<String>,
    secretsmanager_endpoint: Option<String>,
    ssm_endpoint: Option<String>,
    app_name: AppName,
}

impl SdkSettings {
    /// Settings from the node flags.
    pub fn new(args: &AwsArgs) -> Self {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let retry = RetryConfig::standard()
            .with_max_attempts(args.aws_max_attempts.max(1))
            .with_initial_backoff(args.aws_retry_initial_backoff)
            .with_max_backoff(args.aws_retry_max_backoff);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(args.aws_attempt_timeout)
            .build();
        let endpoint = |e: &Option<String>| {
            e.as_ref()
                .map(|e| e.trim().trim_end_matches('/').to_owned())
                .filter(|e| !e.is_empty())
        };
        Self {
            http,
            retry,
            timeouts,
            fips: args.aws_use_fips_endpoint,
            sts_endpoint: endpoint(&args.aws_sts_endpoint),
            secretsmanager_endpoint: endpoint(&args.aws_secretsmanager_endpoint),
            ssm_endpoint: endpoint(&args.aws_ssm_endpoint),
            app_name: AppName::new("keymount").expect("a valid app name"),
        }
    }

    /// An STS client configuration (no credentials: AssumeRoleWithWebIdentity is unsigned).
    pub fn sts(&self, region: &str) -> aws_sdk_sts::Config {
        let mut b = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .http_client(self.http.clone())
            .retry_config(self.retry.clone())
            .timeout_config(self.timeouts.clone())
            .app_name(self.app_name.clone())
            .use_fips(self.fips);
        if let Some(e) = &self.sts_endpoint {
            b = b.endpoint_url(e);
        }
        b.build()
    }

    /// A Secrets Manager client for `region` with `credentials`.
    pub fn secretsmanager(
        &self,
        region: &str,
        credentials: &Credentials,
    ) -> aws_sdk_secretsmanager::Client {
        let mut b = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials.clone())
            .http_client(self.http.clone())
            .retry_config(self.retry.clone())
            .timeout_config(self.timeouts.clone())
            .app_name(self.app_name.clone())
            .use_fips(self.fips);
        if let Some(e) = &self.secretsmanager_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_secretsmanager::Client::from_conf(b.build())
    }

    /// An SSM client for `region` with `credentials`.
    pub fn ssm(&self, region: &str, credentials: &Credentials) -> aws_sdk_ssm::Client {
        let mut b = aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials.clone())
            .http_client(self.http.clone())
            .retry_config(self.retry.clone())
            .timeout_config(self.timeouts.clone())
            .app_name(self.app_name.clone())
            .use_fips(self.fips);
        if let Some(e) = &self.ssm_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_ssm::Client::from_conf(b.build())
    }
}
