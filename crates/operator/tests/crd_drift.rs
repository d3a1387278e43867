//! The committed `config/crd/` must equal what `vmcp-operator crds` generates.
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn committed_crds_match_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crd");
    let generated = vmcp_operator::crdgen::render_all().unwrap();
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    committed.sort();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(committed, names, "config/crd/ has other files than the CRDs: run `make crds`");
    for (name, yaml) in generated {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            on_disk == yaml,
            "config/crd/{name} differs from the generated CRD: run `make crds` and commit"
        );
    }
}
