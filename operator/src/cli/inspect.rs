//! `image-factory inspect REF... [--base REF] [--platform P] [--output text|json]`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::Output;
use crate::reference::Reference;
use tracing::debug;

use crate::enrollment::Enrollment;
use crate::registry::inspect::{staleness, without_attestation_manifests};
use crate::registry::{
    ClientSettings, CredentialStore, Inspection, Platform, RegistryClient, RegistryError,
};
use crate::verify::{KeySource, Requirement, Verifier, VerifyMode, VerifyPolicy};

/// Arguments of `image-factory inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Image references (`alpine:3.19`, `ghcr.io/org/app@sha256:…`), Docker-normalized.
    #[arg(required = true, value_name = "REF")]
    pub references: Vec<String>,
    /// A base image: report whether each image is built on its current digest
    /// (`stale`), by the OCI base annotations, else by layer prefix.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Platform inspected in multi-arch images, `os/arch[/variant]`.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    pub platform: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Per-registry settings (YAML: `default:` and `registries: {HOST: {...}}` with
    /// `mirrors`, `caBundle`, `insecure`, `plainHttp`, `requestsPerSecond`,
    /// `maxConcurrency`, `maxAttempts`, `timeoutMs`, …).
    #[arg(long, value_name = "FILE", env = "IMAGE_FACTORY_REGISTRY_SETTINGS")]
    pub registry_settings: Option<PathBuf>,
    /// Also check each digest's cosign signature, under the `verify:` policy that
    /// `--enrollment` gives the image (its own, else `defaults.verify`), or against
    /// `--key`. An unverified digest exits 1 under `mode: enforce`.
    #[arg(long)]
    pub verify: bool,
    /// With `--verify`: the cosign public key (PEM file) to verify with, instead of the
    /// enrollment's policy.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub key: Option<PathBuf>,
    /// With `--verify`: the enrollment whose `verify:` policies apply.
    #[arg(long, value_name = "FILE", default_value = "images.yaml")]
    pub enrollment: PathBuf,
}

/// One line of `inspect --output json`: an inspected image, or a reference (image or
/// `--base`) that could not be inspected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Entry {
    /// The image was read.
    Inspected(Box<Inspection>),
    /// The reference could not be read: `{"reference", "role", "error"}`.
    Failed {
        /// The normalized reference.
        reference: String,
        /// `image` for a reference to inspect, `base` for `--base`.
        role: Role,
        /// What failed, as printed on stderr.
        error: String,
    },
}

/// What a reference was given as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One of the `REF…` arguments.
    Image,
    /// The `--base` reference.
    Base,
}

