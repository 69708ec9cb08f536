//! The on-disk shape of `images.yaml`, exactly as users write it.
//!
//! Every user-written scalar is a [`Located`] value, so semantic checks can point at
//! `images.yaml:LINE:COL`. The JSON Schema printed by `image-factory schema` is derived
//! from these types (schemars), so the schema and the parser cannot drift apart.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// The version of the enrollment schema this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A position in a YAML file: 1-based line and column. `0:0` means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// 1-based line number.
    pub line: u64,
    /// 1-based column number (characters).
    pub column: u64,
}

/// A value together with where it was written. Transparent in the JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where the value starts in the file.
    pub at: Position,
}

impl<T> Located<T> {
    /// A value with no known position (for defaults and tests).
    pub fn unplaced(value: T) -> Self {
        Self {
            value,
            at: Position::default(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Self {
            value: spanned.value,
            at: Position {
                line: spanned.referenced.line(),
                column: spanned.referenced.column(),
            },
        })
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// The whole `images.yaml` file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Image Factory enrollment (images.yaml)")]
pub struct EnrollmentFile {
    /// Schema version of this file. Must be `1`.
    pub version: Located<u32>,
    /// Where generated Kargo Warehouses go.
    #[serde(default)]
    pub kargo: Option<KargoSpec>,
    /// Defaults applied to every image unless the image overrides them.
    #[serde(default)]
    pub defaults: Option<DefaultsSpec>,
    /// The enrolled images: managed (with `source`) and external (without).
    pub images: Vec<ImageSpec>,
}

/// Kargo settings for generated Warehouses and Stages.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KargoSpec {
    /// The Kargo Project (namespace) the Warehouses belong to. Default `image-factory`.
    pub project: Option<Located<String>>,
    /// Also generate one Kargo Stage per managed image whose trigger is
    /// `kargoPromotion` (into `state/stages/`), requesting Freight from the Warehouses of
    /// the image's bases and promoting with `trigger.kargoPromotion.task`. Default `false`
    /// (the Stages are yours to write).
    pub stages: Option<Located<bool>>,
}

/// File-level defaults.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefaultsSpec {
    /// Default rebuild policy.
    pub rebuild: Option<RebuildSpec>,
    /// Default warehouse settings for external and discovered base images.
    pub warehouse: Option<WarehouseSpec>,
    /// Default signature policy for the updates of every image (enrolled or discovered
    /// base) that does not set its own.
    pub verify: Option<VerifySpec>,
}

/// Signature verification of an image's updates before a rebuild may use them
/// (cosign / Sigstore).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifySpec {
    /// `enforce` (default): an update whose digest is not signed as required is skipped
    /// and never used as a base. `warn`: it is used, and the verdict is recorded in the
    /// image's history and logged.
    #[schemars(regex(pattern = r"^(enforce|warn)$"))]
    pub mode: Option<Located<String>>,
    /// The cosign signature required. On an image without it, the one of `defaults`.
    pub cosign: Option<CosignSpec>,
}

/// A cosign requirement: exactly one of `key`, `keyFile`, `secret` or `keyless`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CosignSpec {
    /// The public key, PEM (`-----BEGIN PUBLIC KEY-----`): ECDSA P-256/P-384, RSA or
    /// Ed25519, as `cosign generate-key-pair` writes to `cosign.pub`.
    pub key: Option<Located<String>>,
    /// A PEM public key file, relative to the directory of `images.yaml`.
    pub key_file: Option<Located<String>>,
    /// A key of a Kubernetes Secret holding the PEM public key, read by the controller.
    pub secret: Option<SecretKeySpec>,
    /// Keyless signing: a Fulcio certificate for an identity, logged in Rekor
    /// (cosign v3 bundles and cosign v2 `.sig` layers; see the README).
    pub keyless: Option<KeylessSpec>,
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeySpec {
    /// Namespace; default the controller's own.
    pub namespace: Option<Located<String>>,
    /// Secret name.
    pub name: Located<String>,
    /// Key in the Secret's `data`.
    pub key: Located<String>,
}

/// The identity a keyless signature's certificate must carry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeylessSpec {
    /// Regular expression the certificate identity (SAN: e-mail, URI or Sigstore
    /// username) must match, unanchored like cosign's `--certificate-identity-regexp`,
    /// e.g. `^https://github.com/acme/.+/.github/workflows/release.yaml@refs/tags/.+$`.
    pub identity: Located<String>,
    /// Regular expression the OIDC issuer must match, unanchored, e.g.
    /// `^https://token.actions.githubusercontent.com$`.
    pub issuer: Located<String>,
    /// Whether the Rekor entry's SignedEntryTimestamp must verify with the trusted
    /// root's log key. Default `true`. `false` skips only that check: an entry is still
    /// needed (its integratedTime is the signing time).
    pub rekor: Option<Located<bool>>,
    /// A Sigstore `trusted_root.json` (Fulcio CAs, Rekor and CT log keys), relative to
    /// the directory of `images.yaml`, for a private Sigstore or a newer public-good
    /// root. Default: the public-good root embedded in the binary.
    pub trusted_root: Option<Located<String>>,
}

