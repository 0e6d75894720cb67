//! Configuration of the AWS SDK clients: one shared rustls HTTP client (connection pool),
//! standard retries with jittered exponential backoff (throttling included), timeouts,
//! optional endpoint overrides and FIPS endpoints.

use std::time::Duration;

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{AppName, BehaviorVersion, Credentials, Region};
use aws_types::SdkConfig;

use super::AwsArgs;

/// Everything the SDK clients of a mount share.
#[derive(Debug, Clone)]
pub(crate) struct SdkSettings {
    /// HTTP client, retries, timeouts, FIPS and app name: one configuration for every service.
    shared: SdkConfig,
    sts_endpoint: Option<String>,
    secretsmanager_endpoint: Option<String>,
    ssm_endpoint: Option<String>,
}

impl SdkSettings {
    /// Settings from the node flags.
    pub(crate) fn new(args: &AwsArgs) -> Self {
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
        let shared = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(retry)
            .timeout_config(timeouts)
            .app_name(AppName::new("keymount").expect("a valid app name"))
            .use_fips(args.aws_use_fips_endpoint)
            .build();
        let endpoint = |e: &Option<String>| {
            e.as_ref()
                .map(|e| e.trim().trim_end_matches('/').to_owned())
                .filter(|e| !e.is_empty())
        };
        Self {
            shared,
            sts_endpoint: endpoint(&args.aws_sts_endpoint),
            secretsmanager_endpoint: endpoint(&args.aws_secretsmanager_endpoint),
            ssm_endpoint: endpoint(&args.aws_ssm_endpoint),
        }
    }

    /// The shared configuration in `region`.
    fn regional(&self, region: &str) -> SdkConfig {
        self.shared
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build()
    }

    /// An STS client configuration (no credentials: AssumeRoleWithWebIdentity is unsigned).
    pub(crate) fn sts(&self, region: &str) -> aws_sdk_sts::Config {
        let mut b = aws_sdk_sts::config::Builder::from(&self.regional(region));
        b.set_endpoint_url(self.sts_endpoint.clone());
        b.build()
    }

    /// A Secrets Manager client for `region` with `credentials`.
    pub(crate) fn secretsmanager(
        &self,
        region: &str,
        credentials: &Credentials,
    ) -> aws_sdk_secretsmanager::Client {
        let mut b = aws_sdk_secretsmanager::config::Builder::from(&self.regional(region));
        b.set_endpoint_url(self.secretsmanager_endpoint.clone());
        let config = b.credentials_provider(credentials.clone()).build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }

    /// An SSM client for `region` with `credentials`.
    pub(crate) fn ssm(&self, region: &str, credentials: &Credentials) -> aws_sdk_ssm::Client {
        let mut b = aws_sdk_ssm::config::Builder::from(&self.regional(region));
        b.set_endpoint_url(self.ssm_endpoint.clone());
        aws_sdk_ssm::Client::from_conf(b.credentials_provider(credentials.clone()).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_gets_the_shared_settings() {
        // Endpoints and FIPS are not readable back; the tests against moto use the endpoints.
        let args = AwsArgs {
            aws_use_fips_endpoint: true,
            aws_ssm_endpoint: Some(" http://127.0.0.1:5000/ ".into()),
            aws_max_attempts: 5,
            ..AwsArgs::default()
        };
        let sdk = SdkSettings::new(&args);
        let credentials = Credentials::new("a", "b", None, None, "test");
        let sts = sdk.sts("eu-west-1");
        let ssm = sdk.ssm("eu-west-1", &credentials);
        let sm = sdk.secretsmanager("eu-west-2", &credentials);
        assert_eq!(sts.region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(sm.config().region().unwrap().as_ref(), "eu-west-2");
        assert_eq!(sts.app_name().unwrap().as_ref(), "keymount");
        assert_eq!(sm.config().retry_config().unwrap().max_attempts(), 5);
        assert!(ssm.config().http_client().is_some() && sts.http_client().is_some());
        assert_eq!(ssm.config().region().unwrap().as_ref(), "eu-west-1");
    }
}
