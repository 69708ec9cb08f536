//! `image-factory rollback IMAGE [--to DIGEST]`: points a managed image's tag back at
//! an earlier good digest, without a rebuild.
//!
//! The target defaults to [`ImageRuntime::previous_good`] (the newest digest a
//! Succeeded rebuild produced that is not the current one). The manifest is read by
//! digest and `PUT` to the tag unchanged ([`RegistryClient::tag_manifest`]), so the tag
//! then resolves to exactly that digest; the tag is resolved again to check. The
//! runtime record gets a [`Rollback`] (from, to, who, why, when) and its `current`
//! digest, committed through the state journal. Dependents are not rebuilt: a bad
//! digest should also be `block`ed so no rebuild is planned on it.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::decide::{DecideError, Place};
use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::analyze::{self, NoProgress};
use crate::reference::Reference;
use crate::registry::{ClientSettings, CredentialStore, RegistryClient, RegistryError};
use crate::runtime::{Digest, ImageRuntime, Mark, Observed, Rollback};
use crate::state::{self, Changes, FileStore};

/// Why a rollback was not done.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Loading the graph or state failed.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// Reading or writing state failed.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The image is not a managed image of `images.yaml`.
    #[error("{image} is not a managed image of images.yaml; only images the factory builds can be rolled back")]
    NotManaged {
        /// As given.
        image: String,
    },
    /// No target digest: none given and none recorded.
    #[error("no earlier good digest of {image} is recorded; name one with --to sha256:…")]
    NoPreviousGood {
        /// The image.
        image: String,
    },
    /// `--to` is not a digest.
    #[error("--to {given:?} is not a digest; write sha256:<64 hex>")]
    BadDigest {
        /// As given.
        given: String,
    },
    /// The tag already points there.
    #[error("{reference} already points at {digest}")]
    AlreadyThere {
        /// The tag.
        reference: String,
        /// Its digest.
        digest: String,
    },
    /// The running factory did not record the rollback (the registry was changed).
    #[error("the tag was moved, but the running factory did not record it: {0}")]
    NotRecorded(String),
    /// After the PUT the tag resolves elsewhere.
    #[error("{reference} resolves to {got} after the rollback, not {wanted}")]
    NotApplied {
        /// The tag.
        reference: String,
        /// Asked for.
        wanted: String,
        /// Seen.
        got: String,
    },
}

impl RollbackError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::NotManaged { .. }
            | Self::NoPreviousGood { .. }
            | Self::BadDigest { .. }
            | Self::AlreadyThere { .. } => EXIT_FINDINGS,
            _ => EXIT_ERROR,
        }
    }
}

