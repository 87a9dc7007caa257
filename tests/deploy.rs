//! `deploy/`: every kustomize overlay renders (`kubectl kustomize`: Debian's kubectl 1.20, which
//! scripts/test.sh fetches when none is on PATH, as well as current ones), validates strictly against
//! the Kubernetes API's schemas (`kubernetes-validate`, offline, its current version) and passes
//! checkov's Kubernetes policies with no failed check (the few skipped ones carry their reason in
//! the manifests' `checkov.io/skip` annotations).

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn every_overlay_renders_validates_and_passes_checkov() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays");
    let tmp = tempfile::tempdir().unwrap();
    for overlay in ["cpu", "gpu", "router", "hpa", "keda"] {
        // stdout only: newer kustomize warns of deprecated fields on stderr
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(root.join(overlay))
            .output()
            .expect("kubectl on PATH (scripts/test.sh fetches Debian's kubernetes-client)");
        assert!(
            out.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout).unwrap();
        assert!(
            rendered.contains("kind: Deployment"),
            "{overlay}: {rendered}"
        );
        let file = tmp.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        run(
            Command::new(weir::testing::venv_bin("kubernetes-validate"))
                .args(["--strict", "--quiet"])
                .arg(&file),
            &format!("kubernetes-validate {overlay}"),
        );
        let report = run(
            Command::new(weir::testing::venv_bin("checkov"))
                .args([
                    "--framework",
                    "kubernetes",
                    "--compact",
                    "--quiet",
                    "--skip-download",
                ])
                .arg("-f")
                .arg(&file),
            &format!("checkov {overlay}"),
        );
        assert!(report.contains("Failed checks: 0"), "{overlay}: {report}");
    }
}
