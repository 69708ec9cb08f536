//! Progress bars for long first runs, drawn on stderr by indicatif (which draws
//! nothing when stderr is not a terminal, so logs and CI output stay clean).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar while more than one git source is fetched and analyzed
/// ([`crate::analyze::Progress`]).
#[derive(Default)]
pub struct SourcesBar(std::sync::OnceLock<ProgressBar>);

impl crate::analyze::Progress for SourcesBar {
    fn start(&self, total: usize, git: usize) {
        if git > 1 {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(style("{spinner} sources {pos}/{len} [{bar:30}] {msg}"));
            let _ = self.0.set(bar);
        }
    }

    fn advance(&self, image: &str) {
        if let Some(bar) = self.0.get() {
            bar.set_message(image.to_string());
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.get() {
            bar.finish_and_clear();
        }
    }
}

/// A bar over one pass of `total` registry checks (the first pass of `run`'s
/// registry watcher); advance it with [`ProgressBar::inc`].
pub fn registry_pass(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(style(
        "{spinner} checking registries {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
    ));
    bar
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}
