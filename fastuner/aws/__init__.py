"""Everything fastuner says to AWS goes through here: one place that makes the boto3 session and
clients (`clients.py`), one mapper from AWS errors to what the user should do (`errors.py`), and the
checks of names and keys that botocore does not make (`names.py`).

Loaded only by the S3 state backend and the SageMaker provider: a local project never imports boto3.
"""
