//! Multipart uploads: the one place s3flow creates, fills, completes and aborts them, for the
//! ingest engine (parts in parallel, resumable from status) and for chunk row output (parts one
//! after the other). An abort names one upload id and checks that it is gone.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::ServiceFailure;

/// How a new upload's object is to be stored.
#[derive(Clone, Debug, Default)]
pub struct NewObject {
    /// Content-Type of the object; `None` leaves S3's default.
    pub content_type: Option<String>,
    /// S3 storage class (`STANDARD_IA`, ...); `None` is the bucket's default.
    pub storage_class: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: Vec<(String, String)>,
}

/// A part S3 holds for an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPart {
    /// Part number, from 1.
    pub number: i32,
    /// Bytes S3 holds for the part.
    pub size: u64,
    /// The part's ETag as S3 lists it (a quoted MD5 unless the object is encrypted with KMS or
    /// SSE-C).
    pub etag: Option<String>,
}

impl HeldPart {
    /// The part as CompleteMultipartUpload names it.
    pub fn completed(&self) -> CompletedPart {
        CompletedPart::builder()
            .part_number(self.number)
            .set_e_tag(self.etag.clone())
            .build()
    }
}

/// One multipart upload of `bucket/key`, by its id.
#[derive(Clone, Debug)]
pub struct MultipartWriter {
    s3: Client,
    bucket: String,
    key: String,
    upload_id: String,
}

impl MultipartWriter {
    /// Starts a new upload.
    pub async fn create(
        s3: &Client,
        bucket: &str,
        key: &str,
        object: &NewObject,
    ) -> Result<MultipartWriter, ServiceFailure> {
        let mut create = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_content_type(object.content_type.clone())
            .set_storage_class(object.storage_class.as_deref().map(Into::into));
        for (name, value) in &object.metadata {
            create = create.metadata(name, value);
        }
        let upload_id = create
            .send()
            .await
            .map_err(|e| ServiceFailure::of("starting the multipart upload", e))?
            .upload_id
            .ok_or_else(|| ServiceFailure {
                code: "NoUploadId".into(),
                status: None,
                message: "CreateMultipartUpload returned no upload id".into(),
                forbidden: None,
            })?;
        Ok(MultipartWriter::of(s3, bucket, key, &upload_id))
    }

    /// The upload `upload_id` started earlier.
    pub fn of(s3: &Client, bucket: &str, key: &str, upload_id: &str) -> MultipartWriter {
        MultipartWriter {
            s3: s3.clone(),
            bucket: bucket.into(),
            key: key.into(),
            upload_id: upload_id.into(),
        }
    }

    /// The upload's id, as S3 gave it.
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// The client, bucket and key of the upload's object.
    pub fn object(&self) -> (&Client, &str, &str) {
        (&self.s3, &self.bucket, &self.key)
    }

    /// Sends part `number`; the SDK retries throttling, 5xx and dropped connections.
    pub async fn upload_part(
        &self,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, ServiceFailure> {
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| ServiceFailure::of(&format!("uploading part {number}"), e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag)
            .build())
    }

    /// Makes bytes `[start, end)` of the object `source_key` (same bucket; at version `etag`)
    /// part `number`, copied inside S3.
    pub async fn copy_part(
        &self,
        number: i32,
        source_key: &str,
        etag: Option<&str>,
        (start, end): (u64, u64),
    ) -> Result<CompletedPart, ServiceFailure> {
        let out = self
            .s3
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .copy_source(format!("{}/{}", self.bucket, urlencoded(source_key)))
            .copy_source_range(format!("bytes={start}-{}", end - 1))
            .set_copy_source_if_match(etag.map(String::from))
            .send()
            .await
            .map_err(|e| ServiceFailure::of(&format!("copying part {number}"), e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.copy_part_result.and_then(|r| r.e_tag))
            .build())
    }

