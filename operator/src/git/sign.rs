//! Signed commits. git2 makes this cheap: `commit_create_buffer` gives the exact bytes git
//! signs, `commit_signed` stores them with the signature in the `gpgsig` header. The
//! signature itself comes from `ssh-keygen -Y sign -n git`, as git does for
//! `gpg.format=ssh`, so `git verify-commit` with an allowed-signers file checks it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::GitError;

/// A commit signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// An SSH private key file (unencrypted, or loaded in `ssh-agent`), signed with
    /// `ssh-keygen -Y sign -n git` (git-config(1) `gpg.format=ssh`).
    Ssh(PathBuf),
}

impl SigningKey {
    /// Signs `content` (a commit object's bytes), giving an armored signature.
    ///
    /// # Errors
    ///
    /// [`GitError::Sign`] when `ssh-keygen` is missing or fails.
    pub fn sign(&self, content: &[u8]) -> Result<String, GitError> {
        let Self::Ssh(key) = self;
        let fail = |message: String| GitError::Sign {
            key: key.clone(),
            message,
        };
        let mut child = Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "git", "-q", "-f"])
            .arg(key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run ssh-keygen: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(content)
                .map_err(|e| fail(format!("cannot write to ssh-keygen: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("ssh-keygen failed: {e}")))?;
        if !out.status.success() {
            return Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