/// When and whether an image is rebuilt after a base update.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RebuildSpec {
    /// How long a base update is held before dependents rebuild, as a human duration
    /// (`7d`, `36h`, `0s`). Default `7d`.
    pub delay: Option<Located<String>>,
    /// Extra hold for a cascade (a rebuild caused by a rebuilt managed parent). Default `0s`.
    pub cascade_delay: Option<Located<String>>,
    /// Whether eligible rebuilds start on their own (`true`, default) or wait for a person.
    pub auto_rebuild: Option<Located<bool>>,
    /// How many times one rebuild is started before it is given up, the first start
    /// included: 1–20. Default `3`.
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: Option<Located<u32>>,
}

/// Kargo image-subscription settings, with Kargo's own field names.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarehouseSpec {
    /// The repository Kargo watches (no tag). Defaults to the image's repository; set it
    /// to watch a mirror instead.
    #[serde(rename = "repoURL")]
    #[schemars(rename = "repoURL")]
    pub repo_url: Option<Located<String>>,
    /// `Digest` (follow one mutable tag; default), `SemVer`, `Lexical` or `NewestBuild`.
    pub image_selection_strategy: Option<Located<String>>,
    /// Strategy-specific: the tag to follow for `Digest` (defaults to the image's tag), a
    /// semver range for `SemVer` (`^1.26.0`, `>=3.12 <3.13`). Not used by the others.
    pub constraint: Option<Located<String>>,
    /// Only tags matching one of these regular expressions are considered.
    pub allow_tags_regexes: Option<Vec<Located<String>>>,
    /// Tags matching any of these regular expressions are ignored.
    pub ignore_tags_regexes: Option<Vec<Located<String>>>,
    /// `os/arch` whose manifest is watched. Default `linux/amd64`, always written out.
    pub platform: Option<Located<String>>,
    /// Most image revisions Kargo discovers per check, 1–100 (Kargo's default 20).
    pub discovery_limit: Option<Located<u32>>,
    /// For `SemVer`: only tags with major, minor and patch count (Kargo's default true).
    pub strict_semvers: Option<Located<bool>>,
    /// How often Kargo checks the repository, as a human duration. Default `5m`.
    pub interval: Option<Located<String>>,
}

/// One enrollment.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageSpec {
    /// Unique name: lower-case letters, digits and `-`, at most 63 characters (a
    /// Kubernetes label value and DNS label). Names the state file and the Warehouse.
    pub name: Located<String>,
    /// The image reference, `registry/repository[:tag]` (Docker-normalized; tag defaults
    /// to `latest`). For managed images, what the build pushes.
    pub image: Located<String>,
    /// Further tags a managed image's build pushes (for example `latest` next to `3.12`).
    pub tags: Option<Vec<Located<String>>>,
    /// Where the image is built from. Present: managed image. Absent: external image.
    pub source: Option<SourceSpec>,
    /// Build arguments (`--build-arg`), also used to resolve `ARG`s in `FROM` lines.
    pub build_args: Option<BTreeMap<String, Located<String>>>,
    /// How a rebuild is started (managed images only).
    pub trigger: Option<TriggerSpec>,
    /// Rebuild policy overrides.
    pub rebuild: Option<RebuildSpec>,
    /// A check run against each new digest once its completion is verified (managed
    /// images only). A failing test fails the rebuild; its dependents are not rebuilt.
    pub test: Option<ProgramSpec>,
    /// Warehouse settings (external images; for managed images, only where this image
    /// is also a base of others it is watched through its own rebuilds instead).
    pub warehouse: Option<WarehouseSpec>,
    /// Signature policy for this image's updates; overrides `defaults.verify` (a block
    /// with only `mode` keeps the default's `cosign`).
    pub verify: Option<VerifySpec>,
}

/// A managed image's source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceSpec {
    /// A git repository to clone (mutually exclusive with `path`).
    pub git: Option<GitSourceSpec>,
    /// A local directory, relative to the directory of `images.yaml` (not the working
    /// directory), as Docker Compose resolves `build.context`.
    pub path: Option<Located<String>>,
    /// The Dockerfile, relative to the source root and inside it. Default `Dockerfile`.
    pub dockerfile: Option<Located<String>>,
    /// The build context, relative to the source root and inside it. Default `.`.
    pub context: Option<Located<String>>,
}

/// A git source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitSourceSpec {
    /// Clone URL (`https://…`, `ssh://…`, `file://…` or a local path).
    pub url: Located<String>,
    /// Branch, tag or commit to build. Default `HEAD` (the remote's default branch).
    #[serde(rename = "ref")]
    #[schemars(rename = "ref")]
    pub reference: Option<Located<String>>,
}

