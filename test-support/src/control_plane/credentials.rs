//! The identities of a control plane: a service-account key pair, static tokens, and a
//! kubeconfig with one context per identity.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::Identity;
use super::processes::run;

/// Writes the service-account key pair and the static token file; returns the tokens.
pub(super) fn write_credentials(dir: &Path) -> Result<BTreeMap<&'static str, String>> {
    let key = dir.join("sa.key");
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048"))?;
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join("sa.pub")))?;
    let mut tokens = BTreeMap::new();
    let mut csv = String::new();
    for (uid, identity) in Identity::ALL.iter().enumerate() {
        let token = format!("{:032x}", rand::random::<u128>());
        csv += &format!(
            "{token},{},{uid},\"{}\"\n",
            identity.name(),
            identity.groups()
        );
        tokens.insert(identity.name(), token);
    }
    fs::write(dir.join("tokens.csv"), csv)?;
    Ok(tokens)
}

pub(super) fn kubeconfig_yaml(server: &str, tokens: &BTreeMap<&'static str, String>) -> String {
    let mut users = String::new();
    let mut contexts = String::new();
    for identity in Identity::ALL {
        let name = identity.name();
        users += &format!("- name: {name}\n  user:\n    token: {}\n", tokens[name]);
        contexts += &format!("- name: {name}\n  context:\n    cluster: local\n    user: {name}\n");
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n{users}contexts:\n{contexts}current-context: admin\n"
    )
}
