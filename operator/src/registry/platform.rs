//! Platforms `os/arch[/variant]` with Docker's (containerd's) normalization.
//!
//! Source: containerd `platforms.Normalize` (used by Docker and buildah): `aarch64` is
//! `arm64`, the `arm64` variant `v8` is the default and is dropped, `arm` without a
//! variant is `arm/v7`, `x86_64` is `amd64`, `i386` is `386`, `armhf` is `arm/v7`,
//! `armel` is `arm/v6`. So `linux/arm64` and `linux/arm64/v8` are the same platform.

use std::fmt;

/// A platform string did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    /// Not of the form `os/arch[/variant]` with non-empty parts.
    #[error("invalid platform {input:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")]
    Malformed {
        /// The string given.
        input: String,
    },
}

/// A normalized platform. Compare with `==`: both sides are normalized on construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, the platform chosen when none is given (what Kargo and most
    /// clusters run).
    pub fn linux_amd64() -> Self {
        Self::new("linux", "amd64", None)
    }

    /// Builds a normalized platform from its parts (OCI image index `platform.os`,
    /// `platform.architecture`, `platform.variant`).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let variant = variant
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase);
        let (architecture, variant) = normalize_arch(&architecture.to_ascii_lowercase(), variant);
        Self {
            os,
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`.
    ///
    /// # Errors
    /// [`PlatformError::Malformed`] when there are not two or three non-empty parts.
    pub fn parse(input: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = input.trim().split('/').collect();
        let malformed = || PlatformError::Malformed {
            input: input.to_owned(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(malformed());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self::new(os, arch, None)),
            [os, arch, variant] => Ok(Self::new(os, arch, Some(variant))),
            _ => Err(malformed()),
        }
    }

    /// Operating system (`linux`, `windows`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// Architecture in GOARCH spelling (`amd64`, `arm64`, `arm`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Variant after normalization (`v7`; `None` for `arm64/v8` and `amd64`).
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    match arch {
        "i386" => ("386".to_owned(), None),
        "x86_64" | "x86-64" | "amd64" => {
            // amd64 v1 is the baseline and is dropped like arm64 v8.
            let variant = variant.filter(|v| v != "v1");
            ("amd64".to_owned(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_deref() {
                None | Some("8" | "v8" | "v8.0") => None,
                Some("9" | "9.0" | "v9.0") => Some("v9".to_owned()),
                Some(_) => variant,
            };
            ("arm64".to_owned(), variant)
        }
        "armhf" => ("arm".to_owned(), Some("v7".to_owned())),
        "armel" => ("arm".to_owned(), Some("v6".to_owned())),
        "arm" => {
            let variant = match variant.as_deref() {
                None | Some("7") => Some("v7".to_owned()),
                Some(v @ ("5" | "6" | "8")) => Some(format!("v{v}")),
                Some(_) => variant,
            };
            ("arm".to_owned(), variant)
        }
        other => (other.to_owned(), variant),
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`, normalized (`linux/arm64`, `linux/arm/v7`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("linux/arm64", "linux/arm64/v8")]
    #[case("linux/aarch64", "linux/arm64")]
    #[case("linux/arm", "linux/arm/v7")]
    #[case("linux/armhf", "linux/arm/v7")]
    #[case("linux/x86_64", "linux/amd64")]
    #[case("Linux/AMD64", "linux/amd64")]
    #[case("linux/i386", "linux/386")]
    fn equivalent_spellings_are_the_same_platform(#[case] a: &str, #[case] b: &str) {
        assert_eq!(Platform::parse(a).unwrap(), Platform::parse(b).unwrap());
    }

    #[rstest]
    #[case("linux/arm/v6", "linux/arm/v7")]
    #[case("linux/arm64", "linux/amd64")]
    #[case("linux/arm64/v9", "linux/arm64")]
    fn different_platforms_differ(#[case] a: &str, #[case] b: &str) {
        assert_ne!(Platform::parse(a).unwrap(), Platform::parse(b).unwrap());
    }

    #[rstest]
    #[case("linux")]
    #[case("linux/")]
    #[case("/amd64")]
    #[case("linux/arm/v7/x")]
    fn malformed_platforms_are_rejected(#[case] input: &str) {
        assert!(Platform::parse(input).is_err());
    }

    #[test]
    fn display_is_normalized() {
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
    }
}