/// How a rebuild is started. Exactly one backend must be set.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Run a local command; the image reference and base digest come as environment.
    pub command: Option<CommandTriggerSpec>,
    /// POST a JSON payload to a URL.
    pub webhook: Option<WebhookTriggerSpec>,
    /// Dispatch a GitHub Actions workflow (`workflow_dispatch`).
    pub github_workflow: Option<GithubWorkflowTriggerSpec>,
    /// Create a Kubernetes Job from a template.
    pub kubernetes_job: Option<KubernetesJobTriggerSpec>,
    /// Create a Kargo Promotion for a Stage.
    pub kargo_promotion: Option<KargoPromotionTriggerSpec>,
}

/// A program to run: `args` (executed directly, no shell) or `shell` (a string for
/// `/bin/sh -c`), exactly one. Used by `trigger.command` and `test`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProgramSpec {
    /// Program and arguments, not passed through a shell.
    pub args: Option<Vec<Located<String>>>,
    /// A shell command line, run as `/bin/sh -c LINE`.
    pub shell: Option<Located<String>>,
    /// Longest run before the program is killed and the run counts as failed, as a
    /// human duration. Default `1h` for a trigger, `10m` for a test.
    pub timeout: Option<Located<String>>,
}

/// `trigger.command`: see [`ProgramSpec`].
pub type CommandTriggerSpec = ProgramSpec;

/// `trigger.webhook`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookTriggerSpec {
    /// `https://` URL (plain `http://` only to loopback).
    pub url: Located<String>,
    /// Where the bearer token is: `env:NAME`, `file:PATH`, or a bare environment
    /// variable name. Sent as `Authorization: Bearer …`.
    pub token_secret: Option<Located<String>>,
    /// Where the HMAC-SHA256 key for `X-Image-Factory-Signature` is (same forms as
    /// `tokenSecret`). Without it the payload is not signed.
    pub signing_secret: Option<Located<String>>,
    /// Longest wait for the build to finish (status polling, or the new digest in the
    /// registry), as a human duration. Default `1h`.
    pub timeout: Option<Located<String>>,
}

/// `trigger.githubWorkflow`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GithubWorkflowTriggerSpec {
    /// `owner/repo`.
    pub repository: Located<String>,
    /// Workflow file name (`build.yml`) or numeric ID.
    pub workflow: Located<String>,
    /// Git ref to run the workflow on. Default `main`.
    #[serde(rename = "ref")]
    #[schemars(rename = "ref")]
    pub reference: Option<Located<String>>,
    /// Workflow inputs (string values; at most 25 inputs, GitHub's limit, counting the
    /// `rebuild_id` and `bases` inputs the factory adds).
    pub inputs: Option<BTreeMap<String, Located<String>>>,
    /// Where a token is (`env:NAME`, `file:PATH` or a bare variable name). Default
    /// `env:GITHUB_TOKEN` when `app` is not set.
    pub token_secret: Option<Located<String>>,
    /// Authenticate as a GitHub App installation instead of with a token.
    pub app: Option<GithubAppSpec>,
    /// REST API root. Default `https://api.github.com`; set it for GitHub Enterprise
    /// Server (`https://HOST/api/v3`).
    pub api_url: Option<Located<String>>,
    /// Longest wait for the workflow run to finish, as a human duration. Default `2h`.
    pub timeout: Option<Located<String>>,
}

/// `trigger.githubWorkflow.app`: a GitHub App installation.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GithubAppSpec {
    /// The App's ID.
    pub app_id: Located<u64>,
    /// The installation's ID on the repository's owner.
    pub installation_id: Located<u64>,
    /// Where the App's PEM private key is (`env:NAME`, `file:PATH` or a bare variable
    /// name).
    pub private_key_secret: Located<String>,
}

/// `trigger.kubernetesJob`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesJobTriggerSpec {
    /// Namespace the Job is created in.
    pub namespace: Located<String>,
    /// Name of a ConfigMap holding the Job template.
    pub template_config_map: Located<String>,
}

/// `trigger.kargoPromotion`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KargoPromotionTriggerSpec {
    /// The Kargo Stage to promote into.
    pub stage: Located<String>,
    /// The Kargo Project (namespace). Default: the file's `kargo.project`.
    pub project: Option<Located<String>>,
    /// The `PromotionTask` (or `ClusterPromotionTask`, see `taskKind`) whose steps build
    /// the image: the generated Stage's `promotionTemplate.spec.steps` is one step
    /// referencing it. Required when `kargo.stages` is `true`; unused otherwise (the
    /// Stage you write decides the steps).
    pub task: Option<Located<String>>,
    /// `PromotionTask` (default, in the Project) or `ClusterPromotionTask`.
    pub task_kind: Option<Located<String>>,
}
