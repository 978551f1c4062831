"""``manage.py generateschema``: the schema drf-spectacular serves at /api/schema/.

DRF's own ``generateschema`` drives DRF's generator, which cannot read drf-spectacular's
``AutoSchema`` (the project's schema class) and crashes. This command takes its name
(``agent_runtime`` precedes ``rest_framework`` in ``INSTALLED_APPS``, so Django finds it first)
and is ``manage.py spectacular``: the same schema, the same options (``--file``, ``--validate``,
``--format openapi-json``...).
"""

from __future__ import annotations

from drf_spectacular.management.commands import spectacular


class Command(spectacular.Command):
    help = "Write the API's OpenAPI 3 schema (what /api/schema/ serves), as `spectacular` does."
