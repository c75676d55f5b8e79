//! What a container reads from the API: environment variables (with `fieldRef`, `secretKeyRef`,
//! `configMapKeyRef`, `envFrom`) and volume contents (emptyDir, secret, configMap, projected with
//! service-account tokens and the downward API), materialized as local files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, Secret,
    ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

/// Reads Secrets and ConfigMaps of one pod's namespace, once each.
pub struct NamespaceObjects {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    config_map_cache: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl NamespaceObjects {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret_cache: BTreeMap::new(),
            config_map_cache: BTreeMap::new(),
        }
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.secret_cache.contains_key(name) {
            let data = self.secrets.get_opt(name).await?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .chain(
                        s.string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    )
                    .collect()
            });
            self.secret_cache.insert(name.to_string(), data);
        }
        Ok(self.secret_cache[name].as_ref())
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.config_map_cache.contains_key(name) {
            let data = self.config_maps.get_opt(name).await?.map(|c| {
                c.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .chain(
                        c.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    )
                    .collect()
            });
            self.config_map_cache.insert(name.to_string(), data);
        }
        Ok(self.config_map_cache[name].as_ref())
    }
}

/// One value of a Secret or ConfigMap; `Ok(None)` when it is missing and `optional` allows that.
async fn key_of(
    objects: &mut NamespaceObjects,
    secret: bool,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<Vec<u8>>> {
    let kind = if secret { "secret" } else { "configmap" };
    let data = if secret {
        objects.secret(name).await?
    } else {
        objects.config_map(name).await?
    };
    match data.and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(v.clone())),
        None if optional => Ok(None),
        None if data.is_none() => bail!("{kind} \"{name}\" not found"),
        None => bail!("couldn't find key {key} in {kind} \"{name}\""),
    }
}

/// The value a `fieldRef` selects, as the kubelet resolves it.
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector, host_ip: &str) -> Result<String> {
    let path = selector.field_path.as_str();
    let spec = pod.spec.as_ref();
    let lookup = |map: Option<&BTreeMap<String, String>>, prefix: &str| {
        let key = path
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .unwrap_or_default();
        map.and_then(|m| m.get(key).cloned()).unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => crate::pod::pod_ip(&pod.uid().unwrap_or_default()),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        p if p.starts_with("metadata.labels['") => {
            lookup(pod.metadata.labels.as_ref(), "metadata.labels['")
        }
        p if p.starts_with("metadata.annotations['") => {
            lookup(pod.metadata.annotations.as_ref(), "metadata.annotations['")
        }
        other => bail!("unsupported fieldRef {other}"),
    })
}

/// Expands `$(NAME)` references as the kubelet does; `$$(NAME)` escapes one.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = tail.strip_prefix("$(")
            && let Some(end) = body.find(')')
            && let Some(value) = vars.get(&body[..end])
        {
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The environment of one container, in the kubelet's order: service variables, `envFrom`, `env`.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    objects: &mut NamespaceObjects,
    base: &BTreeMap<String, String>,
    host_ip: &str,
) -> Result<BTreeMap<String, String>> {
    let mut vars = base.clone();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (secret, name, optional) = if let Some(s) = &source.secret_ref {
            (true, s.name.clone(), s.optional.unwrap_or(false))
        } else if let Some(c) = &source.config_map_ref {
            (false, c.name.clone(), c.optional.unwrap_or(false))
        } else {
            continue;
        };
        let data = if secret {
            objects.secret(&name).await?
        } else {
            objects.config_map(&name).await?
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    vars.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => bail!(
                "{} \"{name}\" not found",
                if secret { "secret" } else { "configmap" }
            ),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or_default(), &vars)),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    Some(field_value(pod, f, host_ip)?)
                } else if let Some(s) = &from.secret_key_ref {
                    key_of(objects, true, &s.name, &s.key, s.optional.unwrap_or(false))
                        .await?
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                } else if let Some(c) = &from.config_map_key_ref {
                    key_of(objects, false, &c.name, &c.key, c.optional.unwrap_or(false))
                        .await?
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                } else {
                    from.resource_field_ref
                        .as_ref()
                        .map(|r| resource_value(container, &r.resource))
                }
            }
        };
        if let Some(value) = value {
            vars.insert(var.name.clone(), value);
        }
    }
    Ok(vars)
}

