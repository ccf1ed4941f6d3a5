//! The AWS edge: database credentials and the CoinGecko key from Secrets Manager, and what IAM
//! database tokens are signed with.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::Credentials;
use secrecy::SecretString;
use serde_json::Value;

use crate::error_chain::error_chain;

/// A failure to get or read a secret. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
#[error("secret {secret_id}: {problem}")]
pub struct SecretError {
    pub secret_id: String,
    pub problem: String,
}

/// Where secrets come from: Secrets Manager in production, anything in tests.
pub trait SecretSource: Send + Sync {
    fn secret_string(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<String, SecretError>> + Send;

    /// The AWS configuration the secrets are read with, which IAM database tokens are then
    /// signed with too; a configuration of its own for a source that has none.
    fn aws_config(&self) -> AwsConfig {
        AwsConfig::default()
    }
}

/// The AWS configuration (region, credentials, the `AWS_ENDPOINT_URL*` overrides), loaded the
/// standard way when first needed and shared by its clones: a run that needs none never loads
/// it, which may look for a region on the network.
#[derive(Clone, Default)]
pub struct AwsConfig(Arc<tokio::sync::OnceCell<aws_config::SdkConfig>>);

impl AwsConfig {
    /// A configuration already loaded (another endpoint, region or credentials than the
    /// environment's).
    pub fn given(config: aws_config::SdkConfig) -> Self {
        Self(Arc::new(tokio::sync::OnceCell::new_with(Some(config))))
    }

    pub async fn get(&self) -> &aws_config::SdkConfig {
        self.0
            .get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
            .await
    }
}

/// What an IAM database token is signed with: AWS credentials, and the time.
pub trait SigningContext: Send + Sync {
    fn credentials(&self) -> impl Future<Output = Result<Credentials, CredentialsError>> + Send;
    fn now(&self) -> SystemTime;
}

/// The process's own AWS credentials (Lambda's execution role, a profile, `AWS_*`) and the clock.
pub struct AwsSigning(pub AwsConfig);

impl SigningContext for AwsSigning {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        use aws_credential_types::provider::ProvideCredentials;
        match self.0.get().await.credentials_provider() {
            Some(provider) => provider.provide_credentials().await,
            None => Err(CredentialsError::not_loaded("no credentials provider")),
        }
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, secret_id: &str) -> Result<String, SecretError> {
        let fail = |problem: String| SecretError {
            secret_id: secret_id.to_string(),
            problem,
        };
        let output = self
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
                // The service's own words, or, when it did not answer, the causes in one line
                // (the SDK's own context is a debug dump of the whole response).
                let cause = match e.as_service_error() {
                    Some(answer) => format!(
                        "{}: {}",
                        answer.code().unwrap_or("error"),
                        answer.message().unwrap_or_default()
                    ),
                    None => error_chain(&e),
                };
                fail(format!(
                    "GetSecretValue failed: {cause} (check DB_SECRET_ID, the function's IAM policy and the network path to Secrets Manager)"
                ))
            })?;
        output
            .secret_string
            .ok_or_else(|| fail("has no SecretString (binary secrets are not supported)".into()))
    }
}

/// Secrets Manager, configured the standard AWS way (`AWS_ENDPOINT_URL_SECRETS_MANAGER` points
/// it elsewhere) when a secret is first read.
#[derive(Default)]
pub struct SecretsManager {
    aws: AwsConfig,
    client: tokio::sync::OnceCell<aws_sdk_secretsmanager::Client>,
}

impl SecretsManager {
    /// Secrets Manager, and the other AWS clients built from it (EventBridge), with `aws`.
    pub fn with_config(aws: AwsConfig) -> Self {
        Self {
            aws,
            client: tokio::sync::OnceCell::new(),
        }
    }
}

impl SecretSource for SecretsManager {
    async fn secret_string(&self, secret_id: &str) -> Result<String, SecretError> {
        let config = self.aws.get().await;
        let client = self
            .client
            .get_or_init(|| async { aws_sdk_secretsmanager::Client::new(config) })
            .await;
        let fail = |problem: String| SecretError {
            secret_id: secret_id.to_string(),
            problem,
        };
        // Said plainly here: the SDK's own errors for these run to a page of debug output.
        if config.region().is_none() {
            return Err(fail(
                "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or AWS_PROFILE to a profile with a region".into(),
            ));
        }
        let outcome = client.secret_string(secret_id).await;
        if outcome.is_err() {
            if let Some(problem) = missing_credentials(config).await {
                return Err(fail(problem));
            }
        }
        outcome
    }

    fn aws_config(&self) -> AwsConfig {
        self.aws.clone()
    }
}

/// What to do when no source of AWS credentials has any.
pub const NO_CREDENTIALS: &str = "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where a role provides them (Lambda's execution role, an EC2 instance profile, an ECS task role)";

