"""images belong to a project (``features.images``): fingerprints and aliases unique per
project; existing images go to ``default``

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# SQLite's constraints made in 0001 have no name: this gives batch mode one to drop
NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _fingerprint_unique() -> str:
    """The name of 0001's unique constraint on images.fingerprint on this engine."""
    return ("images_fingerprint_key" if op.get_bind().dialect.name == "postgresql"
            else "uq_images_fingerprint")


def upgrade() -> None:
    with op.batch_alter_table("images", naming_convention=NAMES) as batch:
        batch.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
    op.execute("UPDATE images SET project_id = (SELECT id FROM projects"
               " WHERE name = 'default')")
    with op.batch_alter_table("images", naming_convention=NAMES) as batch:
        batch.alter_column("project_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_images_project_id", "projects", ["project_id"], ["id"])
        batch.drop_constraint(_fingerprint_unique(), type_="unique")
        batch.create_unique_constraint("uq_image_project_fingerprint",
                                       ["project_id", "fingerprint"])
    op.create_table(
        "image_aliases_new",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=127), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "name"))
    op.execute("INSERT INTO image_aliases_new (project_id, name, image_id)"
               " SELECT i.project_id, a.name, a.image_id FROM image_aliases a"
               " JOIN images i ON a.image_id = i.id")
    op.drop_table("image_aliases")
    op.rename_table("image_aliases_new", "image_aliases")


def downgrade() -> None:
    """Back to one namespace: only default's images and aliases stay."""
    op.execute("DELETE FROM image_aliases WHERE project_id <> (SELECT id FROM projects"
               " WHERE name = 'default')")
    op.create_table(
        "image_aliases_old",
        sa.Column("name", sa.String(length=127), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name"))
    op.execute("INSERT INTO image_aliases_old (name, image_id)"
               " SELECT name, image_id FROM image_aliases")
    op.drop_table("image_aliases")
    op.rename_table("image_aliases_old", "image_aliases")
    op.execute("DELETE FROM images WHERE project_id <> (SELECT id FROM projects"
               " WHERE name = 'default') AND id NOT IN (SELECT image_id FROM instances)")
    with op.batch_alter_table("images", naming_convention=NAMES) as batch:
        batch.drop_constraint("uq_image_project_fingerprint", type_="unique")
        batch.drop_constraint("fk_images_project_id", type_="foreignkey")
        batch.create_unique_constraint(_fingerprint_unique(), ["fingerprint"])
        batch.drop_column("project_id")
