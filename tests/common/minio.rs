//! MinIO from the tests' side: a fresh bucket, what it holds, and a Secret with its credentials.

use aws_sdk_s3::Client;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use s3flow::s3::{S3Settings, client};
use sha2::Digest;

/// A new bucket, reached with the default AWS chain (the environment's credentials).
pub struct Bucket {
    pub s3: Client,
    pub name: String,
    pub endpoint: String,
}

impl Bucket {
    pub async fn create(env: &super::TestEnv, prefix: &str) -> Self {
        let s3 = client(&S3Settings {
            endpoint: Some(env.s3_endpoint.clone()),
            force_path_style: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let name = super::unique(prefix);
        s3.create_bucket().bucket(&name).send().await.unwrap();
        Self {
            s3,
            name,
            endpoint: env.s3_endpoint.clone(),
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e:?}"));
    }

    /// The keys under `prefix` (one listing page: at most 1,000).
    pub async fn keys(&self, prefix: &str) -> std::collections::BTreeSet<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// The object at `key`, or S3's error.
    pub async fn try_get(&self, key: &str) -> Result<Vec<u8>, String> {
        let object = self
            .s3
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| format!("GET {key}: {e:?}"))?;
        Ok(object.body.collect().await.unwrap().to_vec())
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        self.try_get(key).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The lines of the shards of `kind` (`chunks`, `objects`) a many-object `manifest` names,
    /// in order.
    pub async fn manifest_lines(
        &self,
        manifest: &serde_json::Value,
        kind: &str,
    ) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        for shard in manifest["shards"][kind].as_array().unwrap() {
            let packed = self.get(shard.as_str().unwrap()).await;
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(&packed[..]),
                &mut text,
            )
            .unwrap();
            lines.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
        }
        lines
    }

    /// SHA-256 of the object at `key`, or `None` when there is no such object.
    pub async fn object_sha256(&self, key: &str) -> Option<String> {
        let bytes = self.try_get(key).await.ok()?;
        Some(hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// The bucket's incomplete multipart uploads.
    pub async fn open_uploads(&self) -> Vec<aws_sdk_s3::types::MultipartUpload> {
        let open = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.name)
            .send()
            .await
            .unwrap();
        open.uploads.unwrap_or_default()
    }

    /// Ids of the bucket's incomplete multipart uploads.
    pub async fn uploads(&self) -> Vec<String> {
        let open = self.open_uploads().await;
        open.iter()
            .filter_map(|u| u.upload_id().map(str::to_string))
            .collect()
    }

    pub async fn assert_no_uploads_left(&self) {
        let open = self.uploads().await;
        assert!(open.is_empty(), "incomplete uploads left: {open:?}");
    }
}

/// A Secret `name` in `namespace` holding the environment's MinIO credentials.
pub async fn credentials_secret(client: &kube::Client, namespace: &str, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"s3flow.io/secret-type": "credentials"}},
        "stringData": {
            "AWS_ACCESS_KEY_ID": std::env::var("AWS_ACCESS_KEY_ID").unwrap(),
            "AWS_SECRET_ACCESS_KEY": std::env::var("AWS_SECRET_ACCESS_KEY").unwrap(),
        },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}
