"""Migration operations of django-synerise's own migrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import NotSupportedError, migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState


class AddIndexConcurrently(migrations.AddIndex):
    """``AddIndex`` that builds the index without blocking writes on PostgreSQL.

    On PostgreSQL the index is built with ``CREATE INDEX CONCURRENTLY`` (removed with ``DROP
    INDEX CONCURRENTLY``), so sign-ins keep writing to the table while a large one is
    indexed; other databases build it as ``AddIndex`` does. The migration using it must set
    ``atomic = False`` (PostgreSQL refuses a concurrent build inside a transaction). Unlike
    ``django.contrib.postgres.operations.AddIndexConcurrently`` it imports nothing of
    PostgreSQL's, so a site on another database can run it.
    """

    def describe(self) -> str:
        """What ``migrate --plan`` prints."""
        return f"{super().describe()} (concurrently on PostgreSQL)"

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        """Create the index (concurrently on PostgreSQL)."""
        self._apply(schema_editor.add_index, app_label, schema_editor, to_state)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        """Drop the index (concurrently on PostgreSQL)."""
        self._apply(schema_editor.remove_index, app_label, schema_editor, from_state)

    def _apply(
        self,
        change: Callable[..., None],
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        state: ProjectState,
    ) -> None:
        """``change(model, index)`` (add or remove), where this database migrates the model."""
        model = state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            change(model, self.index, **_concurrently(schema_editor))


def _concurrently(schema_editor: BaseDatabaseSchemaEditor) -> dict[str, Any]:
    if schema_editor.connection.vendor != "postgresql":
        return {}
    if schema_editor.connection.in_atomic_block and not schema_editor.collect_sql:
        raise NotSupportedError(
            "AddIndexConcurrently cannot run inside a transaction: set atomic = False on the "
            "migration."
        )
    return {"concurrently": True}


__all__ = ["AddIndexConcurrently"]
