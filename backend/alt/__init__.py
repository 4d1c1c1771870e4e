"""Alt data (news, sentiment): storage and full-text search."""
