"""`fastuner prices update`: the Price List API's pages (realistic PriceList JSON strings) become a
price file in the user's folder; what fastuner sent is checked by the Stubber; a failure writes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from fastuner.plan.prices import parse_price_file
from fastuner.providers.base import ProviderError
from fastuner.providers.sagemaker.pricelist import parse_product, price_book, prices_dir, update_prices

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def product(region: str, usagetype: str, instance: str, usd: str, component: str, unit: str = "Hrs") -> str:
    """One entry as GetProducts returns it: a JSON string (shape as in the Price List API's answers)."""
    sku = "ZXCV" + str(abs(hash((region, usagetype))) % 10**8)
    return json.dumps({
        "product": {
            "productFamily": "ML Instance",
            "attributes": {
                "regionCode": region, "servicecode": "AmazonSageMaker", "usagetype": usagetype,
                "location": "US East (N. Virginia)", "locationType": "AWS Region", "instanceName": instance,
                "component": component, "computeType": "GPU", "vCpu": "8", "memory": "32 GiB", "gpu": "1",
                "operation": "RunInstance", "servicename": "Amazon SageMaker",
            },
            "sku": sku,
        },
        "serviceCode": "AmazonSageMaker",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {
            "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                "unit": unit, "endRange": "Inf", "beginRange": "0", "appliesTo": [],
                "description": f"${usd} per {unit} for {usagetype.split('-', 1)[1]} in US East (N. Virginia)",
                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7", "pricePerUnit": {"USD": usd}}},
            "sku": sku, "effectiveDate": "2026-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF", "termAttributes": {}}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z",
    })


def request(region: str, token: str | None = None) -> dict:
    params = {"ServiceCode": "AmazonSageMaker", "FormatVersion": "aws_v1", "MaxResults": 100,
              "Filters": [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]}
    return {**params, "NextToken": token} if token else params


@pytest.fixture
def client():
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(pricing) as stub:
        yield pricing, stub
        stub.assert_no_pending_responses()


def test_an_update_pages_to_the_end_and_keeps_training_and_hosting_prices(client, tmp_path) -> None:
    pricing, stub = client
    first = [product("us-east-1", "USE1-Train:ml.g5.2xlarge", "ml.g5.2xlarge", "1.5150000000", "Training"),
             product("us-east-1", "USE1-Notebk:ml.t3.medium", "ml.t3.medium", "0.0500000000", "Notebook"),
             product("us-east-1", "USE1-Host:ml.g5.xlarge", "ml.g5.xlarge", "1.4080000000", "Hosting")]
    second = [product("us-east-1", "USE1-Train:ml.p5.48xlarge", "ml.p5.48xlarge", "113.0700000000", "Training"),
              product("us-east-1", "USE1-Host:ml.g5.2xlarge", "ml.g5.2xlarge", "1.5150000000", "Hosting"),
              product("us-east-1", "USE1-Train:ml.g5.xlarge", "ml.g5.xlarge", "0.0000000000", "Training")]
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": first, "NextToken": "page-2"},
                      request("us-east-1"))
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": second}, request("us-east-1", "page-2"))

    done = update_prices(pricing, ["us-east-1"], tmp_path, NOW)

    assert [(u.region, u.training, u.hosting) for u in done] == [("us-east-1", 2, 2)]
    saved = parse_price_file(json.loads((tmp_path / "us-east-1.json").read_text()))
    assert dict(saved.training) == {"ml.g5.2xlarge": 1.515, "ml.p5.48xlarge": 113.07}  # a $0 row is no price
    assert dict(saved.hosting) == {"ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515}
    assert saved.as_of == NOW.date() and saved.source["fetched_at"] == NOW.isoformat()
    assert saved.source["service_code"] == "AmazonSageMaker"
    # the user's copy is newer than the shipped one, so it is what plans price with
    book = price_book({"FASTUNER_PRICES_DIR": str(tmp_path)})
    assert book.region("us-east-1").training == saved.training and book.region("eu-west-1") is not None


def test_a_failure_in_any_region_writes_nothing(client, tmp_path) -> None:
    pricing, stub = client
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [
        product("us-east-1", "USE1-Train:ml.g5.2xlarge", "ml.g5.2xlarge", "1.5150000000", "Training")]},
        request("us-east-1"))
    stub.add_client_error("get_products", "AccessDeniedException", "User is not authorized to perform: "
                          "pricing:GetProducts", 400, expected_params=request("eu-west-1"))
    with pytest.raises(ProviderError) as err:
        update_prices(pricing, ["us-east-1", "eu-west-1"], tmp_path, NOW)
    assert err.value.message == "access denied to the AWS Price List API"
    assert "pricing:GetProducts" in err.value.hint and "Nothing was written" in err.value.hint
    assert list(tmp_path.iterdir()) == []


def test_a_region_without_sagemaker_prices_is_refused(client, tmp_path) -> None:
    pricing, stub = client
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": []}, request("xx-nowhere-1"))
    with pytest.raises(ProviderError, match="no SageMaker instance prices for xx-nowhere-1"):
        update_prices(pricing, ["xx-nowhere-1"], tmp_path, NOW)
    assert not (tmp_path / "xx-nowhere-1.json").exists()