/// What to do when no source of AWS credentials has any; `None` when one has.
async fn missing_credentials(config: &aws_config::SdkConfig) -> Option<String> {
    use aws_credential_types::provider::ProvideCredentials;
    let none_found = match config.credentials_provider() {
        None => true,
        Some(provider) => matches!(
            provider.provide_credentials().await,
            Err(CredentialsError::CredentialsNotLoaded(_))
        ),
    };
    none_found.then(|| NO_CREDENTIALS.to_string())
}

/// Database credentials from either secret shape: the RDS-managed master secret
/// (`username`, `password`) or "credentials for RDS" (plus `host`, `port`, `dbname`, `engine`).
#[derive(Debug, Clone)]
pub struct DbCredentials {
    pub username: String,
    pub password: SecretString,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
}

/// Reads a database secret. Errors name the field, never its value.
pub fn parse_db_secret(secret_id: &str, text: &str) -> Result<DbCredentials, SecretError> {
    let fail = |problem: &str| SecretError {
        secret_id: secret_id.to_string(),
        problem: problem.to_string(),
    };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return Err(fail("is not a JSON object with username and password"));
    };
    let text_field = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(fail(&format!("field \"{name}\" is not a non-empty string"))),
    };
    let port = match fields.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().and_then(|p| u16::try_from(p).ok())),
        Some(Value::String(s)) => Some(s.trim().parse::<u16>().ok()),
        Some(_) => Some(None),
    };
    let port = match port {
        Some(None) => return Err(fail("field \"port\" is not a port number")),
        Some(Some(p)) => Some(p),
        None => None,
    };
    if let Some(engine) = text_field("engine")? {
        if !engine.starts_with("postgres") {
            return Err(fail(&format!("is for engine {engine:?}, not PostgreSQL")));
        }
    }
    Ok(DbCredentials {
        username: text_field("username")?.ok_or_else(|| fail("has no \"username\""))?,
        password: text_field("password")?
            .map(SecretString::from)
            .ok_or_else(|| fail("has no \"password\""))?,
        host: text_field("host")?,
        port,
        dbname: text_field("dbname")?,
    })
}

/// The CoinGecko key: the secret's plain text, or its `api_key` field when it is JSON.
pub fn parse_api_key(secret_id: &str, text: &str) -> Result<SecretString, SecretError> {
    let key = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => fields
            .get("api_key")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => Some(text.trim().to_string()),
    };
    key.filter(|k| !k.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| SecretError {
            secret_id: secret_id.to_string(),
            problem: "holds neither a plain API key nor {\"api_key\": \"…\"}".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn rds_managed_master_secret_has_only_username_and_password() {
        let c = parse_db_secret("s", r#"{"username":"postgres","password":"p@ss:w/rd"}"#).unwrap();
        assert_eq!(c.username, "postgres");
        assert_eq!(c.password.expose_secret(), "p@ss:w/rd");
        assert_eq!((c.host, c.port, c.dbname), (None, None, None));
    }

    #[test]
    fn credentials_for_rds_carry_the_endpoint_with_a_numeric_or_string_port() {
        for port in ["5432", "\"5432\""] {
            let text = format!(
                r#"{{"engine":"postgres","host":"db.abc.eu-west-1.rds.amazonaws.com","port":{port},"dbname":"prices","username":"ingest","password":"x"}}"#
            );
            let c = parse_db_secret("s", &text).unwrap();
            assert_eq!(
                c.host.as_deref(),
                Some("db.abc.eu-west-1.rds.amazonaws.com")
            );
            assert_eq!(c.port, Some(5432));
            assert_eq!(c.dbname.as_deref(), Some("prices"));
        }
    }

    #[test]
    fn problems_name_the_field_and_never_the_value() {
        for text in [
            r#"{"username":"u"}"#,
            r#"{"username":"u","password":12345}"#,
            r#"{"username":"u","password":"hunter2","port":"hunter2"}"#,
            r#"{"username":"u","password":"hunter2","engine":"mysql"}"#,
            "hunter2",
        ] {
            let error = parse_db_secret("arn:db", text).unwrap_err().to_string();
            assert!(error.starts_with("secret arn:db"), "{error}");
            assert!(
                !error.contains("hunter2") && !error.contains("12345"),
                "{error}"
            );
        }
    }

    #[test]
    fn api_key_is_plain_text_or_an_api_key_field() {
        assert_eq!(
            parse_api_key("k", " CG-abc \n").unwrap().expose_secret(),
            "CG-abc"
        );
        assert_eq!(
            parse_api_key("k", r#"{"api_key":"CG-def"}"#)
                .unwrap()
                .expose_secret(),
            "CG-def"
        );
        assert!(parse_api_key("k", r#"{"key":"CG-def"}"#).is_err());
    }
}
