//! Which layer of which platform's manifest: `--layer`, `--platform`.

use clap::Args;
use estargz_core::remote::{LayerSelector, Platform};
use estargz_core::Error;

#[derive(Args, Debug, Clone)]
pub struct LayerChoice {
    /// Layer: index (0 = bottom) or digest (sha256:...); default: the only layer.
    #[arg(long, value_name = "N|DIGEST")]
    pub layer: Option<LayerSelector>,
    /// Platform to pick from a multi-platform index (default: this host).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

impl LayerChoice {
    /// The layer asked for; no `--layer` means the image's only layer.
    pub fn selector(&self) -> LayerSelector {
        self.layer.clone().unwrap_or_default()
    }

    /// The platform asked for; `None` means this host's.
    pub fn platform(&self) -> Result<Option<Platform>, Error> {
        self.platform.as_deref().map(Platform::parse).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        choice: LayerChoice,
    }

    fn parse(args: &[&str]) -> Result<LayerChoice, clap::Error> {
        Cmd::try_parse_from(std::iter::once("cmd").chain(args.iter().copied())).map(|c| c.choice)
    }

    #[test]
    fn flags_become_a_selector_and_platform() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.selector(), LayerSelector::Only);
        assert_eq!(c.platform().unwrap(), None);
        let d = format!("sha256:{}", "e".repeat(64));
        let c = parse(&["--layer", &d, "--platform", "linux/arm64/v8"]).unwrap();
        assert_eq!(c.selector(), LayerSelector::Digest(d));
        let p = c.platform().unwrap().unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
        assert_eq!(
            parse(&["--layer", "2"]).unwrap().selector(),
            LayerSelector::Index(2)
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let e = parse(&["--layer=-1"]).unwrap_err().to_string();
        assert!(e.contains("expected a layer index"), "{e}");
        let e = parse(&["--layer", "sha256:"]).unwrap_err().to_string();
        assert!(e.contains("malformed digest"), "{e}");
        let e = parse(&["--platform", "linux"])
            .unwrap()
            .platform()
            .unwrap_err();
        assert!(e.to_string().contains("os/arch"), "{e}");
    }
}