def test_offline_is_said_plainly(tmp_path) -> None:
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                           endpoint_url="http://127.0.0.1:9",
                           config=Config(retries={"max_attempts": 0}, connect_timeout=1))
    with pytest.raises(ProviderError, match="cannot reach the AWS Price List API"):
        update_prices(pricing, ["us-east-1"], tmp_path, NOW)
    assert list(tmp_path.iterdir()) == []


def test_products_that_are_not_instance_hours_are_left_out() -> None:
    assert parse_product(product("us-east-1", "USE1-Train:ml.g5.2xlarge", "ml.g5.2xlarge", "1.5", "Training")) == \
        ("training", "ml.g5.2xlarge", 1.5)
    assert parse_product(product("us-east-1", "USE1-Notebk:ml.g5.2xlarge", "ml.g5.2xlarge", "1.5", "Notebook")) is None
    assert parse_product(product("us-east-1", "USE1-Host:ml.g5.xlarge", "ml.g5.xlarge", "0.1", "Hosting",
                                 unit="GB-Mo")) is None


def test_the_prices_folder_is_the_users_cache_unless_set() -> None:
    assert str(prices_dir({"HOME": "/home/u"})) == "/home/u/.cache/fastuner/prices"
    assert str(prices_dir({"HOME": "/home/u", "XDG_CACHE_HOME": "/c"})) == "/c/fastuner/prices"
    assert str(prices_dir({"FASTUNER_PRICES_DIR": "/p", "HOME": "/home/u"})) == "/p"


def test_the_cli_says_offline_plainly_and_writes_nothing(tmp_path, capsys) -> None:
    from fastuner.cli.main import main

    env = {"HOME": str(tmp_path), "FASTUNER_PRICES_DIR": str(tmp_path / "prices"), "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_ENDPOINT_URL_PRICING": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    assert main(["prices", "update", "--region", "eu-west-1"], environ=env) == 1
    err = capsys.readouterr().err
    assert "cannot reach the AWS Price List API" in err and "Nothing was written" in err
    assert not (tmp_path / "prices").exists() or not list((tmp_path / "prices").iterdir())
    assert main(["prices", "update", "--region", "eu-west-1", "--json"], environ=env) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "error" and doc["format_version"] == 1 and doc["exit_code"] == 1
    assert "cannot reach the AWS Price List API" in doc["message"]


def test_a_sagemaker_plan_reads_the_users_prices_and_counts_the_work(tmp_path) -> None:
    """The SageMaker provider hands refresh the user's newer prices and each adapter's token count."""
    from moto import mock_aws

    from fastuner.config.loader import load_spec
    from fastuner.engine.refresh import refresh
    from fastuner.plan.prices import price_file, shipped_book
    from fastuner.providers.sagemaker import sagemaker_provider
    from fastuner.state.model import empty_state

    (tmp_path / "fastuner.yaml").write_text(
        "version: 1\nproject: p\nprovider: {sagemaker: {region: eu-west-1, role_arn: "
        "'arn:aws:iam::123456789012:role/r', bucket: cost-bucket}}\ndatasets:\n  d: {path: d.jsonl, task: text_generation}\n"
        "adapters:\n  a: {base_model: org/Model-7B, dataset: d}\n")
    (tmp_path / "d.jsonl").write_text(('{"input": "' + "w" * 396 + '", "target": "done"}\n') * 100)
    doc = price_file(shipped_book().region("eu-west-1"))
    (tmp_path / "prices").mkdir()
    (tmp_path / "prices" / "eu-west-1.json").write_text(json.dumps(
        {**doc, "as_of": "2099-01-01", "instances": {"ml.g5.2xlarge": {"training": 3.0, "hosting": 3.0}}}))
    env = {"HOME": str(tmp_path), "FASTUNER_PRICES_DIR": str(tmp_path / "prices"),
           "FASTUNER_CACHE_DIR": str(tmp_path / "cache"), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    spec = load_spec(tmp_path / "fastuner.yaml")
    with mock_aws():
        observed = refresh(spec, empty_state("p", "default"), sagemaker_provider(spec, "default", env))
    assert observed.prices.region("eu-west-1").training["ml.g5.2xlarge"] == 3.0
    assert observed.work == {"a": {"tokens": round(100 * 400 / 4 * 0.8), "counted": "chars"}}
    assert (tmp_path / "cache" / "tokens.json").exists()


def test_prices_show_says_where_each_regions_prices_come_from(tmp_path, capsys) -> None:
    from fastuner.cli.main import main
    from fastuner.plan.prices import price_file, shipped_book

    folder = tmp_path / "prices"
    folder.mkdir()
    doc = price_file(shipped_book().region("us-west-2"))
    (folder / "us-west-2.json").write_text(json.dumps({**doc, "as_of": "2026-11-30"}))
    env = {"HOME": str(tmp_path), "FASTUNER_PRICES_DIR": str(folder)}
    assert main(["prices", "show", "--json"], clock=lambda: NOW, environ=env) == 0
    regions = {r["region"]: r for r in json.loads(capsys.readouterr().out)["regions"]}
    assert regions["us-west-2"]["origin"] == str(folder / "us-west-2.json") and not regions["us-west-2"]["stale"]
    assert regions["eu-west-1"]["origin"] == "shipped" and regions["eu-west-1"]["stale"]
    assert main(["prices", "show", "--no-color"], clock=lambda: NOW, environ=env) == 0
    assert "us-west-2: as of 2026-11-30" in capsys.readouterr().out
