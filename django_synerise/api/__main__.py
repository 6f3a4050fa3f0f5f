"""Write the OpenAPI schema: ``python -m django_synerise.api [--file PATH] [--prefix P]``.

Needs ``DJANGO_SETTINGS_MODULE`` and drf-spectacular (the ``openapi`` extra).
"""

from __future__ import annotations

import argparse
import sys

import django


def main(argv: list[str] | None = None) -> int:
    """Generate the schema and write it as YAML (``.yaml``/``.yml``) or JSON; return 0."""
    parser = argparse.ArgumentParser(prog="python -m django_synerise.api")
    parser.add_argument("--file", default="-", help="output path ('-' = stdout)")
    parser.add_argument("--prefix", default="synerise/", help="mount point of the URLs")
    args = parser.parse_args(argv)

    django.setup()
    # After django.setup() (Django's app loading); drf-spectacular is the [openapi] extra.
    from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer

    from .schema import generate_schema

    schema = generate_schema(args.prefix)
    yaml = args.file.endswith((".yaml", ".yml")) or args.file == "-"
    renderer = OpenApiYamlRenderer() if yaml else OpenApiJsonRenderer()
    output = renderer.render(schema, renderer_context={})
    if args.file == "-":
        sys.stdout.write(output.decode("utf-8"))
    else:
        with open(args.file, "wb") as handle:
            handle.write(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
