"""Secrets out of evidence and exports: by key at any depth, and by shape inside strings; the
identifiers responders need (AccessKey IDs, secret names, paging tokens) stay."""

from __future__ import annotations

import json

import pytest

from pipeline.core.redact import REDACTED, redact, redact_text

# A CreateLoginProfile / CreateAccessKey / AssumeRole shaped event (field names as ActionTrail and
# the RAM API spell them: notes/actiontrail.md, ram-api.md).
EVENT = {
    "eventName": "CreateLoginProfile",
    "userIdentity": {"type": "ram-user", "accessKeyId": "LTAI5tCiDeploy7Qx2mK", "userName": "ci-deploy"},
    "requestParameters": {
        "UserName": "bob", "Password": "Hunter2-top", "Passwd": "pw-two", "pwd": "pw-three",
        "LoginProfile": {"Password": "nested-pw", "PasswordResetRequired": True, "MFABindRequired": False},
        "Body": "UserName=bob&password=form-pw&Mode=x", "secretId": "prod/payments/db", "NextToken": "page-2",
    },
    "responseElements": {
        "AccessKey": {"AccessKeyId": "LTAI5tNewKey000000001", "AccessKeySecret": "new-ak-secret", "Status": "Active"},
        "Credentials": {"AccessKeyId": "STS.NUbn8Example", "AccessKeySecret": "sts-ak-secret",
                        "SecurityToken": "CAISsts-security-token", "Expiration": "2026-11-02T04:00:00Z"},
    },
    "additionalEventData": {"note": '{"AccessKeySecret":"json-in-a-string"}'},
}
PLANTED = ("Hunter2-top", "pw-two", "pw-three", "nested-pw", "form-pw", "new-ak-secret", "sts-ak-secret",
           "CAISsts-security-token", "json-in-a-string")


def test_every_secret_goes_at_any_depth_and_is_counted():
    clean, count = redact(EVENT)
    text = json.dumps(clean)
    assert [s for s in PLANTED if s in text] == []
    assert count == len(PLANTED)
    assert clean["requestParameters"]["LoginProfile"]["Password"] == REDACTED
    assert clean["requestParameters"]["Body"] == "UserName=bob&password=<redacted>&Mode=x"
    assert EVENT["requestParameters"]["Password"] == "Hunter2-top"  # the input is not changed


def test_what_responders_need_stays():
    clean, _ = redact(EVENT)
    assert clean["userIdentity"]["accessKeyId"] == "LTAI5tCiDeploy7Qx2mK"
    assert clean["responseElements"]["AccessKey"]["AccessKeyId"] == "LTAI5tNewKey000000001"
    assert clean["responseElements"]["Credentials"]["AccessKeyId"] == "STS.NUbn8Example"
    assert clean["responseElements"]["Credentials"]["Expiration"] == "2026-11-02T04:00:00Z"
    params = clean["requestParameters"]
    assert (params["UserName"], params["secretId"], params["NextToken"]) == ("bob", "prod/payments/db", "page-2")
    assert params["LoginProfile"]["PasswordResetRequired"] is True


@pytest.mark.parametrize(("text", "kept"), [
    ("Authorization: Bearer xoxb-1234-5678-abcdefgh", "Authorization: "),
    ("{'Authorization': 'ACS3-HMAC-SHA256 Credential=LTAI5t,Signature=abc', 'Host': 'x'}", "'Host': 'x'"),
    ("x-acs-security-token: CAISabcdef", "x-acs-security-token: "),
    ("posted with xoxb-1111-2222-abcdefgh today", "posted with "),
    ("app token xapp-1-A0123-4567-abcdef", "app token "),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nrest", "rest"),
    ("mysql://admin:pa55word@db.internal/app", "mysql://admin:"),
    ('{\\"ClientSecret\\":\\"cs-123\\"}', '{\\"ClientSecret\\":\\"'),
])
def test_secret_shapes_inside_strings_go(text, kept):
    clean, count = redact_text(text)
    assert count >= 1 and REDACTED in clean and kept in clean
    for gone in ("xoxb-1111", "xoxb-1234", "xapp-1", "CAISabcdef", "MIIEow", "pa55word", "cs-123", "Signature=abc"):
        assert gone not in clean


@pytest.mark.parametrize("text", [
    "acs:kms:cn-hangzhou:1384926508761234:secret/prod/payments/db-password-1",  # a resource, not a secret
    "GetPasswordData", "the token: expired", "NextToken=abc&ClientToken=u-1", "LTAI5tCiDeploy7Qx2mK",
])
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == (text, 0)


def test_counts_keyed_by_an_error_code_or_api_stay_numbers():
    """Evidence counts failures by error code and calls by API; a code that ends like a secret
    (``InvalidSecurityToken``) still counts."""
    evidence = {"error_codes": {"InvalidSecurityToken": 12, "IncompleteSignature": 3}, "apis": {"sts:GetToken": 4}}
    assert redact(evidence) == (evidence, 0)