/// What a rollback is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// Graph name of the managed image.
    pub image: String,
    /// The digest to return to; default the previous good one.
    pub to: Option<String>,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Runs `rollback` and prints what was done; returns the exit code (0 done, 1 refused,
/// 2 registry or I/O error).
pub fn run(place: &Place, request: Request, settings: ClientSettings) -> u8 {
    let Some(runtime) = super::async_runtime() else {
        return EXIT_ERROR;
    };
    let credentials = match CredentialStore::from_environment() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let client = RegistryClient::new(settings, credentials);
    match runtime.block_on(rollback(place, &request, &client, Timestamp::now())) {
        Ok(line) => {
            println!("{line}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Points the image's tag at the target digest and records it; returns one line.
///
/// # Errors
///
/// Any [`RollbackError`]. State is written only after the registry shows the tag at
/// the target digest; the registry is not touched when the request is refused.
pub async fn rollback(
    place: &Place,
    request: &Request,
    client: &RegistryClient,
    now: Timestamp,
) -> Result<String, RollbackError> {
    let model = analyze::model_named(&place.file, &place.cache_dir, &place.state_dir, &NoProgress)
        .map_err(DecideError::from)?;
    let Some(image) = model
        .enrollment
        .images
        .iter()
        .find(|i| i.name == request.image && i.is_managed())
    else {
        return Err(RollbackError::NotManaged {
            image: request.image.clone(),
        });
    };
    // When a factory runs on the state folder, it records the rollback (it owns the
    // runtime records); otherwise this process does, holding the lock.
    let lock = match crate::inbox::OwnerLock::acquire(&place.state_dir) {
        Ok(lock) => Some(lock),
        Err(crate::inbox::InboxError::Held { .. }) => None,
        Err(e) => return Err(DecideError::from(e).into()),
    };
    let store = FileStore::open(&place.state_dir)?;
    let records = state::load_runtime(&store, &model.graph)?;
    let mut record = records
        .get(&image.name)
        .cloned()
        .unwrap_or_else(|| ImageRuntime::new(image.reference.to_string()));
    let to = match &request.to {
        Some(given) => Digest::parse(given).map_err(|_| RollbackError::BadDigest {
            given: given.clone(),
        })?,
        None => record
            .previous_good()
            .cloned()
            .ok_or_else(|| RollbackError::NoPreviousGood {
                image: image.name.clone(),
            })?,
    };
    let reference: &Reference = &image.reference;
    client.new_scan();
    let now_at = client.resolve(reference).await?;
    if now_at.digest == to.as_str() {
        return Err(RollbackError::AlreadyThere {
            reference: reference.to_string(),
            digest: now_at.digest,
        });
    }
    let from = Digest::parse(&now_at.digest).map_err(|_| RollbackError::BadDigest {
        given: now_at.digest.clone(),
    })?;
    client.tag_manifest(reference, to.as_str()).await?;
    for tag in image
        .tags
        .iter()
        .filter(|t| Some(t.as_str()) != reference.tag())
    {
        client
            .tag_manifest(&reference.with_tag(tag.as_str()), to.as_str())
            .await?;
    }
    client.new_scan();
    let after = client.resolve(reference).await?;
    if after.digest != to.as_str() {
        return Err(RollbackError::NotApplied {
            reference: reference.to_string(),
            wanted: to.to_string(),
            got: after.digest,
        });
    }
    let platforms: BTreeMap<String, Digest> = after
        .platforms
        .iter()
        .filter_map(|p| Some((p.platform.clone(), Digest::parse(&p.digest).ok()?)))
        .collect();
    let tag = reference.tag().unwrap_or("latest").to_string();
    if lock.is_none() {
        let request = crate::inbox::Request::Rollback {
            image: image.name.clone(),
            tag,
            from: from.clone(),
            to: to.clone(),
            platforms,
            by: request.by.clone(),
            reason: request.reason.clone(),
        };
        let reply = crate::inbox::submit(&place.state_dir, &request)
            .and_then(|id| {
                crate::inbox::wait_reply(&place.state_dir, &id, super::decide::REPLY_TIMEOUT)
            })
            .map_err(|e| RollbackError::NotRecorded(e.to_string()))?;
        if let Some(e) = reply.error {
            return Err(RollbackError::NotRecorded(e));
        }
        return Ok(format!(
            "rolled back {reference}: {from} → {to} (recorded by the running factory)"
        ));
    }
    record_rollback(
        &mut record,
        &tag,
        (&from, &to),
        platforms,
        Mark {
            by: request.by.clone(),
            reason: request.reason.clone(),
            at: crate::runtime::to_second(now),
        },
    );
    let mut changes = Changes::default();
    state::stage_runtime(&mut changes, &record)?;
    state::journal::commit(&place.state_dir, &changes)?;
    Ok(format!(
        "rolled back {reference}: {from} → {to} (recorded in {})",
        place.state_dir.display()
    ))
}

/// Records in `record` that its tag `tag` was moved from `from_to.0` to `from_to.1`
/// (`platforms`: the per-platform digests of the target) by `mark`'s person: the new
/// `current` digest and a [`Rollback`] entry.
pub fn record_rollback(
    record: &mut ImageRuntime,
    tag: &str,
    from_to: (&Digest, &Digest),
    platforms: BTreeMap<String, Digest>,
    mark: Mark,
) {
    let (from, to) = from_to;
    record.current = Some(Observed {
        tag: tag.to_string(),
        digest: to.clone(),
        platforms,
        first_seen: mark.at,
    });
    record.rollbacks.push(Rollback {
        from: from.clone(),
        to: to.clone(),
        mark,
    });
}
