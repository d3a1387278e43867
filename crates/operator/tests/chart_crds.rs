//! The Helm chart's CRD templates (`charts/vmcp-operator/templates/crds/`) must be exactly
//! `config/crd/*.yaml` wrapped in the chart's gates: installed only when `crds.install` and the
//! CRD is not held by another release (`vmcp-operator.renderCrd` in `_helpers.tpl`), and
//! annotated `helm.sh/resource-policy: keep` when `crds.keep`.
//!
//! Regenerate after `make crds`:
//!
//! ```sh
//! VMCP_UPDATE_CHART_CRDS=1 cargo test -p vmcp-operator --test chart_crds
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

/// The chart template for one CRD file of `config/crd/`.
fn template(file: &str, crd: &str) -> String {
    assert!(
        !crd.contains("{{") && !crd.contains("}}"),
        "config/crd/{file} contains '{{{{' or '}}}}', which Helm would read as a template action"
    );
    let lines: Vec<&str> = crd.lines().collect();
    let meta = lines.iter().position(|l| *l == "metadata:").expect("a top-level metadata:");
    let block_end = lines[meta + 1..]
        .iter()
        .position(|l| !l.starts_with("  "))
        .map_or(lines.len(), |i| meta + 1 + i);
    assert!(
        !lines[meta + 1..block_end].iter().any(|l| l.starts_with("  annotations:")),
        "config/crd/{file} already has metadata.annotations: teach this generator to merge them"
    );
    let name = lines[meta + 1..block_end]
        .iter()
        .position(|l| l.starts_with("  name: "))
        .map(|i| meta + 1 + i)
        .expect("metadata.name");
    let mut out = String::new();
    out.push_str(&format!(
        "# Generated from config/crd/{file} by crates/operator/tests/chart_crds.rs; do not edit.\n\
         # Regenerate: VMCP_UPDATE_CHART_CRDS=1 cargo test -p vmcp-operator --test chart_crds\n"
    ));
    let crd_name = lines[name].trim_start_matches("  name: ").trim();
    out.push_str(&format!(
        "{{{{- if include \"vmcp-operator.renderCrd\" (list . \"{crd_name}\") }}}}\n"
    ));
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        if i == name {
            out.push_str("  {{- if .Values.crds.keep }}\n");
            out.push_str("  annotations:\n");
            out.push_str("    helm.sh/resource-policy: keep\n");
            out.push_str("  {{- end }}\n");
        }
    }
    out.push_str("{{- end }}\n");
    out
}

#[test]
fn chart_crd_templates_match_config_crd() {
    let crd_dir = root().join("config/crd");
    let chart_dir = root().join("charts/vmcp-operator/templates/crds");
    let update = std::env::var_os("VMCP_UPDATE_CHART_CRDS").is_some();
    let files = yaml_files(&crd_dir);
    assert!(!files.is_empty(), "no CRDs in config/crd/");
    if update {
        std::fs::create_dir_all(&chart_dir).unwrap();
        for stale in yaml_files(&chart_dir) {
            if !files.contains(&stale) {
                std::fs::remove_file(chart_dir.join(stale)).unwrap();
            }
        }
    }
    for file in &files {
        let crd = std::fs::read_to_string(crd_dir.join(file)).unwrap();
        let expected = template(file, &crd);
        let path = chart_dir.join(file);
        if update {
            std::fs::write(&path, &expected).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == expected,
            "charts/vmcp-operator/templates/crds/{file} differs from config/crd/{file}: run \
             `VMCP_UPDATE_CHART_CRDS=1 cargo test -p vmcp-operator --test chart_crds`"
        );
    }
    assert_eq!(
        yaml_files(&chart_dir),
        files,
        "charts/vmcp-operator/templates/crds/ must hold exactly the CRDs of config/crd/"
    );
}

#[test]
fn template_gates_install_and_keep() {
    let t = template(
        "x.yaml",
        "apiVersion: v1\nkind: CustomResourceDefinition\nmetadata:\n  name: a.b\nspec:\n  group: b\n",
    );
    assert!(
        t.contains(
            "{{- if include \"vmcp-operator.renderCrd\" (list . \"a.b\") }}\napiVersion: v1\n"
        ),
        "{t}"
    );
    assert!(t.contains(
        "metadata:\n  name: a.b\n  {{- if .Values.crds.keep }}\n  annotations:\n    helm.sh/resource-policy: keep\n  {{- end }}\nspec:\n"
    ), "{t}");
    assert!(t.ends_with("  group: b\n{{- end }}\n"), "{t}");
}