/// Runs `inspect`: prints the inspections to stdout (text or JSON; in JSON, every
/// reference that failed is an entry `{"reference", "role", "error"}` too) and errors to
/// stderr. Exit code 0 when every reference (and `--base`) was inspected, 1 otherwise.
/// The base is read once, before the images, so a missing base is reported as the base.
/// Credentials come from the environment (`DOCKER_CONFIG`, `REGISTRY_AUTH_FILE`,
/// `IMAGE_FACTORY_DOCKERCONFIGJSON`).
///
/// # Errors
/// Bad references, platform, settings or credentials; registry errors are reported per
/// reference and turn into exit code 1 instead.
pub async fn run(args: InspectArgs) -> Result<ExitCode, RegistryError> {
    let platform = Platform::parse(&args.platform)?;
    let references = args
        .references
        .iter()
        .map(|r| Reference::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let base = args.base.as_deref().map(Reference::parse).transpose()?;
    let settings = match &args.registry_settings {
        Some(path) => ClientSettings::from_file(path)?,
        None => ClientSettings::default(),
    };
    let client = RegistryClient::new(settings, CredentialStore::from_environment()?);
    let policies = if args.verify {
        match policies(&args) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    } else {
        None
    };
    let verifier = Verifier::new(client.clone());
    let mut entries = Vec::new();
    let mut failed = false;
    let base_inspection = match &base {
        Some(base) => match client.inspect(base, Some(&platform)).await {
            Ok(inspection) => Some(without_attestation_manifests(inspection)),
            Err(e) => {
                failed = true;
                eprintln!("error: base {base}: {e}");
                entries.push(Entry::Failed {
                    reference: base.to_string(),
                    role: Role::Base,
                    error: e.to_string(),
                });
                None
            }
        },
        None => None,
    };
    for reference in &references {
        match client.inspect(reference, Some(&platform)).await {
            Ok(inspection) => {
                let mut inspection = without_attestation_manifests(inspection);
                if let Some(base) = &base_inspection {
                    let (stale, evidence) = staleness(&inspection, base);
                    debug!(image = %inspection.reference, base = %base.reference, stale, ?evidence, "staleness decided");
                    inspection.stale = Some(stale);
                }
                if let Some(policies) = &policies {
                    match policies.for_reference(reference) {
                        None => {
                            failed = true;
                            eprintln!("error: {reference}: no verify policy applies (set verify: in {} or give --key)", args.enrollment.display());
                        }
                        Some(policy) => match verifier
                            .verify(reference, &inspection.digest, &policy)
                            .await
                        {
                            Ok(judged) => {
                                failed |= judged.check.rejects();
                                inspection.signature = Some(judged.check);
                            }
                            Err(e) => {
                                failed = true;
                                eprintln!("error: {reference}: signature not checked: {e}");
                            }
                        },
                    }
                }
                entries.push(Entry::Inspected(Box::new(inspection)));
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {reference}: {e}");
                entries.push(Entry::Failed {
                    reference: reference.to_string(),
                    role: Role::Image,
                    error: e.to_string(),
                });
            }
        }
    }
    let rendered = match args.output {
        Output::Json => render_json(&entries),
        Output::Text => {
            let inspected: Vec<Inspection> = entries
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Inspected(i) => Some(*i),
                    Entry::Failed { .. } => None,
                })
                .collect();
            render_text(&inspected)
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an inspection failure.
    let _ = writeln!(stdout, "{rendered}");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where `inspect --verify` takes its policy from.
enum Policies {
    /// `--key FILE`: that key, `mode: enforce`, for every reference.
    Key(VerifyPolicy),
    /// The enrollment's `verify:` blocks.
    Enrollment(Box<Enrollment>),
}

impl Policies {
    /// The policy of `reference`: the enrolled image with its repository and tag, else
    /// `defaults.verify`.
    fn for_reference(&self, reference: &Reference) -> Option<VerifyPolicy> {
        match self {
            Self::Key(p) => Some(p.clone()),
            Self::Enrollment(e) => e
                .images
                .iter()
                .find(|i| {
                    i.reference.repo_url() == reference.repo_url()
                        && reference.tag().is_none_or(|t| i.tags.contains(t))
                })
                .map_or(e.defaults_verify.as_ref(), |i| i.verify.as_ref())
                .cloned(),
        }
    }
}

fn policies(args: &InspectArgs) -> Result<Policies, String> {
    if let Some(key) = &args.key {
        return Ok(Policies::Key(VerifyPolicy {
            requirement: Requirement::Key(KeySource::File(key.clone())),
            mode: VerifyMode::Enforce,
        }));
    }
    let path = &args.enrollment;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base_dir = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let enrollment = crate::enrollment::parse(&path.display().to_string(), &text, &base_dir)
        .map_err(|e| match e {
            crate::enrollment::EnrollmentError::Invalid { diagnostics, .. } => diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        })?;
    Ok(Policies::Enrollment(Box::new(enrollment)))
}

/// The JSON array printed by `--output json`: [`Entry`] values, or plain
/// [`Inspection`]s (the same objects as an entry for an inspected image).
pub fn render_json<T: serde::Serialize>(entries: &[T]) -> String {
    serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".to_owned())
}

/// The text printed by `--output text`.
pub fn render_text(inspections: &[Inspection]) -> String {
    let mut out = String::new();
    for (i, x) in inspections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}\n  digest:     {} ({})\n",
            x.reference, x.digest, x.media_type
        ));
        for p in &x.platforms {
            out.push_str(&format!("  platform:   {} {}\n", p.platform, p.digest));
        }
        if let Some(p) = &x.platform {
            out.push_str(&format!("  inspected:  {p} {}\n", x.manifest_digest));
        }
        out.push_str(&format!(
            "  created:    {}\n",
            x.created.as_deref().unwrap_or("-")
        ));
        for (k, v) in &x.labels {
            out.push_str(&format!("  label:      {k}={v}\n"));
        }
        out.push_str(&format!(
            "  base:       {} {}\n",
            x.base.name.as_deref().unwrap_or("-"),
            x.base.digest.as_deref().unwrap_or("-")
        ));
        for l in &x.layers {
            out.push_str(&format!("  layer:      {l}\n"));
        }
        if let Some(stale) = x.stale {
            out.push_str(&format!("  stale:      {stale}\n"));
        }
        if let Some(s) = &x.signature {
            out.push_str(&format!(
                "  signature:  {} (mode {}): {}\n",
                s.verdict, s.mode, s.detail
            ));
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InspectArgs,
    }

    #[test]
    fn arguments_parse_with_defaults() {
        let cli = Cli::try_parse_from(["inspect", "alpine:3.19", "python"]).unwrap();
        assert_eq!(cli.args.references, ["alpine:3.19", "python"]);
        assert_eq!(cli.args.platform, "linux/amd64");
        assert_eq!(cli.args.output, Output::Text);
        let cli = Cli::try_parse_from([
            "inspect",
            "app:1",
            "--base",
            "alpine:3.19",
            "--platform",
            "linux/arm64/v8",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.args.base.as_deref(), Some("alpine:3.19"));
        assert_eq!(cli.args.output, Output::Json);
        assert!(
            Cli::try_parse_from(["inspect"]).is_err(),
            "a reference is required"
        );
    }
}
