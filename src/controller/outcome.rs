//! How one sync of a SecretSync ended, as upstream's condition reasons, and the conditions
//! (`Create`, `Update`, `Ready`) that say so.

use super::crd::Condition;

/// Why a sync failed: upstream's reasons, plus `SecretNotManaged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The store refused or failed (including a ServiceAccount it does not trust).
    ProviderError,
    /// The class is missing or names no usable provider.
    ControllerSPCError,
    /// The SecretSync asks for something invalid (type, key, sourcePath, size).
    UserInputValidationFailed,
    /// A label uses the reserved prefix.
    InvalidClusterSecretLabelError,
    /// An annotation uses the reserved prefix.
    InvalidClusterSecretAnnotationError,
    /// A Secret of that name exists and is not this SecretSync's.
    SecretNotManaged,
    /// The API server refused or failed a read or write of the controller's own.
    ControllerInternalError,
}

impl Reason {
    /// The condition reason (also the metrics label).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ProviderError => "ProviderError",
            Self::ControllerSPCError => "ControllerSPCError",
            Self::UserInputValidationFailed => "UserInputValidationFailed",
            Self::InvalidClusterSecretLabelError => "InvalidClusterSecretLabelError",
            Self::InvalidClusterSecretAnnotationError => "InvalidClusterSecretAnnotationError",
            Self::SecretNotManaged => "SecretNotManaged",
            Self::ControllerInternalError => "ControllerInternalError",
        }
    }
}

/// A failed sync: the reason and a message naming objects and the cause, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

/// What a successful sync did to the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// It did not exist; now it does.
    Created,
    /// Its content changed (or a force or spec change asked for a write).
    Updated,
    /// It already held what was asked: nothing written.
    Unchanged,
}

/// One sync's end.
pub(crate) type Outcome = Result<Written, Failure>;

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: String::new(),
        observed_generation: generation,
    }
}

/// The conditions after `outcome`, given whether the Secret existed before (a failure
/// before the first write is a `Create` failure, later ones are `Update` failures).
pub(crate) fn conditions(
    outcome: &Outcome,
    existed: bool,
    previous: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    let keep = |type_: &str| previous.iter().find(|c| c.type_ == type_).cloned();
    let mut out = Vec::new();
    match outcome {
        Ok(Written::Created) => {
            out.push(condition(
                "Create",
                true,
                "CreateSucceeded",
                "The Secret was created.".into(),
                generation,
            ));
        }
        Ok(written) => {
            out.extend(keep("Create"));
            let (reason, message) = if *written == Written::Updated {
                (
                    "ValueChangeOrForceUpdateDetected",
                    "The Secret was updated: a value, the class or the SecretSync changed.",
                )
            } else {
                (
                    "NoValueChange",
                    "The store was read; the Secret already held its values.",
                )
            };
            out.push(condition(
                "Update",
                true,
                reason,
                message.into(),
                generation,
            ));
        }
        Err(failure) => {
            let type_ = if existed { "Update" } else { "Create" };
            if existed {
                out.extend(keep("Create"));
            }
            out.push(condition(
                type_,
                false,
                failure.reason.as_str(),
                failure.message.clone(),
                generation,
            ));
        }
    }
    out.push(match outcome {
        Ok(_) => condition(
            "Ready",
            true,
            "Synced",
            "The Secret holds the store's current values.".into(),
            generation,
        ),
        Err(failure) => condition(
            "Ready",
            false,
            failure.reason.as_str(),
            failure.message.clone(),
            generation,
        ),
    });
    // A condition keeps its transition time while its status stays.
    for c in &mut out {
        c.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .map(|p| p.last_transition_time.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| {
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or_else(|_| jiff::Timestamp::now())
                    .to_string()
            });
    }
    out
}
