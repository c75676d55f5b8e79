//! The S3 client setup against real MinIO: bucket, multipart upload of parts of mixed sizes, ranged reads,
//! whole-object checksum, and no incomplete upload left behind (completed or aborted).

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Deterministic bytes that differ at every offset (so a misplaced range cannot match by accident).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 256) as u8).collect()
}

async fn body(output: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
#[ignore = "needs tests/cluster/up.sh"]
async fn multipart_upload_and_ranged_reads_against_minio() {
    let env = common::env().await;
    // Credentials from the default AWS chain (the environment), endpoint from the settings.
    let store = common::minio::Bucket::create(&env, "smoke").await;
    let (s3, bucket) = (&store.s3, store.name.as_str());

    // Mixed part sizes, as an upload of unknown length with growing parts produces.
    let parts = [5 * MIB, 6 * MIB + 3, MIB + 17];
    let data = pattern(parts.iter().sum());
    let key = "dir/object.bin";
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut completed = Vec::new();
    let mut offset = 0;
    for (i, len) in parts.iter().enumerate() {
        let number = i as i32 + 1;
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(data[offset..offset + len].to_vec()))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
        offset += len;
    }
    let listed = s3
        .list_parts()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.parts().len(), parts.len());
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();

    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(data.len() as i64));
    assert!(
        head.e_tag().unwrap().ends_with("-3\""),
        "multipart ETag: {:?}",
        head.e_tag()
    );

    // Ranges inside a part, across a part boundary, and the open-ended tail.
    for (start, end) in [
        (0, 99),
        (5 * MIB - 10, 5 * MIB + 9),
        (10 * MIB, data.len() - 1),
    ] {
        let got = body(
            s3.get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={start}-{end}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got, &data[start..=end], "range {start}-{end}");
    }
    let whole = body(
        s3.get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(Sha256::digest(&whole), Sha256::digest(&data));

    // An aborted upload leaves nothing either.
    let aborted = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key("aborted")
        .send()
        .await
        .unwrap();
    s3.upload_part()
        .bucket(bucket)
        .key("aborted")
        .upload_id(aborted.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from(pattern(MIB)))
        .send()
        .await
        .unwrap();
    s3.abort_multipart_upload()
        .bucket(bucket)
        .key("aborted")
        .upload_id(aborted.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    store.assert_no_uploads_left().await;
    let objects = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let keys: Vec<_> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [key]);
}
