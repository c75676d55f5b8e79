"""The approach of the seed blog post, as the baseline peer: requests streams the URL in 100 MB
pieces, each uploaded in turn as one part of a boto3 multipart upload (no parallelism)."""
import sys

import boto3
import requests

CHUNK = 100 * 1024 * 1024


def main(url: str, bucket: str, key: str, endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    try:
        with requests.get(url, stream=True) as response:
            response.raise_for_status()
            for number, chunk in enumerate(response.iter_content(chunk_size=CHUNK), start=1):
                part = s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        raise


if __name__ == "__main__":
    main(*sys.argv[1:5])