/// A `resourceFieldRef`: the container's limit (or request), else the node's whole capacity.
fn resource_value(container: &Container, resource: &str) -> String {
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let resources = container.resources.as_ref();
    let set = match kind {
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => resources.and_then(|r| r.limits.as_ref()),
    };
    match set.and_then(|s| s.get(name)) {
        Some(q) => q.0.clone(),
        None if name == "cpu" => "1".into(),
        None => "0".into(),
    }
}

/// Writes every volume of the pod under `dir/<volume name>`; returns the directory of each.
pub async fn materialize_volumes(
    client: &Client,
    pod: &Pod,
    objects: &mut NamespaceObjects,
    dir: &Path,
    host_ip: &str,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut paths = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = dir.join(&volume.name);
        std::fs::create_dir_all(&path)?;
        write_volume(client, pod, volume, objects, &path, host_ip)
            .await
            .with_context(|| format!("volume {}", volume.name))?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn write_volume(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    objects: &mut NamespaceObjects,
    path: &Path,
    host_ip: &str,
) -> Result<()> {
    if volume.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        return write_keys(objects, true, &name, s.items.as_deref(), s.optional, path).await;
    }
    if let Some(c) = &volume.config_map {
        return write_keys(
            objects,
            false,
            &c.name,
            c.items.as_deref(),
            c.optional,
            path,
        )
        .await;
    }
    if let Some(d) = &volume.downward_api {
        return write_downward(pod, d.items.as_deref().unwrap_or_default(), path, host_ip);
    }
    if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                write_keys(objects, true, &s.name, s.items.as_deref(), s.optional, path).await?;
            }
            if let Some(c) = &source.config_map {
                write_keys(
                    objects,
                    false,
                    &c.name,
                    c.items.as_deref(),
                    c.optional,
                    path,
                )
                .await?;
            }
            if let Some(d) = &source.downward_api {
                write_downward(pod, d.items.as_deref().unwrap_or_default(), path, host_ip)?;
            }
            if let Some(t) = &source.service_account_token {
                let token =
                    service_account_token(client, pod, t.audience.clone(), t.expiration_seconds)
                        .await?;
                write_file(path, &t.path, token.as_bytes())?;
            }
        }
        return Ok(());
    }
    bail!(
        "unsupported volume type (the node agent runs emptyDir, secret, configMap, downwardAPI and projected)"
    )
}

async fn write_keys(
    objects: &mut NamespaceObjects,
    secret: bool,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    path: &Path,
) -> Result<()> {
    let optional = optional.unwrap_or(false);
    let data = if secret {
        objects.secret(name).await?.cloned()
    } else {
        objects.config_map(name).await?.cloned()
    };
    let Some(data) = data else {
        if optional {
            return Ok(());
        }
        bail!(
            "{} \"{name}\" not found",
            if secret { "secret" } else { "configmap" }
        );
    };
    match items {
        None => {
            for (k, v) in &data {
                write_file(path, k, v)?;
            }
        }
        Some(items) => {
            for item in items {
                let v = data
                    .get(&item.key)
                    .ok_or_else(|| anyhow!("couldn't find key {} in \"{name}\"", item.key))?;
                write_file(path, &item.path, v)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    path: &Path,
    host_ip: &str,
) -> Result<()> {
    for item in items {
        if let Some(f) = &item.field_ref {
            write_file(path, &item.path, field_value(pod, f, host_ip)?.as_bytes())?;
        }
    }
    Ok(())
}

fn write_file(dir: &Path, relative: &str, data: &[u8]) -> Result<()> {
    if relative.split('/').any(|p| p == "..") || relative.starts_with('/') {
        bail!("volume path {relative} escapes its volume");
    }
    let file = dir.join(relative);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&file, data).with_context(|| format!("writing {}", file.display()))
}

/// A token of the pod's ServiceAccount bound to the pod, by the TokenRequest API like the kubelet's.
async fn service_account_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let response = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("token for serviceaccount {namespace}/{account}"))?;
    response
        .status
        .map(|s| s.token)
        .ok_or_else(|| anyhow!("token request for {account} returned no token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_like_the_kubelet() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        for (input, want) in [
            ("$(A)", "1"),
            ("x-$(A)-y", "x-1-y"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$(A", "$(A"),
            ("cost $5", "cost $5"),
            ("", ""),
        ] {
            assert_eq!(expand(input, &vars), want, "input {input:?}");
        }
    }
}
