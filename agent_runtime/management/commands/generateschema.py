"""``manage.py generateschema``: the schema drf-spectacular serves at /api/schema/.

DRF's own ``generateschema`` drives DRF's generator, which cannot read drf-spectacular's
``AutoSchema`` (the project's schema class) and crashes. This command takes its name
(``agent_runtime`` precedes ``rest_framework`` in ``INSTALLED_APPS``, so Django finds it first)
and is ``manage.py spectacular``: the same schema, the same options (``--file``, ``--validate``,
``--format openapi-json``...).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.management.commands import spectacular


class Command(spectacular.Command):
    help = "Write the API's OpenAPI 3 schema (what /api/schema/ serves), as `spectacular` does."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)  # type: ignore[no-untyped-call]
        for action in parser._actions:
            if action.help is None and action.dest in OPTION_HELP:
                action.help = OPTION_HELP[action.dest]


OPTION_HELP = {
    "format": "openapi (YAML, the default) or openapi-json",
    "urlconf": "the URL configuration to read (default: the project's)",
    "generator_class": "a dotted path to another schema generator class",
    "file": "write to this file instead of standard output",
    "fail_on_warn": "exit non-zero when the generator warns",
    "validate": "validate the schema against the OpenAPI 3 specification",
    "api_version": "the version the schema states",
    "lang": "the language of the schema's texts",
    "color": "colour the warnings",
    "custom_settings": "a dotted path to a dict overriding SPECTACULAR_SETTINGS",
}
