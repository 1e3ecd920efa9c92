"""Operations over the stages' tables, run on request: erasure and vacuum, audited exports, audience previews."""
