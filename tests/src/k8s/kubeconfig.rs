//! Certificates and kubeconfigs made with `openssl`: the client CA, the admin and per-user
//! client certificates, the service-account key pair, and the kubeconfig files that embed them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::{ApiServer, K8sError, io_err, sanitize, unique_serial, unique_suffix};

impl ApiServer {
    /// Writes a kubeconfig for `user` in `groups`, authenticated by a client certificate
    /// (`CN=<user>`, one `O=` per group) signed by the server's client CA, and returns its
    /// path. Without RBAC bindings such a user is forbidden everything. A service account's
    /// identity is `system:serviceaccount:<ns>:<name>` in groups `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>` (no token controller runs, so use this instead of tokens).
    pub fn write_user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, K8sError> {
        let pki = self.dir.path().join("pki");
        let users = self.dir.path().join("users");
        std::fs::create_dir_all(&users).map_err(io_err("create the users folder"))?;
        let file = sanitize(user, 60);
        let file = format!("{file}-{}", unique_suffix());
        let key = users.join(format!("{file}.key"));
        let crt = users.join(format!("{file}.crt"));
        let csr = users.join(format!("{file}.csr"));
        let escape = |s: &str| s.replace('\\', "\\\\").replace('/', "\\/");
        let mut subject = String::new();
        for g in groups {
            subject.push_str(&format!("/O={}", escape(g)));
        }
        subject.push_str(&format!("/CN={}", escape(user)));
        let step = format!("client certificate for {user}");
        let vars = [("key", path(&key)), ("csr", path(&csr)), ("subject", subject)];
        openssl(&step, "req -new -nodes {EC} -keyout {key} -out {csr} -subj {subject}", &vars)?;
        sign_client_cert(&pki, &csr, &crt, &step)?;
        let _ = std::fs::remove_file(&csr);
        let out = users.join(format!("{file}.kubeconfig"));
        write_kubeconfig(&out, &self.url, &serving_ca_pem(self.dir.path())?, &crt, &key, user)?;
        Ok(out)
    }
}

/// The last PEM certificate in `pem` (kube-apiserver writes "leaf + CA" into apiserver.crt).
pub(super) fn last_certificate(pem: &str) -> String {
    match pem.rfind("-----BEGIN CERTIFICATE-----") {
        Some(i) => pem[i..].trim_end().to_owned() + "\n",
        None => pem.to_owned(),
    }
}

fn serving_ca_pem(dir: &Path) -> Result<String, K8sError> {
    // The newest serving-<attempt> folder is the running server's.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(format!("read {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("serving-")))
        .collect();
    dirs.sort();
    let file = dirs.last().map(|d| d.join("apiserver.crt")).unwrap_or_default();
    let pem = std::fs::read_to_string(&file).map_err(io_err(format!("read {}", file.display())))?;
    Ok(last_certificate(&pem))
}

pub(super) fn write_kubeconfig(
    out: &Path,
    server: &str,
    ca_pem: &str,
    crt: &Path,
    key: &Path,
    user: &str,
) -> Result<(), K8sError> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let read = |p: &Path| std::fs::read(p).map_err(io_err(format!("read {}", p.display())));
    let user = user.replace('"', "");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: vmcp-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: \"{user}\"
  user:
    client-certificate-data: {crt}
    client-key-data: {key}
contexts:
- name: vmcp-test
  context:
    cluster: vmcp-test
    user: \"{user}\"
    namespace: default
current-context: vmcp-test
preferences: {{}}
",
        ca = b64(ca_pem.as_bytes()),
        crt = b64(&read(crt)?),
        key = b64(&read(key)?),
    );
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io_err(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, out).map_err(io_err(format!("write {}", out.display())))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// An ECDSA P-256 key, as `openssl req` arguments.
const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";

/// Runs `openssl <template>`: the template is split on spaces, `{EC}` expands to [`EC`] and a
/// `{name}` word is replaced by the value of `name` in `vars` (one argument, spaces and all).
fn openssl(step: &str, template: &str, vars: &[(&str, String)]) -> Result<(), K8sError> {
    let template = template.replace("{EC}", EC);
    let args: Vec<&str> = template
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| match w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) => vars.iter().find(|(n, _)| *n == name).map_or(w, |(_, v)| v.as_str()),
            None => w,
        })
        .collect();
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run openssl for {step} (is openssl installed?)")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(K8sError::Openssl {
        step: step.to_owned(),
        output: format!(
            "openssl {} -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn sign_client_cert(pki: &Path, csr: &Path, crt: &Path, step: &str) -> Result<(), K8sError> {
    let ext = csr.with_extension("ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .map_err(io_err(format!("write {}", ext.display())))?;
    let vars = [
        ("csr", path(csr)),
        ("ca", path(&pki.join("ca.crt"))),
        ("cakey", path(&pki.join("ca.key"))),
        ("serial", unique_serial()),
        ("crt", path(crt)),
        ("ext", path(&ext)),
    ];
    let result = openssl(
        step,
        "x509 -req -in {csr} -CA {ca} -CAkey {cakey} -set_serial {serial} -out {crt} -days 365 \
         -extfile {ext}",
        &vars,
    );
    let _ = std::fs::remove_file(&ext);
    result
}

/// Client CA, admin client certificate and service-account key pair (as
/// `kte_gen_pki` in `scripts/lib/k8s-test-env.sh`).
pub(super) fn gen_pki(d: &Path) -> Result<(), K8sError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", d.display())))?;
    let vars: Vec<(&str, String)> =
        ["ca.key", "ca.crt", "admin.key", "admin.csr", "sa.key", "sa.pub"]
            .into_iter()
            .map(|name| (name, path(&d.join(name))))
            .collect();
    openssl(
        "client CA",
        "req -x509 -new -nodes {EC} -keyout {ca.key} -out {ca.crt} -days 3650 \
         -subj /CN=vmcp-test-client-ca -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign",
        &vars,
    )?;
    openssl(
        "admin key",
        "req -new -nodes {EC} -keyout {admin.key} -out {admin.csr} -subj /O=system:masters/CN=admin",
        &vars,
    )?;
    sign_client_cert(d, &d.join("admin.csr"), &d.join("admin.crt"), "admin certificate")?;
    let _ = std::fs::remove_file(d.join("admin.csr"));
    openssl(
        "service-account key",
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {sa.key}",
        &vars,
    )?;
    openssl("service-account public key", "pkey -in {sa.key} -pubout -out {sa.pub}", &vars)
}
