"""Scrapes a Volley `/metrics` endpoint and parses it with the Prometheus client's own parser.

Usage: scrape_metrics.py URL

Prints one JSON object: per sample name, a list of {"labels": {...}, "value": v}; and per
family name its type. Fails when the text does not parse.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    samples: dict = {}
    types: dict = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(
                {"labels": dict(sample.labels), "value": sample.value}
            )
    print(json.dumps({"content_type": content_type, "types": types, "samples": samples}))


if __name__ == "__main__":
    main()
