"""One file per method: a pure loss function plus the glue that builds its batches."""
