"""Validates job items against the OpenAPI document's JobItem schema with jsonschema (from
PyPI, as any client's tooling would), for the test that keeps the document and the API agreeing.

stdin: {"document": <the OpenAPI document>, "items": [<item>, ...]}
stdout: [true | false, ...], one verdict per item.
"""
import json
import sys

from jsonschema import Draft202012Validator, FormatChecker

given = json.load(sys.stdin)
schema = given["document"]["components"]["schemas"]["JobItem"]
validator = Draft202012Validator(schema, format_checker=FormatChecker())
print(json.dumps([validator.is_valid(item) for item in given["items"]]))
