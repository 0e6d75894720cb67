//! Reading Secrets Manager: current versions in `BatchGetSecretValue` calls of up to 20 ids,
//! pinned versions (`objectVersion`, `objectVersionLabel`) with `GetSecretValue`, the calls
//! run concurrently up to a bound. Binary secrets are returned as their bytes.

use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use futures::future::BoxFuture;

use super::error::{AwsError, Failure, classify, code_of};
use super::files::{Outcome, Request, Value, gather};
use crate::redact::Redacted;
use crate::text::detail;

/// Most ids one `BatchGetSecretValue` call takes.
pub(crate) const BATCH: usize = 20;

fn failed(request: &Request, region: &str, failure: Failure) -> AwsError {
    AwsError::Fetch {
        object: request.object.clone(),
        service: "secretsmanager",
        name: request.target.name.clone(),
        region: region.to_owned(),
        failure: Box::new(failure),
    }
}

fn value(
    string: Option<&str>,
    binary: Option<&aws_sdk_secretsmanager::primitives::Blob>,
    version: Option<&str>,
) -> Value {
    let bytes = match (string, binary) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, Some(b)) => b.as_ref().to_vec(),
        (None, None) => Vec::new(),
    };
    Value {
        bytes: Redacted::new(bytes),
        version: version.unwrap_or_default().to_owned(),
    }
}

/// Reads `requests` from `region`; one outcome per request, in order.
pub(crate) async fn fetch(
    client: &Client,
    region: &str,
    requests: &[Request],
    concurrency: usize,
) -> Vec<Outcome> {
    let (current, pinned): (Vec<usize>, Vec<usize>) = (0..requests.len()).partition(|&i| {
        let t = &requests[i].target;
        t.version_id.is_none() && t.version_label.is_none()
    });
    let mut calls: Vec<BoxFuture<'_, Vec<(usize, Outcome)>>> = Vec::new();
    for chunk in current.chunks(BATCH) {
        calls.push(Box::pin(batch(client, region, requests, chunk.to_vec())));
    }
    for i in pinned {
        calls.push(Box::pin(async move {
            vec![(i, single(client, region, &requests[i]).await)]
        }));
    }
    gather(calls, requests.len(), concurrency).await
}

/// One `GetSecretValue`.
async fn single(client: &Client, region: &str, request: &Request) -> Outcome {
    let t = &request.target;
    let answer = client
        .get_secret_value()
        .secret_id(&t.name)
        .set_version_id(t.version_id.clone())
        .set_version_stage(t.version_label.clone())
        .send()
        .await
        .map_err(|e| failed(request, region, classify(&e)))?;
    Ok(Arc::new(value(
        answer.secret_string(),
        answer.secret_binary(),
        answer.version_id(),
    )))
}

/// One `BatchGetSecretValue` for the requests `chunk`. Ids the answer does not account for,
/// and whole batches refused as AccessDenied (an IAM policy granting only
/// `secretsmanager:GetSecretValue`, as ASCP needs), are read one by one.
async fn batch(
    client: &Client,
    region: &str,
    requests: &[Request],
    chunk: Vec<usize>,
) -> Vec<(usize, Outcome)> {
    let ids: Vec<String> = chunk
        .iter()
        .map(|&i| requests[i].target.name.clone())
        .collect();
    let answer = client
        .batch_get_secret_value()
        .set_secret_id_list(Some(ids))
        .send()
        .await;
    let mut done = Vec::with_capacity(chunk.len());
    let mut one_by_one = Vec::new();
    match answer {
        Ok(answer) => {
            for i in chunk {
                let name = requests[i].target.name.as_str();
                let entry = answer
                    .secret_values()
                    .iter()
                    .find(|e| e.name() == Some(name) || e.arn() == Some(name));
                if let Some(e) = entry {
                    let v = value(e.secret_string(), e.secret_binary(), e.version_id());
                    done.push((i, Ok(Arc::new(v))));
                    continue;
                }
                let error = answer.errors().iter().find(|e| e.secret_id() == Some(name));
                match error {
                    Some(e) => {
                        let aws_code = e.error_code().unwrap_or("Unknown").to_owned();
                        let failure = Failure {
                            code: code_of(&aws_code, None),
                            detail: detail(e.message().unwrap_or("no details")),
                            aws_code,
                        };
                        done.push((i, Err(failed(&requests[i], region, failure))));
                    }
                    None => one_by_one.push(i),
                }
            }
        }
        Err(e) => {
            let failure = classify(&e);
            if failure.code == tonic::Code::PermissionDenied {
                tracing::debug!(
                    region,
                    aws_code = %failure.aws_code,
                    "BatchGetSecretValue refused; reading the secrets one by one"
                );
                one_by_one = chunk;
            } else {
                for i in chunk {
                    done.push((i, Err(failed(&requests[i], region, failure.clone()))));
                }
            }
        }
    }
    let singles = one_by_one
        .into_iter()
        .map(|i| async move { (i, single(client, region, &requests[i]).await) });
    done.extend(futures::future::join_all(singles).await);
    done
}
