"""Customer tags: computed per one_id and kept in long form (one_id, tag_code, value)."""
