//! Reading SSM Parameter Store: `GetParameters` with decryption (SecureString) in calls of up
//! to 10 names, each name suffixed `:<version>` or `:<label>` when pinned, the calls run
//! concurrently up to a bound. A name the answer lists as invalid is NOT_FOUND.

use std::sync::Arc;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::Parameter;
use tonic::Code;

use super::error::{AwsError, Failure, classify};
use super::files::{Outcome, Request, Value, gather};
use crate::redact::Redacted;

/// Most names one `GetParameters` call takes.
pub(crate) const BATCH: usize = 10;

fn failed(request: &Request, region: &str, failure: Failure) -> AwsError {
    AwsError::Fetch {
        object: request.object.clone(),
        service: "ssm",
        name: selected_name(request),
        region: region.to_owned(),
        failure: Box::new(failure),
    }
}

/// The name as sent: `name`, `name:3` or `name:label`.
fn selected_name(request: &Request) -> String {
    let t = &request.target;
    match (&t.version_id, &t.version_label) {
        (Some(v), _) => format!("{}:{v}", t.name),
        (None, Some(l)) => format!("{}:{l}", t.name),
        (None, None) => t.name.clone(),
    }
}

/// True when `p` answers `request`. A batch never holds one name twice (see [`batches`]),
/// so the name decides; a pinned version is checked too.
fn answers(p: &Parameter, request: &Request) -> bool {
    let t = &request.target;
    let named = p.name() == Some(t.name.as_str()) || p.arn() == Some(t.name.as_str());
    named
        && t.version_id
            .as_ref()
            .is_none_or(|v| p.version().to_string() == *v)
}

/// Groups requests into calls of at most [`BATCH`] names, no name twice in one call (the
/// answer does not always say which selector a parameter answers).
fn batches(requests: &[Request]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let name = &request.target.name;
        let free = out
            .iter_mut()
            .find(|b| b.len() < BATCH && b.iter().all(|&j| requests[j].target.name != *name));
        match free {
            Some(batch) => batch.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// Reads `requests` from `region`; one outcome per request, in order.
pub(crate) async fn fetch(
    client: &Client,
    region: &str,
    requests: &[Request],
    concurrency: usize,
) -> Vec<Outcome> {
    let calls = batches(requests)
        .into_iter()
        .map(|chunk| batch(client, region, requests, chunk))
        .collect::<Vec<_>>();
    gather(calls, requests.len(), concurrency).await
}

async fn batch(
    client: &Client,
    region: &str,
    requests: &[Request],
    chunk: Vec<usize>,
) -> Vec<(usize, Outcome)> {
    let names: Vec<String> = chunk.iter().map(|&i| selected_name(&requests[i])).collect();
    let answer = client
        .get_parameters()
        .set_names(Some(names))
        .with_decryption(true)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let failure = classify(&e);
            return chunk
                .into_iter()
                .map(|i| (i, Err(failed(&requests[i], region, failure.clone()))))
                .collect();
        }
    };
    chunk
        .into_iter()
        .map(|i| {
            let request = &requests[i];
            let sent = selected_name(request);
            if let Some(p) = answer.parameters().iter().find(|p| answers(p, request)) {
                let v = Value {
                    bytes: Redacted::new(p.value().unwrap_or_default().as_bytes().to_vec()),
                    version: p.version().to_string(),
                };
                return (i, Ok(Arc::new(v)));
            }
            let invalid = answer.invalid_parameters().contains(&sent);
            let failure = if invalid {
                Failure {
                    code: Code::NotFound,
                    aws_code: "ParameterNotFound".into(),
                    detail: "listed in InvalidParameters: no such parameter, version or label"
                        .into(),
                }
            } else {
                Failure {
                    code: Code::Unknown,
                    aws_code: "MissingFromAnswer".into(),
                    detail: "GetParameters answered without it".into(),
                }
            };
            (i, Err(failed(request, region, failure)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::params::{ObjectType, Target};

    fn request(name: &str, version: Option<&str>) -> Request {
        Request {
            target: Target {
                kind: ObjectType::SsmParameter,
                name: name.into(),
                version_id: version.map(Into::into),
                version_label: None,
            },
            object: "objects[0]".into(),
        }
    }

    #[test]
    fn batches_hold_ten_distinct_names() {
        let mut requests: Vec<Request> =
            (0..15).map(|i| request(&format!("/p/{i}"), None)).collect();
        requests.push(request("/p/0", Some("1")));
        let b = batches(&requests);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [10, 6]);
        assert!(b[1].contains(&15));
        let same: Vec<Request> = (1..=3)
            .map(|v| request("/x", Some(&v.to_string())))
            .collect();
        assert_eq!(batches(&same).len(), 3);
        assert_eq!(selected_name(&same[1]), "/x:2");
    }
}