    /// The parts S3 holds, or `None` when the upload is gone (completed or aborted).
    pub async fn held_parts(&self) -> Result<Option<Vec<HeldPart>>, ServiceFailure> {
        let mut held = Vec::new();
        let mut marker = None;
        loop {
            let page = match self
                .s3
                .list_parts()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if e.code() == Some("NoSuchUpload") => return Ok(None),
                Err(e) => return Err(ServiceFailure::of("listing the parts of the upload", e)),
            };
            held.extend(page.parts().iter().filter_map(|part| {
                Some(HeldPart {
                    number: part.part_number()?,
                    size: u64::try_from(part.size()?).ok()?,
                    etag: part.e_tag().map(String::from),
                })
            }));
            if !page.is_truncated().unwrap_or(false) {
                return Ok(Some(held));
            }
            marker = page.next_part_number_marker().map(String::from);
        }
    }

    /// Completes the upload from `parts` (sorted here); with `if_none_match` only when no object
    /// exists at the key yet (a failure with code `PreconditionFailed` otherwise). The object's
    /// ETag.
    pub async fn complete(
        &self,
        mut parts: Vec<CompletedPart>,
        if_none_match: bool,
    ) -> Result<Option<String>, ServiceFailure> {
        parts.sort_by_key(|p| p.part_number);
        let mut complete = self
            .s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if if_none_match {
            complete = complete.if_none_match("*");
        }
        let done = complete
            .send()
            .await
            .map_err(|e| ServiceFailure::of("completing the multipart upload", e))?;
        Ok(done.e_tag)
    }

    /// Aborts this upload (see [`abort_upload`]).
    pub async fn abort(&self) -> Result<(), ServiceFailure> {
        abort_upload(&self.s3, &self.bucket, &self.key, &self.upload_id).await
    }
}

/// Aborts the multipart upload `upload_id` of `bucket/key` (exactly that one: nothing is listed),
/// and checks that it is gone: S3 may keep a part whose upload was in flight during an abort, so
/// the abort is repeated while ListParts still finds the upload. One that is already gone is no
/// error. The one place s3flow aborts uploads.
pub async fn abort_upload(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), ServiceFailure> {
    for _ in 0..3 {
        match s3
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("NoSuchUpload") => return Ok(()),
            Err(e) => return Err(ServiceFailure::of("aborting the multipart upload", e)),
        }
        match s3
            .list_parts()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .max_parts(1)
            .send()
            .await
        {
            Err(e) if e.code() == Some("NoSuchUpload") => return Ok(()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Err(ServiceFailure {
        code: "UploadNotAborted".into(),
        status: None,
        message: format!(
            "upload {upload_id} of s3://{bucket}/{key} still exists after aborting it"
        ),
        forbidden: None,
    })
}

/// A key as the `x-amz-copy-source` header takes it: percent-encoded except for `/` and the
/// characters URLs leave as they are.
fn urlencoded(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `"<hex MD5>"`, the ETag S3 gives a part (or an object) without KMS or customer keys.
pub fn quoted_md5(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("\"{}\"", hex::encode(md5::Md5::digest(bytes)))
}

/// The ETag S3 gives a completed multipart upload: the MD5 of the parts' binary MD5s, dash, the
/// number of parts. `None` when a part's ETag is not an MD5 (SSE-KMS, SSE-C).
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::Digest;
    let mut digests = Vec::with_capacity(parts.len() * 16);
    for part in parts {
        let hex = part.e_tag()?.trim_matches('"');
        let digest = hex::decode(hex).ok().filter(|d| d.len() == 16)?;
        digests.extend_from_slice(&digest);
    }
    Some(format!(
        "\"{}-{}\"",
        hex::encode(md5::Md5::digest(&digests)),
        parts.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded_but_for_slashes() {
        assert_eq!(urlencoded("out/part-00001.csv"), "out/part-00001.csv");
        assert_eq!(urlencoded("a b/ä+?#%"), "a%20b/%C3%A4%2B%3F%23%25");
    }

    fn part(number: i32, etag: &str) -> CompletedPart {
        CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build()
    }

    #[test]
    fn etags_of_parts_and_of_the_whole() {
        assert_eq!(quoted_md5(b""), "\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(quoted_md5(b"hello"), "\"5d41402abc4b2a76b9719d911017c592\"");
        // The MD5 of the two binary MD5s, as S3 (and MinIO) compute it for two parts.
        let whole = multipart_etag(&[
            part(1, "\"5d41402abc4b2a76b9719d911017c592\""),
            part(2, "\"7d793037a0760186574b0282f2f435e7\""),
        ]);
        let mut both = hex::decode("5d41402abc4b2a76b9719d911017c592").unwrap();
        both.extend(hex::decode("7d793037a0760186574b0282f2f435e7").unwrap());
        use md5::Digest;
        let expected = format!("\"{}-2\"", hex::encode(md5::Md5::digest(&both)));
        assert_eq!(whole, Some(expected));
        // A KMS-encrypted part's ETag is not an MD5: no ETag can be foretold.
        assert_eq!(multipart_etag(&[part(1, "\"not-an-md5\"")]), None);
        assert_eq!(
            multipart_etag(&[CompletedPart::builder().part_number(1).build()]),
            None
        );
    }
}
